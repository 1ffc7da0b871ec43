//! `photoseg train`: GRSer's objective (see [`loss`]) with AdamW over groups of photos, positives and
//! negatives 1:1, on CPU or CUDA, with checkpoints that resume exactly.
//!
//! Exact resume: the photos of step t are drawn from an RNG seeded with (seed, t) alone (`batch.rs`), and
//! a checkpoint holds the weights, the optimizer's moments and t (`checkpoint.rs`); so a run stopped
//! after a checkpoint and resumed takes the same steps as one never stopped.
//!
//! Streamed data: the set ([`data::TrainSet`]) holds paths and undecoded masks; a step decodes the photos
//! it draws. Only the head stage keeps anything per photo (Swin's outputs, within [`CACHE_BYTES`]).
pub mod allocator;
pub mod attributes;
pub mod augment;
mod batch;
mod checkpoint;
mod config;
pub mod data;
pub mod init;
pub mod loss;
pub mod optim;
pub mod pretrained;
pub mod recipe;
pub mod vocab;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::dense::DenseTrunk;
use crate::model::grser::{Config as ModelConfig, Grser, Pairs};
use crate::model::neck::VisualFeatures;
use batch::draw_step;
pub use checkpoint::latest_checkpoint;
pub use config::{Stage, TrainConfig};
pub use data::{TrainGroup, TrainSet};
use optim::AdamW;

/// What one step did (for the progress bar and the log).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub step: usize,
    pub loss: f32,
    pub ce: f32,
    /// Cross entropy on negatives (all background).
    #[serde(default)]
    pub neg_ce: f32,
    pub mirror: f32,
    pub triplet: f32,
    /// Language-map supervision ([`loss::language_map`]).
    #[serde(default)]
    pub language: f32,
    /// Dense attribute loss ([`attributes`]).
    #[serde(default)]
    pub attributes: f32,
    /// The referent head's Dice and decision terms ([`loss::referent`]; its per-cell term is `ce`).
    #[serde(default)]
    pub dice: f32,
    #[serde(default)]
    pub decision: f32,
    pub images: usize,
    pub seconds: f64,
}

/// A training run: the model's variables, the optimizer and the data.
pub struct Trainer {
    pub model: Grser,
    pub varmap: VarMap,
    pub opt: AdamW,
    pub cfg: TrainConfig,
    pub model_cfg: ModelConfig,
    tokenizer: tokenizers::Tokenizer,
    /// Training-only heads of the attribute loss (when its weight is not 0).
    attribute_heads: Option<attributes::AttributeHeads>,
    /// The features stage's training-only decoder.
    dense: Option<attributes::DenseDecoder>,
    /// The head stage's Swin outputs: kept for every photo of the pool when they fit
    /// [`Trainer::cache_bytes`], else computed each step.
    stage_cache: StageCache,
    /// The dense trunk's map of every photo of the pool (`[P, C, h4, w4]`), computed once when a
    /// referent model's head stage first needs it.
    dense_cache: Option<Tensor>,
    /// Next step to run (0-based).
    pub step: usize,
    /// The most bytes the head stage keeps Swin's outputs of the pool in ([`CACHE_BYTES`] unless a
    /// test sets it). A pool that needs more runs the frozen Swin on each step's photos instead.
    pub cache_bytes: usize,
}

/// Photos per Swin pass when the head stage fills its cache.
const CACHE_CHUNK: usize = 32;

/// What the head stage may keep of Swin's outputs by default: 8 GiB, the built-in recipe's 13,000
/// photos at 128 px (3.2 GB) with room to spare, and about 800 photos of the paper's shape (10 MB a
/// photo at 416 px). A RefCOCO-sized pool (20,000 photos) streams.
pub const CACHE_BYTES: usize = 8 << 30;

/// The head stage's Swin outputs ([`Trainer::features`]).
enum StageCache {
    /// Not decided yet: the head stage has not run a step.
    Undecided,
    /// Swin's four stage outputs of every photo of the pool (`[P, C, h, w]` each).
    Kept(Vec<Tensor>),
    /// The pool does not fit the budget: each step runs the frozen Swin on its own photos.
    Streamed,
}

impl Trainer {
    /// A fresh run. `init`: optional model directory or tensors to start from (e.g. public Swin and BERT
    /// weights renamed to `swin.` / `text.`); what it lacks is initialised at random.
    pub fn new(
        model_cfg: &ModelConfig,
        tokenizer: tokenizers::Tokenizer,
        cfg: &TrainConfig,
        init: Option<&std::collections::HashMap<String, Tensor>>,
        device: &Device,
    ) -> Result<Self> {
        cfg.check(model_cfg)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = Grser::new(model_cfg, tokenizer.clone(), vb.clone())?;
        let attribute_heads = if cfg.attributes > 0.0 {
            let h = &model_cfg.head;
            Some(attributes::AttributeHeads::new(h.c_v, h.lateral, vb.pp("aux").pp("attributes"))?)
        } else {
            None
        };
        let dense = if cfg.stage == Stage::Features {
            let e = model_cfg.swin.embed_dim;
            let own = model.dense.is_none();
            Some(attributes::DenseDecoder::new([e, 2 * e, 4 * e], own, vb.pp("aux").pp("dense"))?)
        } else {
            None
        };
        init::pytorch_default(&varmap, cfg.seed, device)?;
        if let Some(init) = init {
            let mut data = varmap.data().lock().expect("varmap lock");
            for (name, var) in data.iter_mut() {
                if let Some(t) = init.get(name).or_else(|| trunk_from_features_decoder(init, name)) {
                    if t.dims() != var.dims() {
                        bail!("initial weight {name} has shape {:?}, the model needs {:?}", t.dims(), var.dims());
                    }
                    var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
                }
            }
        }
        // Batch statistics in the stem while the backbone trains; running ones when it is frozen.
        model.swin.set_training(cfg.stage != Stage::Head);
        // Running statistics are not trained by gradient (Self::update_running_stats folds them in).
        let vars: Vec<(String, candle_core::Var)> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .filter(|(k, _)| !k.ends_with(".running_mean") && !k.ends_with(".running_var"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let opt = AdamW::new(vars, cfg.optim)?;
        Ok(Self {
            model,
            varmap,
            opt,
            cfg: cfg.clone(),
            model_cfg: model_cfg.clone(),
            tokenizer,
            attribute_heads,
            dense,
            stage_cache: StageCache::Undecided,
            dense_cache: None,
            step: 0,
            cache_bytes: CACHE_BYTES,
        })
    }

    /// The features of the pool's photos `ids`: a Swin pass on the decoded photos, or in the head stage
    /// the frozen Swin's outputs (kept, or computed each step without gradients) through the trained neck.
    fn features(&mut self, set: &TrainSet, ids: &[usize]) -> Result<VisualFeatures> {
        let dev = self.model.device.clone();
        if self.cfg.stage != Stage::Head {
            return Ok(self.model.featurize(&set.images(ids)?.to_device(&dev)?)?);
        }
        if matches!(self.stage_cache, StageCache::Undecided) {
            let need = self.stage_bytes(set, 4)?;
            self.stage_cache = if need <= self.cache_bytes {
                StageCache::Kept(self.swin_stages(set)?)
            } else {
                tracing::info!(
                    "the head stage runs the frozen Swin every step: keeping {} photos' outputs needs {:.1} GB, \
                     more than {:.1} GB",
                    set.len(),
                    need as f64 / 1e9,
                    self.cache_bytes as f64 / 1e9
                );
                StageCache::Streamed
            };
        }
        let stages = match &self.stage_cache {
            StageCache::Kept(cache) => {
                let idx: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
                let idx = Tensor::new(idx.as_slice(), &self.model.device)?;
                cache.iter().map(|s| s.index_select(&idx, 0)).collect::<candle_core::Result<Vec<_>>>()?
            }
            _ => {
                let images = set.images(ids)?.to_device(&dev)?;
                self.model.swin.forward_stages(&images)?.into_iter().map(|t| t.detach()).collect()
            }
        };
        Ok(self.model.neck.forward(&stages)?)
    }

    /// Bytes that Swin's first `stages` stage outputs of every photo of `set` take (measured on one photo).
    fn stage_bytes(&self, set: &TrainSet, stages: usize) -> Result<usize> {
        let one = set.images(&[0])?.to_device(&self.model.device)?;
        let outs = self.model.swin.forward_stages(&one)?;
        let per_photo: usize = outs.iter().take(stages).map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum();
        Ok(per_photo * set.len())
    }

    /// Swin's stage outputs for every photo of `set`, without gradients.
    fn swin_stages(&self, set: &TrainSet) -> Result<Vec<Tensor>> {
        let chunks = self.stage_chunks(set, 4)?;
        Ok((0..4)
            .map(|s| Tensor::cat(&chunks.iter().map(|c| &c[s]).collect::<Vec<_>>(), 0))
            .collect::<candle_core::Result<Vec<_>>>()?)
    }

    /// Swin's first `stages` stage outputs for `set`'s photos, [`CACHE_CHUNK`] photos a part (each part
    /// decoded as it comes), without gradients: no copy of the whole pool's outputs is made (at 13,000
    /// photos each copy is 3 GB).
    fn stage_chunks(&self, set: &TrainSet, stages: usize) -> Result<Vec<Vec<Tensor>>> {
        let started = Instant::now();
        let mut parts = Vec::new();
        let ids: Vec<usize> = (0..set.len()).collect();
        for chunk in ids.chunks(CACHE_CHUNK) {
            let images = set.images(chunk)?.to_device(&self.model.device)?;
            let outs = self.model.swin.forward_stages(&images)?;
            parts.push(outs.into_iter().take(stages).map(|t| t.detach()).collect());
        }
        tracing::info!("Swin stages of {} photos in {:.0} s", set.len(), started.elapsed().as_secs_f64());
        Ok(parts)
    }

    /// One step of the features stage: photos drawn at random from the pool, each turned by a random
    /// symmetry of the square, and the dense attribute loss (plus the per-cell heads' when
    /// `attributes` > 0).
    fn features_step(&mut self, set: &TrainSet) -> Result<StepStats> {
        let start = Instant::now();
        let t = self.step;
        let n = self.cfg.groups_per_step * self.cfg.group_size;
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let dev = self.model.device.clone();
        let (mut images, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let i = rng.random_range(0..set.len());
            let Some(l) = set.attributes[i].as_ref() else {
                bail!(
                    "the features stage needs attribute labels for every training photo (the synthetic world has them)"
                )
            };
            let code: u8 = rng.random_range(0..8);
            images.push(augment::dihedral(&set.image(i)?, code)?);
            labels.push(attributes::AttributeLabels {
                color: augment::dihedral(&l.color, code)?,
                shape: augment::dihedral(&l.shape, code)?,
                size: augment::dihedral(&l.size, code)?,
            });
        }
        let stages = self.model.swin.forward_stages(&Tensor::stack(&images, 0)?.to_device(&dev)?)?;
        let stack = |f: fn(&attributes::AttributeLabels) -> &Tensor| -> Result<Tensor> {
            Ok(Tensor::stack(&labels.iter().map(f).collect::<Vec<_>>(), 0)?.to_device(&dev)?)
        };
        let (color, shape, size) = (stack(|l| &l.color)?, stack(|l| &l.shape)?, stack(|l| &l.size)?);
        let dense = self.dense.as_ref().expect("the features stage has its decoder");
        let mut loss = dense.loss(self.model.dense.as_ref(), &stages, &color, &shape, &size)?;
        let mut attr_value = 0f32;
        if let Some(heads) = &self.attribute_heads {
            // The neck runs only for its heads: the dense decoder reads the stage outputs.
            let feats = self.model.neck.forward(&stages)?;
            let a = heads.loss(&feats, &labels.iter().collect::<Vec<_>>())?;
            attr_value = a.to_scalar::<f32>()?;
            loss = (loss + (a * self.cfg.attributes)?)?;
        }
        let grads = loss.backward()?;
        self.opt.step(&grads, self.cfg.lr_at(t))?;
        self.update_running_stats()?;
        self.step += 1;
        Ok(StepStats {
            step: t,
            loss: loss.to_scalar::<f32>()?,
            attributes: attr_value,
            images: n,
            seconds: start.elapsed().as_secs_f64(),
            ..StepStats::default()
        })
    }

    /// The dense trunk's map of every photo of `set`, on fixed BatchNorm statistics: those of the pool
    /// itself, measured here layer by layer (the trunk is frozen from now on, so they stay exact).
    fn dense_maps(&self, set: &TrainSet) -> Result<Tensor> {
        let trunk = self.model.dense.as_ref().context("the model has no dense trunk")?;
        let need = self.stage_bytes(set, 3)?;
        if need > self.cache_bytes {
            bail!(
                "the referent head stage keeps Swin's outputs of every photo of the pool: {} photos need {:.1} GB, \
                 more than the {:.1} GB it may use; train it on fewer photos",
                set.len(),
                need as f64 / 1e9,
                self.cache_bytes as f64 / 1e9
            );
        }
        // Swin's stages 1-3, the trunk's inputs, kept in parts.
        let mut stages = self.stage_chunks(set, 3)?;
        for layer in 0..2 {
            // Per channel: sum and sum of squares over photos and cells (f64, added chunk by chunk).
            let (mut sum, mut sq, mut count) = (None::<Tensor>, None::<Tensor>, 0usize);
            for part in &stages {
                // Detached: the sums below would otherwise hold every chunk's graph (the trunk's
                // weights are variables) until the last one, several GB on a large pool.
                let y = trunk.pre_norm(part, layer)?.detach();
                let (n, _, h, w) = y.dims4()?;
                count += n * h * w;
                let s = y.sum((0, 2, 3))?.to_dtype(DType::F64)?;
                let q = y.sqr()?.sum((0, 2, 3))?.to_dtype(DType::F64)?;
                sum = Some(match sum {
                    Some(a) => (a + s)?,
                    None => s,
                });
                sq = Some(match sq {
                    Some(a) => (a + q)?,
                    None => q,
                });
            }
            let c = count as f64;
            let mean = (sum.context("an empty pool")? / c)?;
            let var = ((sq.context("an empty pool")? / c)? - mean.sqr()?)?;
            let unbiased = (var * (c / (c - 1.0).max(1.0)))?;
            let data = self.varmap.data().lock().expect("varmap lock");
            for (name, value) in DenseTrunk::stat_names(layer).iter().zip([&mean, &unbiased]) {
                let key = format!("dense.{name}");
                data.get(&key).with_context(|| format!("no variable {key}"))?.set(&value.to_dtype(DType::F32)?)?;
            }
        }
        let mut maps = Vec::with_capacity(stages.len());
        for part in std::mem::take(&mut stages) {
            maps.push(trunk.forward(&part, false)?.detach());
        }
        Ok(Tensor::cat(&maps, 0)?)
    }

    /// One step of a referent model's head stage: the step's groups as for the TQM head, every photo's
    /// map from its kept dense map, and [`loss::referent`].
    fn referent_step(&mut self, set: &TrainSet) -> Result<StepStats> {
        let start = Instant::now();
        let t = self.step;
        if self.dense_cache.is_none() {
            self.dense_cache = Some(self.dense_maps(set)?);
        }
        let cache = self.dense_cache.as_ref().expect("filled above");
        let dev = self.model.device.clone();
        let draws = draw_step(set, &self.cfg, t);
        let r = self.model.referent.as_ref().expect("a referent model");
        let (mut ids, mut group_of, mut targets, mut positive) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let grid = cache.dim(2)?;
        let background = Tensor::zeros((grid, grid), DType::U32, &dev)?;
        for (gi, d) in draws.iter().enumerate() {
            for &(i, slot) in &d.photos {
                ids.push(i as u32);
                group_of.push(gi as u32);
                match slot {
                    Some(s) => {
                        targets.push(set.mask(d.group, s, &dev)?);
                        positive.push(1f32);
                    }
                    None => {
                        targets.push(background.clone());
                        positive.push(0f32);
                    }
                }
            }
        }
        let e = r.embed(&cache.index_select(&Tensor::new(ids.as_slice(), &dev)?, 0)?)?;
        let exprs: Vec<&str> = draws.iter().map(|d| set.groups[d.group].expression.as_str()).collect();
        let batch = self.model.text.tokenize(&exprs)?;
        let hidden = self.model.text.bert.forward(&batch.ids, &batch.types, &batch.mask)?;
        let q = r.query(&hidden, &batch.mask)?.index_select(&Tensor::new(group_of.as_slice(), &dev)?, 0)?;
        let logits = r.logits(&e, &q)?;
        let score = r.peaks(&crate::model::referent::pool(&e)?, &q)?;
        let parts =
            loss::referent(&logits, &score, &Tensor::stack(&targets, 0)?, &Tensor::new(positive.as_slice(), &dev)?)?;
        let grads = parts.total.backward()?;
        self.opt.step(&grads, self.cfg.lr_at(t))?;
        self.step += 1;
        Ok(StepStats {
            step: t,
            loss: parts.total.to_scalar::<f32>()?,
            ce: parts.cells,
            dice: parts.dice,
            decision: parts.decision,
            images: ids.len(),
            seconds: start.elapsed().as_secs_f64(),
            ..StepStats::default()
        })
    }

    /// Folds the last forward's batch statistics of the stem's BatchNorm into its running statistics
    /// (momentum 0.1, as PyTorch); nothing without one.
    fn update_running_stats(&self) -> Result<()> {
        let stats = self.model.swin.take_batch_stats();
        let data = self.varmap.data().lock().expect("varmap lock");
        for (i, (mean, var)) in stats.iter().enumerate() {
            for (name, batch) in [("running_mean", mean), ("running_var", var)] {
                let key = format!("swin.patch_embed.stem_bn.{i}.{name}");
                let v = data.get(&key).with_context(|| format!("no variable {key}"))?;
                v.set(&((v.as_tensor() * 0.9)? + (batch.to_dtype(v.dtype())? * 0.1)?)?)?;
            }
        }
        Ok(())
    }

    /// One optimizer step on `set`; returns its statistics.
    pub fn train_step(&mut self, set: &TrainSet) -> Result<StepStats> {
        if self.cfg.stage == Stage::Features {
            return self.features_step(set);
        }
        if self.model.referent.is_some() {
            return self.referent_step(set);
        }
        let start = Instant::now();
        let t = self.step;
        let draws = draw_step(set, &self.cfg, t);
        let dev = self.model.device.clone();
        // One Swin pass for every photo of the step (none in the head stage while its stage outputs are kept).
        let ids: Vec<usize> = draws.iter().flat_map(|d| d.photos.iter().map(|&(i, _)| i)).collect();
        let feats = self.features(set, &ids)?;
        let attribute_loss = match &self.attribute_heads {
            Some(heads) => {
                let labels: Option<Vec<_>> = ids.iter().map(|&i| set.attributes[i].as_ref()).collect();
                let Some(labels) = labels else {
                    bail!("`attributes` needs attribute labels for every training photo (the synthetic world has them)")
                };
                Some(heads.loss(&feats, &labels)?)
            }
            None => None,
        };
        let exprs: Vec<&str> = draws.iter().map(|d| set.groups[d.group].expression.as_str()).collect();
        let (l, l_anti) = self.model.text.encode_with_anti(&exprs)?;
        let progress = t as f64 / self.cfg.steps.max(1) as f64;
        let margin = self.model_cfg.head.margin;
        let mut total: Option<Tensor> = None;
        let (mut ce_sum, mut neg_sum, mut mirror_sum, mut triplet_sum, mut lang_sum) = (0f32, 0f32, 0f32, 0f32, 0f32);
        let mut offset = 0;
        for (gi, d) in draws.iter().enumerate() {
            let n = d.photos.len();
            let idx: Vec<usize> = (offset..offset + n).collect();
            offset += n;
            let gf = feats.select(&idx)?;
            let (lg, ag) = (l.get(gi)?, l_anti.get(gi)?);
            let pos: Vec<usize> = (0..n).filter(|&j| d.photos[j].1.is_some()).collect();
            let masks: Vec<Tensor> = pos
                .iter()
                .map(|&j| set.mask(d.group, d.photos[j].1.expect("positive"), &Device::Cpu))
                .collect::<Result<_>>()?;
            let target = Tensor::stack(&masks, 0)?.to_device(&dev)?; // [P, h4, w4]
            let neg: Vec<usize> = (0..n).filter(|&j| d.photos[j].1.is_none()).collect();
            let tri = self.model.head.triphasic(&gf, &lg, &ag, Pairs::TopK)?;
            let logits = self.model.head.decode(&tri, &gf, &pos)?;
            let ce = loss::pixel_ce(&logits, &target)?;
            let dice = loss::dice(&logits, &target)?;
            let zero = Tensor::zeros((), DType::F32, &dev)?;
            // Terms with weight 0 are not computed at all: the mirror pass costs a second head and decoder.
            let neg_ce = if self.cfg.neg_ce > 0.0 && !neg.is_empty() {
                let neg_logits = self.model.head.decode(&tri, &gf, &neg)?;
                let (_, _, h4, w4) = neg_logits.dims4()?;
                loss::pixel_ce(&neg_logits, &Tensor::zeros((neg.len(), h4, w4), DType::U32, &dev)?)?
            } else {
                zero.clone()
            };
            let mirror = if self.cfg.lambda_mirror > 0.0 {
                let anti = self.model.head.triphasic(&gf, &ag, &lg, Pairs::TopK)?;
                loss::pixel_ce(&self.model.head.decode(&anti, &gf, &pos)?, &loss::invert(&target)?)?
            } else {
                zero.clone()
            };
            let is_pos: Vec<f32> = d.photos.iter().map(|p| if p.1.is_some() { 1.0 } else { 0.0 }).collect();
            let is_pos = Tensor::new(is_pos.as_slice(), &dev)?;
            let trip = loss::triplet(&tri.d_pos, &tri.d_neg, &is_pos, margin)?;
            let separation = if self.cfg.separation > 0.0 {
                loss::separation(&tri.l_proj, &tri.anti_proj, margin)?
            } else {
                zero.clone()
            };
            let language = if self.cfg.language_map > 0.0 {
                let (_, h, w) = tri.language_map.dims3()?;
                let pooled = loss::pooled_mask(&target, h, w)?;
                // Positives' rows from their masks, negatives' rows zero, in group order.
                let zeros = Tensor::zeros((1, h, w), DType::F32, &dev)?;
                let mut rows = Vec::with_capacity(n);
                let mut next_pos = 0;
                for p in &d.photos {
                    if p.1.is_some() {
                        rows.push(pooled.narrow(0, next_pos, 1)?);
                        next_pos += 1;
                    } else {
                        rows.push(zeros.clone());
                    }
                }
                loss::language_map(&tri.language_map, &Tensor::cat(&rows, 0)?)?
            } else {
                zero.clone()
            };
            let parts = loss::GroupLoss { ce, dice, neg_ce, mirror, triplet: trip, separation, language };
            ce_sum += parts.ce.to_scalar::<f32>()?;
            neg_sum += parts.neg_ce.to_scalar::<f32>()?;
            mirror_sum += parts.mirror.to_scalar::<f32>()?;
            triplet_sum += parts.triplet.to_scalar::<f32>()?;
            lang_sum += parts.language.to_scalar::<f32>()?;
            let g = parts.total(&self.cfg, progress)?;
            total = Some(match total {
                Some(acc) => (acc + g)?,
                None => g,
            });
        }
        let groups = draws.len() as f64;
        let mut loss = (total.expect("at least one group") / groups)?;
        let mut attr_value = 0f32;
        if let Some(a) = &attribute_loss {
            attr_value = a.to_scalar::<f32>()?;
            loss = (loss + (a * self.cfg.attributes)?)?;
        }
        let grads = loss.backward()?;
        self.opt.step(&grads, self.cfg.lr_at(t))?;
        self.update_running_stats()?;
        self.step += 1;
        let g = groups as f32;
        Ok(StepStats {
            step: t,
            loss: loss.to_scalar::<f32>()?,
            ce: ce_sum / g,
            neg_ce: neg_sum / g,
            mirror: mirror_sum / g,
            triplet: triplet_sum / g,
            language: lang_sum / g,
            attributes: attr_value,
            images: ids.len(),
            seconds: start.elapsed().as_secs_f64(),
            ..StepStats::default()
        })
    }
}

/// For a referent model's trunk (`dense.d3.`, `dense.d2.`) started from a model trained without one:
/// the features stage's own training-only trunk (`aux.dense.d3.`, ...), which learnt the same thing.
/// So a features stage run once can serve a referent head.
fn trunk_from_features_decoder<'a>(
    init: &'a std::collections::HashMap<String, Tensor>,
    name: &str,
) -> Option<&'a Tensor> {
    let rest = name.strip_prefix("dense.")?;
    if init.contains_key("dense.d3.conv.weight") {
        return None;
    }
    init.get(&format!("aux.dense.{rest}"))
}

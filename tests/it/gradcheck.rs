//! Every gradient photoseg trains with, checked against central finite differences in f64: the whole
//! network (conv stem, Swin with shifted windows and relative-position bias, neck, BERT, TQM, the
//! hierarchizer's top-K maps, the decision, the decoder) and every loss term of the training objective,
//! on a tiny model. A missing or wrong backward anywhere (a custom layer norm, a softmax, a window
//! shift, GroupNorm, upsampling, the triplet) shows up as a parameter whose autograd gradient differs
//! from (L(w + e) - L(w - e)) / 2e.
//!
//! f64 makes the finite differences exact to about 1e-8 relative, so the check needs no reference
//! implementation; a handful of elements per parameter tensor, spread over it, are probed.
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::grser::{Config, DecisionInput, Grser, Pairs};
use photoseg::model::referent::{self, WordMatch};
use photoseg::synth;
use photoseg::train::{attributes, loss, vocab};

/// `shape` filled from a seeded generator, uniform in [-scale, scale]: the check is run on the same
/// numbers every time (a random draw can put a ReLU's kink within EPS of a probed point, where finite
/// differences see another slope than autograd).
fn seeded(shape: &[usize], scale: f64, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Every variable of `varmap` drawn from `seed`: PyTorch's defaults for weights and biases
/// (`train::init`), seeded values for embeddings and position maps; norms keep their constants.
fn seed_all(varmap: &VarMap, seed: u64) {
    photoseg::train::init::pytorch_default(varmap, seed, &Device::Cpu).unwrap();
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        if name.contains("embeddings") || name.ends_with("v_pos") {
            let var = &data[name];
            var.set(&seeded(var.dims(), 0.5, seed + 1 + i as u64)).unwrap();
        }
    }
}

/// Probed elements per parameter tensor.
const SAMPLES: usize = 3;
const EPS: f64 = 1e-6;

/// Compares autograd with finite differences for every variable of `varmap`; returns the names of the
/// variables checked. Fails on the first element that disagrees, and on a variable without gradient.
fn check(varmap: &VarMap, loss_fn: &dyn Fn() -> Result<Tensor>) -> Vec<String> {
    let base = loss_fn().unwrap();
    let grads = base.backward().unwrap();
    let base = base.to_scalar::<f64>().unwrap();
    let vars: Vec<(String, Var)> = {
        // Running statistics are not trained by gradient (the trainer averages batch statistics into them).
        let mut v: Vec<_> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.ends_with(".running_mean") && !k.ends_with(".running_var"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut worst = (0f64, String::new());
    for (name, var) in &vars {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} receives no gradient"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let values: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = values.len();
        for s in 0..SAMPLES.min(n) {
            let i = (s * n) / SAMPLES.min(n) + (n / (2 * SAMPLES)).min(n - 1 - (s * n) / SAMPLES.min(n));
            let at = |delta: f64| -> f64 {
                let mut v = values.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                loss_fn().unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (at(EPS) - at(-EPS)) / (2.0 * EPS);
            var.set(&Tensor::from_vec(values.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let err = (fd - g[i]).abs();
            let tol = 1e-7 * base.abs().max(1.0) + 1e-4 * fd.abs().max(g[i].abs());
            assert!(err <= tol, "{name}[{i}]: autograd {} vs finite differences {fd} (loss {base})", g[i]);
            // Relative error only where the gradient is not zero (a bias under a norm has none).
            let scale = fd.abs().max(g[i].abs());
            let rel = if scale > 1e-6 { err / scale } else { 0.0 };
            if rel > worst.0 {
                worst = (rel, format!("{name}[{i}]"));
            }
        }
    }
    eprintln!("{} tensors checked, worst relative error {:.2e} at {}", vars.len(), worst.0, worst.1);
    vars.into_iter().map(|(k, _)| k).collect()
}

/// A tiny GRSer in f64 with a convolutional stem, shifted windows that need the mask (a 32 px input at
/// window 4 gives 8 x 8 then 4 x 4 maps), a position embedding and standardised V.
fn tiny(decision: DecisionInput) -> (Grser, VarMap) {
    tiny_with(decision, false)
}

/// [`tiny`], with BatchNorm in the stem when `stem_batch_norm`.
fn tiny_with(decision: DecisionInput, stem_batch_norm: bool) -> (Grser, VarMap) {
    let tok = vocab::wordpiece_tokenizer(&synth::vocabulary()).unwrap();
    let mut cfg = Config::tiny(tok.get_vocab_size(true));
    cfg.image_size = 64;
    cfg.swin.embed_dim = 8;
    cfg.swin.num_heads = vec![1, 2, 2, 2];
    cfg.swin.window_size = 4;
    cfg.swin.img_size = Some(64);
    cfg.swin.conv_stem = Some(8);
    cfg.swin.stem_batch_norm = stem_batch_norm;
    cfg.bert.hidden_size = 8;
    cfg.bert.intermediate_size = 16;
    cfg.bert.num_attention_heads = 2;
    cfg.head.c_v = 8;
    cfg.head.k = 3;
    cfg.head.lateral = 4;
    cfg.head.decoder_dim = 4;
    cfg.head.center_v = true;
    cfg.head.position_grid = Some(4);
    cfg.head.decision = decision;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let model = Grser::new(&cfg, tok, vb).unwrap();
    // The position embedding starts at zero: seeded values give its gradient path something to carry.
    seed_all(&varmap, 5);
    (model, varmap)
}

#[test]
fn every_gradient_of_the_referring_objective_matches_finite_differences() {
    for decision in [DecisionInput::PooledZ, DecisionInput::Maps] {
        let (model, varmap) = tiny(decision);
        let dev = Device::Cpu;
        let images = seeded(&[4, 3, 64, 64], 1.5, 11);
        // Photos 0 and 2 hold the object: a blob on the 16 x 16 mask grid.
        let mask: Vec<u32> = (0..256).map(|p| u32::from((p / 16) % 16 >= 5 && (p / 16) < 10 && p % 16 < 7)).collect();
        let target = Tensor::from_vec([mask.clone(), mask].concat(), (2, 16, 16), &dev).unwrap();
        let is_pos = Tensor::new(&[1f64, 0.0, 1.0, 0.0], &dev).unwrap();
        let loss_fn = || -> Result<Tensor> {
            let feats = model.featurize(&images)?;
            let (l, anti) =
                model.text.encode_with_anti(&["the red circle on the left"]).map_err(candle_core::Error::wrap)?;
            let tri = model.head.triphasic(&feats, &l.get(0)?, &anti.get(0)?, Pairs::TopK)?;
            let logits = model.head.decode(&tri, &feats, &[0, 2])?;
            let neg = model.head.decode(&tri, &feats, &[1, 3])?;
            let ce = loss::pixel_ce(&logits, &target)?;
            let dice = loss::dice(&logits, &target)?;
            let neg_ce = loss::pixel_ce(&neg, &target.zeros_like()?)?;
            let trip = loss::triplet(&tri.d_pos, &tri.d_neg, &is_pos, 1.0)?;
            let sep = loss::separation(&tri.l_proj, &tri.anti_proj, 1.0)?;
            let (_, h, w) = tri.language_map.dims3()?;
            let pooled = loss::pooled_mask(&target, h, w)?;
            let lmap_target = Tensor::stack(
                &[pooled.get(0)?, pooled.get(0)?.zeros_like()?, pooled.get(1)?, pooled.get(0)?.zeros_like()?],
                0,
            )?;
            let lmap = loss::language_map(&tri.language_map, &lmap_target)?;
            ce + dice + neg_ce + trip + sep + lmap
        };
        let names = check(&varmap, &loss_fn);
        for prefix in ["swin.", "neck.", "text.", "head.tqm.", "head.w_z.", "head.decoder.", "head.v_pos"] {
            assert!(names.iter().any(|n| n.starts_with(prefix)), "no parameter under {prefix} was checked");
        }
    }
}

#[test]
fn every_gradient_of_the_features_stage_matches_finite_differences() {
    // With the stem's BatchNorm on batch statistics, as the features stage trains it.
    let (model, varmap) = tiny_with(DecisionInput::PooledZ, true);
    model.swin.set_training(true);
    let dev = Device::Cpu;
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
    let dense = attributes::DenseDecoder::new([8, 16, 32], true, vb.pp("aux").pp("dense")).unwrap();
    seed_all(&varmap, 6);
    let images = seeded(&[2, 3, 64, 64], 1.5, 12);
    let labels = |classes: u32| {
        let v: Vec<u32> =
            (0..2 * 256).map(|p| if (p / 16) % 16 < 8 { 0 } else { 1 + (p % 16) % (classes - 1) }).collect();
        Tensor::from_vec(v, (2, 16, 16), &dev).unwrap()
    };
    let (color, shape, size) = (labels(8), labels(7), labels(3));
    let loss_fn = || -> Result<Tensor> {
        let stages = model.swin.forward_stages(&images)?;
        dense.loss(None, &stages, &color, &shape, &size).map_err(candle_core::Error::wrap)
    };
    // Only the backbone up to stage 3 and the decoder are in this loss: check those.
    let inside = VarMap::new();
    {
        let all = varmap.data().lock().unwrap();
        let mut mine = inside.data().lock().unwrap();
        for (k, v) in all.iter() {
            // Stage 4 (`layers.3`) feeds only the decoder's lat3, which this loss does not read.
            let swin = k.starts_with("swin.") && !k.starts_with("swin.layers.3.");
            if swin || k.starts_with("aux.dense.") {
                mine.insert(k.clone(), v.clone());
            }
        }
    }
    let names = check(&inside, &loss_fn);
    for prefix in ["aux.dense.d3.norm.", "aux.dense.classifier.", "swin.patch_embed.stem_bn.0.", "swin.layers.2."] {
        assert!(names.iter().any(|n| n.starts_with(prefix)), "no parameter under {prefix} was checked");
    }
}

/// The referent head's objective ([`loss::referent`]: per-cell BCE, Dice, the decision on the peak of
/// the map of the 2 x 2-averaged E) through φ, the word projection and BERT, on a kept dense map as in
/// the head stage, with the words' matches summed.
#[test]
fn every_gradient_of_the_referent_objective_matches_finite_differences() {
    referent_objective_gradients(WordMatch::Sum);
}

/// The same with every word required to match (the product of the words' sigmoids).
#[test]
fn every_gradient_of_the_all_words_referent_objective_matches_finite_differences() {
    referent_objective_gradients(WordMatch::All);
}

fn referent_objective_gradients(words: WordMatch) {
    let tok = vocab::wordpiece_tokenizer(&synth::vocabulary()).unwrap();
    let mut cfg = Config::tiny(tok.get_vocab_size(true));
    cfg.bert.hidden_size = 8;
    cfg.bert.intermediate_size = 16;
    cfg.bert.num_attention_heads = 2;
    cfg.referent = Some(photoseg::model::grser::ReferentConfig { dim: 4, threshold: 0.0, words });
    let all = VarMap::new();
    let model = Grser::new(&cfg, tok, VarBuilder::from_varmap(&all, DType::F64, &Device::Cpu)).unwrap();
    let r = model.referent.as_ref().unwrap();
    let dev = Device::Cpu;
    seed_all(&all, 7);
    let dense = seeded(&[3, model.dense.as_ref().unwrap().channels(), 8, 8], 1.5, 13);
    let target: Vec<u32> = (0..3 * 64).map(|i| u32::from(i < 64 && (i % 8) < 3 && i / 8 < 4)).collect();
    let target = Tensor::from_vec(target, (3, 8, 8), &dev).unwrap();
    let positive = Tensor::new(&[1f64, 0.0, 0.0], &dev).unwrap();
    let loss_fn = || -> Result<Tensor> {
        let batch = model.text.tokenize(&["the red circle", "a blue star"]).map_err(candle_core::Error::wrap)?;
        let hidden = model.text.bert.forward(&batch.ids, &batch.types, &batch.mask)?;
        let q = r.query(&hidden, &batch.mask)?.index_select(&Tensor::new(&[0u32, 0, 1], &dev)?, 0)?;
        let e = r.embed(&dense)?;
        let logits = r.logits(&e, &q)?;
        let score = r.peaks(&referent::pool(&e)?, &q)?;
        Ok(loss::referent(&logits, &score, &target, &positive)?.total)
    };
    let inside = VarMap::new();
    {
        let all = all.data().lock().unwrap();
        let mut mine = inside.data().lock().unwrap();
        for (k, v) in all.iter() {
            // The pooler and the token-type embeddings of the second segment are not in this loss.
            if k.starts_with("referent.") || (k.starts_with("text.encoder.") && !k.contains("pooler")) {
                mine.insert(k.clone(), v.clone());
            }
        }
    }
    let names = check(&inside, &loss_fn);
    for prefix in ["referent.phi1.", "referent.phi2.", "referent.words.", "referent.bias", "text.encoder.layer.1."] {
        assert!(names.iter().any(|n| n.starts_with(prefix)), "no parameter under {prefix} was checked");
    }
}

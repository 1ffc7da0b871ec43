//! `photoseg train`: fit GRSer on a data set, with a progress bar, checkpoints and exact resume.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::checkpoint;
use crate::model::grser::{Config as ModelConfig, ReferentConfig};
use crate::synth::SynthDataset;
use crate::train::data::{SourceGroup, TrainSet};
use crate::train::optim::AdamWConfig;
use crate::train::recipe::Recipe;
use crate::train::{vocab, Stage, TrainConfig, Trainer};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preset {
    /// The built-in demo model's shape (small Swin, small BERT, 128 px).
    Builtin,
    /// The paper's shape (Swin-B, BERT-base, 416 px): for a GPU. Pass `--tokenizer` (bert-base-uncased's
    /// tokenizer.json) with `--swin-weights` / `--bert-weights` for the public checkpoints; without
    /// `--tokenizer` BERT-base gets the synthetic language's vocabulary (from scratch; throughput runs).
    Paper,
}

/// Options of `photoseg train`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("knobs").multiple(true)))]
pub struct TrainArgs {
    /// Train by a recipe file (TOML: the model's shape and every stage's settings; the built-in
    /// recipes/builtin.toml is one). The file holds every knob, so the flags that set one
    /// are refused beside it.
    #[arg(long, value_name = "FILE", conflicts_with = "knobs")]
    pub recipe: Option<PathBuf>,
    /// A synthetic data set written by `photoseg synth` (its `train` split is used).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Where checkpoints and the final model (OUT/model) go; a run there is resumed.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, group = "knobs", value_enum, default_value_t = Preset::Builtin)]
    pub preset: Preset,
    /// Optimizer steps.
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().steps)]
    pub steps: usize,
    /// Groups per step (paper: 4).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().groups_per_step)]
    pub groups_per_step: usize,
    /// Photos per group, half positives (paper: 8).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().group_size)]
    pub group_size: usize,
    /// Peak learning rate (paper: 5e-5 with pre-trained backbones; from scratch use ~1e-3).
    #[arg(long, group = "knobs", default_value_t = AdamWConfig::default().lr)]
    pub lr: f64,
    #[arg(long, group = "knobs", default_value_t = AdamWConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// Weight of the mirror (anti-expression) cross entropy.
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().lambda_mirror)]
    pub lambda_mirror: f64,
    /// Weight of the Dice term on positives (not in the paper; 0 gives the paper's objective).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().dice)]
    pub dice: f64,
    /// Weight of the cross entropy on negatives against an empty mask (not in the paper; 0 gives the
    /// paper's objective; see docs/model.md).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().neg_ce)]
    pub neg_ce: f64,
    /// Weight of the term keeping L' and L'_anti at least 2m apart (not in the paper; 0 gives its
    /// objective; see docs/model.md).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().separation)]
    pub separation: f64,
    /// Weight of the language-map supervision: M_l must light up the referred object and stay dark on
    /// negatives (not in the paper; 0 gives its objective; see docs/model.md).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().language_map)]
    pub language_map: f64,
    /// Weight of the dense attribute supervision: colour, shape and size of every object, read back from
    /// V and stage 1 by training-only heads (not in the paper; 0 gives its objective; docs/model.md).
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().attributes)]
    pub attributes: f64,
    /// Add a learnt position embedding to V before TQM (`head.position_grid`, docs/model.md), so
    /// expressions can say "on the left" / "at the top".
    #[arg(long, group = "knobs")]
    pub position: bool,
    /// Side in pixels the model reads photos at (a multiple of 32; default: the preset's, 128 for the
    /// built-in shape). Photos are resized to it, so a larger side gives small objects more cells.
    #[arg(long, group = "knobs", value_name = "PX")]
    pub image_size: Option<usize>,
    /// Replace Swin's 4 x 4 patch projection by a convolutional stem of this width, with BatchNorm after
    /// each convolution (`swin.conv_stem`, `swin.stem_batch_norm`, docs/model.md); 0 = Swin's own.
    #[arg(long, group = "knobs", default_value_t = 0, value_name = "WIDTH")]
    pub conv_stem: usize,
    /// Channels of each lateral map the decoder reads besides z (`head.lateral`); absent: the preset's.
    /// With 4 and `--cache-codec lr8`, a paper-shaped model's features cache in 250 KB a photo
    /// (docs/library.md).
    #[arg(long, group = "knobs", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub lateral: Option<u16>,
    /// The codec photoseg caches the trained model's features in (`cache_codec` in its config.json:
    /// f16, int8 or lr8; docs/library.md); absent: f16.
    #[arg(long, group = "knobs", value_name = "CODEC", value_parser = parse_codec)]
    pub cache_codec: Option<String>,
    /// Give the model the referent head over a dense trunk (`referent` in config.json, docs/model.md):
    /// it trains in stages, `--stage features` then `--stage head`.
    #[arg(long, group = "knobs")]
    pub referent: bool,
    /// Standardise V's channels over each photo's positions before TQM (`head.center_v`, docs/model.md).
    #[arg(long, group = "knobs")]
    pub center_v: bool,
    /// What the run trains: `joint` (everything, the paper's way), `features` (backbone and neck on the
    /// colour, shape and size of every object; synthetic data) or `head` (the referring objective with
    /// Swin frozen). docs/model.md, "Training in stages".
    #[arg(long, group = "knobs", value_enum, default_value_t = Stage::Joint)]
    pub stage: Stage,
    /// Start from this model directory's weights (same shape) instead of a random initialisation. A
    /// referent model's trunk may come from a features stage trained without `--referent` (its
    /// training-only trunk, `aux.dense.`).
    #[arg(long, group = "knobs", value_name = "DIR")]
    pub init: Option<PathBuf>,
    /// Paper preset: Hugging Face tokenizer.json of the BERT checkpoint (bert-base-uncased).
    #[arg(long, group = "knobs", value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Public Swin weights to start from (timm safetensors or Microsoft .pth; paper preset).
    #[arg(long, group = "knobs", value_name = "FILE")]
    pub swin_weights: Option<PathBuf>,
    /// Public BERT weights to start from (Hugging Face safetensors or .bin; paper preset).
    #[arg(long, group = "knobs", value_name = "FILE")]
    pub bert_weights: Option<PathBuf>,
    #[arg(long, group = "knobs", default_value_t = 0)]
    pub seed: u64,
    #[arg(long, group = "knobs", default_value_t = TrainConfig::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Log a line every N steps when stderr is not a terminal (there the progress bar shows each step).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub log_every: usize,
    /// Run on the GPU (needs a build with `--features cuda`).
    #[arg(long)]
    pub cuda: bool,
}

fn device(cuda: bool) -> Result<Device> {
    if cuda {
        Device::new_cuda(0).context("no usable CUDA device (was photoseg built with --features cuda?)")
    } else {
        Ok(Device::Cpu)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let dev = device(args.cuda)?;
    let ds = SynthDataset::open(&args.data)?;
    if let Some(path) = &args.recipe {
        return run_recipe(&Recipe::load(path)?, &ds, &args, &dev);
    }
    let tokenizer = match &args.tokenizer {
        Some(path) => tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("reading the tokenizer {}: {e}", path.display()))?,
        None => vocab::wordpiece_tokenizer(&crate::synth::vocabulary())?,
    };
    let vocab_size = tokenizer.get_vocab_size(true);
    let model_cfg = match args.preset {
        Preset::Builtin => {
            if args.tokenizer.is_some() || args.swin_weights.is_some() || args.bert_weights.is_some() {
                bail!("--tokenizer, --swin-weights and --bert-weights go with --preset paper");
            }
            ModelConfig::builtin(vocab_size)
        }
        Preset::Paper => {
            let mut cfg = ModelConfig::paper();
            if args.tokenizer.is_none() {
                if args.bert_weights.is_some() {
                    bail!("--bert-weights needs the checkpoint's own --tokenizer (its vocabulary)");
                }
                cfg.bert.vocab_size = vocab_size;
                cfg.description = "GRSer in the paper's shape, BERT-base on the synthetic vocabulary".into();
            }
            cfg
        }
    };
    let mut model_cfg = model_cfg;
    if let Some(px) = args.image_size {
        if !(32..=1024).contains(&px) || px % 32 != 0 {
            bail!("--image-size {px}: give a multiple of 32 from 32 to 1024");
        }
        model_cfg.image_size = px;
        model_cfg.swin.img_size = Some(px);
    }
    model_cfg.head.center_v = args.center_v;
    if args.position {
        // Swin's grid: the patch embedding divides by 4 (rounding up), each of two merges by 2.
        let grid = model_cfg.image_size.div_ceil(4).div_ceil(2).div_ceil(2);
        model_cfg.head.position_grid = Some(grid);
    }
    model_cfg.swin.conv_stem = (args.conv_stem > 0).then_some(args.conv_stem);
    model_cfg.swin.stem_batch_norm = model_cfg.swin.conv_stem.is_some();
    if let Some(lateral) = args.lateral {
        model_cfg.head.lateral = lateral.into();
    }
    model_cfg.cache_codec = args.cache_codec.clone();
    if args.referent {
        model_cfg.referent = Some(ReferentConfig::default());
    }
    let cfg = TrainConfig {
        steps: args.steps,
        groups_per_step: args.groups_per_step,
        group_size: args.group_size,
        optim: AdamWConfig { lr: args.lr, weight_decay: args.weight_decay, ..AdamWConfig::default() },
        lambda_mirror: args.lambda_mirror,
        dice: args.dice,
        neg_ce: args.neg_ce,
        separation: args.separation,
        language_map: args.language_map,
        attributes: args.attributes,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every.max(1),
        stage: args.stage,
        ..TrainConfig::default()
    };
    let mut init = match &args.init {
        Some(dir) => Some(read_weights(dir, &dev)?),
        None => None,
    };
    // Public backbone weights, renamed to the model's `swin.` / `text.` prefixes (checkpoint.rs).
    for (file, prefix, load) in [
        (&args.swin_weights, "swin.", checkpoint::load_swin_tensors as fn(&std::path::Path, &Device) -> _),
        (&args.bert_weights, "text.", checkpoint::load_bert_tensors),
    ] {
        if let Some(file) = file {
            let tensors = load(file, &dev)?;
            let map = init.get_or_insert_with(Default::default);
            map.extend(tensors.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
    }
    train_stage(&ds, &model_cfg, tokenizer, &cfg, &args.out, init.as_ref(), args.log_every, &dev)?;
    Ok(())
}

/// Runs a recipe's stages in order, each in `OUT/NAME/` and from the previous one's final weights; the
/// last stage's model is copied to `OUT/model`.
fn run_recipe(recipe: &Recipe, ds: &SynthDataset, args: &TrainArgs, dev: &Device) -> Result<()> {
    let tokenizer = vocab::wordpiece_tokenizer(&crate::synth::vocabulary())?;
    let model_cfg = recipe.model_config(tokenizer.get_vocab_size(true))?;
    // The first stage starts from the recipe's `init` model when it names one.
    let mut previous: Option<PathBuf> = recipe.init.clone();
    for (i, stage) in recipe.stages.iter().enumerate() {
        eprintln!(
            "stage {}/{}: {} ({:?}, {} steps)",
            i + 1,
            recipe.stages.len(),
            stage.name,
            stage.train.stage,
            stage.train.steps
        );
        let init = match &previous {
            Some(dir) => Some(read_weights(dir, dev)?),
            None => None,
        };
        let out = args.out.join(&stage.name);
        previous = Some(train_stage(
            ds,
            &model_cfg,
            tokenizer.clone(),
            &stage.train,
            &out,
            init.as_ref(),
            args.log_every,
            dev,
        )?);
    }
    let last = previous.expect("a recipe has at least one stage");
    let final_dir = args.out.join("model");
    copy_model(&last, &final_dir)?;
    eprintln!("model written to {}", final_dir.display());
    Ok(())
}

/// The weights of a model directory or checkpoint.
fn read_weights(dir: &std::path::Path, dev: &Device) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    let path = dir.join(crate::model::checkpoint::WEIGHTS_FILE);
    candle_core::safetensors::load(&path, dev).with_context(|| format!("reading {}", path.display()))
}

/// Copies a model directory's three files (config, weights, tokenizer) into `to`.
fn copy_model(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for f in [
        crate::model::checkpoint::CONFIG_FILE,
        crate::model::checkpoint::WEIGHTS_FILE,
        crate::model::checkpoint::TOKENIZER_FILE,
    ] {
        std::fs::copy(from.join(f), to.join(f)).with_context(|| format!("copying {}", from.join(f).display()))?;
    }
    Ok(())
}

/// One training run on `ds`'s train split into `out` (resumed when `out` holds a checkpoint of it);
/// returns the final model directory (`out/model`).
#[allow(clippy::too_many_arguments)]
fn train_stage(
    ds: &SynthDataset,
    model_cfg: &ModelConfig,
    tokenizer: tokenizers::Tokenizer,
    cfg: &TrainConfig,
    out: &std::path::Path,
    init: Option<&std::collections::HashMap<String, candle_core::Tensor>>,
    log_every: usize,
    dev: &Device,
) -> Result<PathBuf> {
    let groups: Vec<SourceGroup> = ds
        .split("train")?
        .into_iter()
        .map(|g| SourceGroup {
            expression: g.expression,
            photos: g.photos.into_iter().map(|p| (p.path, p.mask)).collect(),
        })
        .collect();
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("loading photos {pos}/{len} {wide_bar} {eta}")?);
    let mut set = TrainSet::load(&groups, model_cfg.image_size, &Device::Cpu, |d, t| {
        bar.set_length(t as u64);
        bar.set_position(d as u64);
    })?;
    bar.finish_and_clear();
    if cfg.attributes > 0.0 || cfg.stage == Stage::Features {
        let grid = crate::train::data::mask_grid(model_cfg.image_size);
        let labelled = set.attach_attributes(crate::train::attributes::synth_labels(ds, "train", grid)?);
        eprintln!("attribute labels for {labelled} of {} photos", set.images.len());
    }
    eprintln!("{} groups, {} photos from {}", set.groups.len(), set.images.len(), ds.root().display());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut trainer = Trainer::new(model_cfg, tokenizer, cfg, init, dev)?;
    if trainer.resume(out)? {
        eprintln!("resuming at step {} from {}", trainer.step, out.display());
    }
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(ProgressStyle::with_template("step {pos}/{len} {wide_bar} {elapsed}<{eta} {msg}")?);
    bar.set_position(trainer.step as u64);
    // Without a terminal the bar is hidden: log a line every `log_every` steps instead.
    let log_every = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { 0 } else { log_every };
    let mut ema: Option<f32> = None;
    while trainer.step < cfg.steps {
        let s = trainer.train_step(&set)?;
        let e = ema.map_or(s.loss, |e| 0.95 * e + 0.05 * s.loss);
        ema = Some(e);
        let msg = format!(
            "loss {e:.3} (ce {:.3} neg {:.3} mirror {:.3} triplet {:.3} lmap {:.3} attr {:.3} dice {:.3} decision \
             {:.3}) {:.1} img/s",
            s.ce,
            s.neg_ce,
            s.mirror,
            s.triplet,
            s.language,
            s.attributes,
            s.dice,
            s.decision,
            s.images as f64 / s.seconds
        );
        if log_every > 0 && (s.step + 1) % log_every == 0 {
            eprintln!("step {}/{} lr {:.2e} {msg}", s.step + 1, cfg.steps, cfg.lr_at(s.step));
        }
        bar.set_message(msg);
        bar.inc(1);
        if trainer.step % cfg.checkpoint_every == 0 || trainer.step == cfg.steps {
            trainer.save(out)?;
        }
    }
    bar.finish();
    let last = crate::train::latest_checkpoint(out)?.context("no checkpoint written")?;
    let final_dir = out.join("model");
    copy_model(&last, &final_dir)?;
    eprintln!("model written to {}", final_dir.display());
    Ok(final_dir)
}

/// A codec name photoseg knows (for `--cache-codec`).
fn parse_codec(name: &str) -> std::result::Result<String, String> {
    use crate::model::codec::FeatureCodec;
    match FeatureCodec::from_name(name) {
        Some(_) => Ok(name.to_string()),
        None => Err(format!(
            "unknown codec; one of {}",
            FeatureCodec::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
        )),
    }
}

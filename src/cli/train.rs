//! `photoseg train`: fit GRSer on a data set, with a progress bar, checkpoints and exact resume.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::grser::Config as ModelConfig;
use crate::synth::SynthDataset;
use crate::train::data::{SourceGroup, TrainSet};
use crate::train::optim::AdamWConfig;
use crate::train::{vocab, TrainConfig, Trainer};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preset {
    /// The built-in demo model's shape (small Swin, small BERT, 128 px).
    Builtin,
    /// The paper's shape (Swin-B, BERT-base, 416 px): needs a GPU and public weights.
    Paper,
}

/// Options of `photoseg train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A synthetic data set written by `photoseg synth` (its `train` split is used).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Where checkpoints and the final model (OUT/model) go; a run there is resumed.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Preset::Builtin)]
    pub preset: Preset,
    /// Optimizer steps.
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    pub steps: usize,
    /// Groups per step (paper: 4).
    #[arg(long, default_value_t = TrainConfig::default().groups_per_step)]
    pub groups_per_step: usize,
    /// Photos per group, half positives (paper: 8).
    #[arg(long, default_value_t = TrainConfig::default().group_size)]
    pub group_size: usize,
    /// Peak learning rate (paper: 5e-5 with pre-trained backbones; from scratch use ~1e-3).
    #[arg(long, default_value_t = AdamWConfig::default().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = AdamWConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// Weight of the mirror (anti-expression) cross entropy.
    #[arg(long, default_value_t = TrainConfig::default().lambda_mirror)]
    pub lambda_mirror: f64,
    /// Weight of the Dice term on positives (not in the paper; 0 gives the paper's objective).
    #[arg(long, default_value_t = TrainConfig::default().dice)]
    pub dice: f64,
    /// Weight the triplet loss 1 from the first step instead of the paper's t / T ramp.
    #[arg(long)]
    pub triplet_constant: bool,
    /// Start from this model directory's weights (same shape) instead of a random initialisation.
    #[arg(long, value_name = "DIR")]
    pub init: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    pub checkpoint_every: usize,
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
    let words = crate::synth::vocabulary();
    let tokenizer = vocab::wordpiece_tokenizer(&words)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let model_cfg = match args.preset {
        Preset::Builtin => ModelConfig::builtin(vocab_size),
        Preset::Paper => bail!("the paper preset needs bert-base's vocabulary and public weights: not wired yet"),
    };
    let cfg = TrainConfig {
        steps: args.steps,
        groups_per_step: args.groups_per_step,
        group_size: args.group_size,
        optim: AdamWConfig { lr: args.lr, weight_decay: args.weight_decay, ..AdamWConfig::default() },
        lambda_mirror: args.lambda_mirror,
        dice: args.dice,
        triplet_ramp: !args.triplet_constant,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every.max(1),
        ..TrainConfig::default()
    };
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
    let set = TrainSet::load(&groups, model_cfg.image_size, &Device::Cpu, |d, t| {
        bar.set_length(t as u64);
        bar.set_position(d as u64);
    })?;
    bar.finish_and_clear();
    eprintln!("{} groups, {} photos from {}", set.groups.len(), set.images.len(), args.data.display());
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let init = match &args.init {
        Some(dir) => {
            let path = dir.join(crate::model::checkpoint::WEIGHTS_FILE);
            Some(candle_core::safetensors::load(&path, &dev).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let mut trainer = Trainer::new(&model_cfg, tokenizer, &cfg, init.as_ref(), &dev)?;
    if trainer.resume(&args.out)? {
        eprintln!("resuming at step {} from {}", trainer.step, args.out.display());
    }
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(ProgressStyle::with_template("step {pos}/{len} {wide_bar} {elapsed}<{eta} {msg}")?);
    bar.set_position(trainer.step as u64);
    // Without a terminal the bar is hidden: log a line every `log_every` steps instead.
    let log_every = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { 0 } else { 10 };
    let mut ema: Option<f32> = None;
    while trainer.step < cfg.steps {
        let s = trainer.train_step(&set)?;
        let e = ema.map_or(s.loss, |e| 0.95 * e + 0.05 * s.loss);
        ema = Some(e);
        let msg = format!(
            "loss {e:.3} (ce {:.3} mirror {:.3} triplet {:.3}) {:.1} img/s",
            s.ce,
            s.mirror,
            s.triplet,
            s.images as f64 / s.seconds
        );
        if log_every > 0 && (s.step + 1) % log_every == 0 {
            eprintln!("step {}/{} lr {:.2e} {msg}", s.step + 1, cfg.steps, cfg.lr_at(s.step));
        }
        bar.set_message(msg);
        bar.inc(1);
        if trainer.step % cfg.checkpoint_every == 0 || trainer.step == cfg.steps {
            trainer.save(&args.out)?;
        }
    }
    bar.finish();
    let last = crate::train::latest_checkpoint(&args.out)?.context("no checkpoint written")?;
    let final_dir = args.out.join("model");
    std::fs::create_dir_all(&final_dir)?;
    for f in [
        crate::model::checkpoint::CONFIG_FILE,
        crate::model::checkpoint::WEIGHTS_FILE,
        crate::model::checkpoint::TOKENIZER_FILE,
    ] {
        std::fs::copy(last.join(f), final_dir.join(f))?;
    }
    eprintln!("model written to {}", final_dir.display());
    Ok(())
}

//! `photoseg train`: fit GRSer on a data set by a recipe, with a progress bar, checkpoints and exact
//! resume. The recipe (`train::recipe`) holds every training knob; the command line holds what changes
//! from one run to the next: the data and its format, where the run goes, the device and files on the
//! user's disk. The data is streamed (`train::data`): each step decodes the photos it draws.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::format::{DataSource, Format, TRAIN_SPLIT};
use crate::model::checkpoint;
use crate::model::grser::Config as ModelConfig;
use crate::synth::SynthDataset;
use crate::train::data::TrainSet;
use crate::train::recipe::{ModelPreset, Recipe};
use crate::train::{vocab, TrainConfig, Trainer};

/// Weights by name, as a model directory's safetensors file holds them.
type Weights = std::collections::HashMap<String, Tensor>;

/// Options of `photoseg train`.
#[derive(Debug, Args)]
#[command(after_help = "Each stage checkpoints into OUT/STAGE/; run the same command again to resume a \
                        stopped run where it stopped. The final model is OUT/model.")]
pub struct TrainArgs {
    /// The data set: a `photoseg synth` folder, a RefCOCO / RefCOCO+ / RefCOCOg refer folder (or its
    /// refs pickle) or a Co-SOD root, as --format says. Its `train` split is used (a Co-SOD root whole).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// How --data is laid out (docs/training.md). Only `synth` has the attribute labels a `features`
    /// stage learns from.
    #[arg(long, value_enum, default_value_t = Format::Synth)]
    pub format: Format,
    /// The COCO train2014 folder of a refcoco data set. Default: `images/` or `train2014/` in --data's
    /// folder, or the refer toolkit's `../images/mscoco/images/train2014/` beside it.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Where the run goes: each stage's checkpoints in OUT/STAGE/, the final model in OUT/model.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The recipe: a TOML file with the model's shape and every stage's settings (docs/model.md,
    /// "Recipes"). Default: the built-in model's, recipes/builtin.toml.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Steps of a one-stage recipe, in place of the recipe's (a recipe of several stages sets each
    /// stage's steps itself).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Start the first stage from this model directory's weights (same shape) instead of a random
    /// initialisation, as a recipe's `init` does. A referent model's trunk may come from a features
    /// stage trained without `referent` (its training-only trunk, `aux.dense.`).
    #[arg(long, value_name = "DIR")]
    pub init: Option<PathBuf>,
    /// Train this model directory (its config, tokenizer and weights), e.g. one `photoseg model init`
    /// wrote from public checkpoints: the recipe's [model] section is not used, its stages are.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["init", "swin_weights", "bert_weights", "tokenizer"])]
    pub model: Option<PathBuf>,
    /// Public Swin weights to start from (timm safetensors or Microsoft .pth; a "paper" preset recipe).
    #[arg(long, value_name = "FILE")]
    pub swin_weights: Option<PathBuf>,
    /// Public BERT weights to start from (Hugging Face safetensors or .bin; needs their --tokenizer).
    #[arg(long, value_name = "FILE")]
    pub bert_weights: Option<PathBuf>,
    /// The BERT checkpoint's Hugging Face tokenizer.json (bert-base-uncased; a "paper" preset recipe).
    /// Without it BERT reads the synthetic language's vocabulary.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Stop after N steps of this command, with a checkpoint, to split a long run into sittings; the
    /// same command again goes on from there, as if it had never stopped.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pause_after: Option<u64>,
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
    crate::train::allocator::keep_freed_memory();
    let (mut recipe, origin) = match &args.recipe {
        Some(path) => (Recipe::load(path)?, format!("recipe {}", path.display())),
        None => (Recipe::builtin()?, "the built-in recipe (recipes/builtin.toml)".to_string()),
    };
    if let Some(steps) = args.steps {
        recipe.set_steps(steps).with_context(|| origin.clone())?;
    }
    if let (Some(flag), Some(own)) = (&args.init, &recipe.init) {
        bail!(
            "--init {} and the init of {origin} ({}) both name the model to start from; give one",
            flag.display(),
            own.display()
        );
    }
    let pretrained = args.tokenizer.is_some() || args.swin_weights.is_some() || args.bert_weights.is_some();
    if pretrained && recipe.model.preset != ModelPreset::Paper {
        bail!(
            "--tokenizer, --swin-weights and --bert-weights go with a recipe whose [model] preset is \"paper\", \
             not {origin}"
        );
    }
    if args.bert_weights.is_some() && args.tokenizer.is_none() {
        bail!("--bert-weights needs the checkpoint's own --tokenizer (its vocabulary)");
    }
    if !args.format.has_attribute_labels() {
        if let Some(stage) = recipe.stages.iter().find(|s| s.train.needs_attribute_labels()) {
            bail!(
                "stage {:?} of {origin} learns from attribute labels (the colour, shape and size of every object), \
                 which only `photoseg synth` data sets have; a {} data set has none, so train on it with `joint` \
                 and `head` stages (recipes/paper.toml is the paper's recipe)",
                stage.name,
                args.format
            );
        }
    }
    let source = DataSource::new(args.format, &args.data, args.images.as_deref())?;
    if let Some(dir) = &args.model {
        if recipe.init.is_some() {
            bail!("--model {} and the init of {origin} both name the model to start from; give one", dir.display());
        }
        return train_model_dir(dir, &recipe, &source, &args);
    }
    let tokenizer = match &args.tokenizer {
        Some(path) => tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("reading the tokenizer {}: {e}", path.display()))?,
        None => vocab::wordpiece_tokenizer(&crate::synth::vocabulary())?,
    };
    let mut model_cfg = recipe.model_config(tokenizer.get_vocab_size(true))?;
    if recipe.model.preset == ModelPreset::Paper && args.tokenizer.is_none() {
        model_cfg.description = "GRSer in the paper's shape, BERT-base on the synthetic vocabulary".into();
    }
    if args.format != Format::Synth {
        let shape = match recipe.model.preset {
            ModelPreset::Builtin => "the built-in shape",
            ModelPreset::Paper => "the paper's shape (Swin-B, BERT-base)",
        };
        let words = if args.tokenizer.is_some() { "its BERT's vocabulary" } else { "the synthetic vocabulary" };
        let name = args.data.file_name().map_or(args.data.display().to_string(), |n| n.to_string_lossy().into());
        model_cfg.description = format!("GRSer in {shape}, {words}, trained on the {} data set {name}", args.format);
    }
    let dev = device(args.cuda)?;
    let set = training_set(&source, &recipe, model_cfg.image_size)?;
    if args.tokenizer.is_none() {
        let expressions: Vec<&str> = set.groups.iter().map(|g| g.expression.as_str()).collect();
        let unknown = vocab::unknown_share(&tokenizer, &expressions)?;
        if unknown >= 0.05 {
            eprintln!(
                "warning: the tokenizer (the synthetic language's) reads {:.0}% of the words of the expressions \
                 as unknown; give the BERT checkpoint's --tokenizer (a \"paper\" preset recipe)",
                100.0 * unknown
            );
        }
    }
    // The first stage's initial weights: a model directory's, then the public checkpoints' over them.
    let mut init = match args.init.as_ref().or(recipe.init.as_ref()) {
        Some(dir) => Some(read_weights(dir, &dev)?),
        None => None,
    };
    // Public backbone weights, renamed to the model's `swin.` / `text.` prefixes (checkpoint.rs).
    for (file, prefix, load) in [
        (&args.swin_weights, "swin.", checkpoint::load_swin_tensors as fn(&Path, &Device) -> _),
        (&args.bert_weights, "text.", checkpoint::load_bert_tensors),
    ] {
        if let Some(file) = file {
            let tensors = load(file, &dev)?;
            let map = init.get_or_insert_with(Default::default);
            map.extend(tensors.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
    }
    run_recipe(&recipe, &model_cfg, tokenizer, init, &set, &args, &dev)
}

/// `photoseg train --model DIR`: the recipe's stages on the model of `dir`, in its own shape and
/// vocabulary. Its description keeps where its backbones came from and says what it was trained on (an
/// untrained head's note, from `photoseg model init`, no longer holds).
fn train_model_dir(dir: &Path, recipe: &Recipe, source: &DataSource, args: &TrainArgs) -> Result<()> {
    let mut model_cfg = checkpoint::read_config(dir)?;
    let tok_path = dir.join(checkpoint::TOKENIZER_FILE);
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("reading the tokenizer {}: {e}", tok_path.display()))?;
    let base = model_cfg.description.split(crate::train::pretrained::UNTRAINED).next().unwrap_or("").to_string();
    let name = args.data.file_name().map_or(args.data.display().to_string(), |n| n.to_string_lossy().into());
    let base = if base.is_empty() { format!("GRSer from {}", dir.display()) } else { base };
    model_cfg.description = format!("{base}, trained on the {} data set {name}", args.format);
    eprintln!("training the model {} in its own shape (the recipe's [model] is not used)", dir.display());
    let dev = device(args.cuda)?;
    let set = training_set(source, recipe, model_cfg.image_size)?;
    let init = Some(read_weights(dir, &dev)?);
    run_recipe(recipe, &model_cfg, tokenizer, init, &set, args, &dev)
}

/// The training split of `source`, indexed for streaming; with the synthetic world's attribute labels
/// attached when a stage of `recipe` learns from them.
fn training_set(source: &DataSource, recipe: &Recipe, image_size: usize) -> Result<TrainSet> {
    let mut set = TrainSet::new(source.train_groups()?, image_size)?;
    if source.format == Format::Synth && recipe.stages.iter().any(|s| s.train.needs_attribute_labels()) {
        let ds = SynthDataset::open(&source.data)?;
        let grid = crate::train::data::mask_grid(image_size);
        let labelled = set.attach_attributes(crate::train::attributes::synth_labels(&ds, TRAIN_SPLIT, grid)?);
        eprintln!("attribute labels for {labelled} of {} photos", set.len());
    }
    let positives: usize = set.groups.iter().map(|g| g.positives.len()).sum();
    eprintln!(
        "{} groups ({positives} positives), {} photos from {} ({})",
        set.groups.len(),
        set.len(),
        source.data.display(),
        source.format
    );
    Ok(set)
}

/// Runs a recipe's stages in order, each in `OUT/NAME/`: the first from `init` (random where it has no
/// weight), each later one from the previous one's final weights. The last stage's model is copied to
/// `OUT/model`. A stage whose checkpoints are in its folder resumes from them (one that finished
/// trains no further), so running the same command again continues a stopped run. With
/// `--pause-after N` the run stops after N steps of this command, at a checkpoint.
fn run_recipe(
    recipe: &Recipe,
    model_cfg: &ModelConfig,
    tokenizer: tokenizers::Tokenizer,
    mut init: Option<Weights>,
    set: &TrainSet,
    args: &TrainArgs,
    dev: &Device,
) -> Result<()> {
    let mut previous: Option<PathBuf> = None;
    let mut budget = args.pause_after.map(|n| n as usize);
    for (i, stage) in recipe.stages.iter().enumerate() {
        eprintln!(
            "stage {}/{}: {} ({:?}, {} steps)",
            i + 1,
            recipe.stages.len(),
            stage.name,
            stage.train.stage,
            stage.train.steps
        );
        if budget == Some(0) {
            eprintln!("paused before stage {}; run the same command again to go on", stage.name);
            return Ok(());
        }
        if let Some(dir) = &previous {
            init = Some(read_weights(dir, dev)?);
        }
        let out = args.out.join(&stage.name);
        let run = StageRun { out: &out, log_every: args.log_every, budget: &mut budget };
        match train_stage(set, model_cfg, tokenizer.clone(), &stage.train, init.take().as_ref(), run, dev)? {
            Some(model) => previous = Some(model),
            None => {
                eprintln!("paused in stage {}; run the same command again to go on", stage.name);
                return Ok(());
            }
        }
    }
    let last = previous.expect("a recipe has at least one stage");
    let final_dir = args.out.join("model");
    copy_model(&last, &final_dir)?;
    eprintln!("model written to {}", final_dir.display());
    Ok(())
}

/// The weights of a model directory or checkpoint.
fn read_weights(dir: &Path, dev: &Device) -> Result<Weights> {
    let path = dir.join(crate::model::checkpoint::WEIGHTS_FILE);
    candle_core::safetensors::load(&path, dev).with_context(|| format!("reading {}", path.display()))
}

/// Copies a model directory's three files (config, weights, tokenizer) into `to`.
fn copy_model(from: &Path, to: &Path) -> Result<()> {
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

/// Where a stage goes and how it reports: its folder, the log's interval, and the steps this command
/// may still run (`--pause-after`; `None`: no limit).
struct StageRun<'a> {
    out: &'a Path,
    log_every: usize,
    budget: &'a mut Option<usize>,
}

/// One training run on `set` into `run.out` (resumed when it holds a checkpoint of it); returns the
/// final model directory (`out/model`), or `None` when the run paused at a checkpoint before the end.
fn train_stage(
    set: &TrainSet,
    model_cfg: &ModelConfig,
    tokenizer: tokenizers::Tokenizer,
    cfg: &TrainConfig,
    init: Option<&Weights>,
    run: StageRun,
    dev: &Device,
) -> Result<Option<PathBuf>> {
    let StageRun { out, log_every, budget } = run;
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
        if *budget == Some(0) {
            bar.finish_and_clear();
            trainer.save(out)?;
            eprintln!("paused at step {} of {} in {}", trainer.step, cfg.steps, out.display());
            return Ok(None);
        }
        let s = trainer.train_step(set)?;
        if let Some(n) = budget.as_mut() {
            *n -= 1;
        }
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
    Ok(Some(final_dir))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<super::TrainArgs, clap::Error> {
        let cli = Cli::try_parse_from(["photoseg", "train", "--data", "d", "--out", "o"].iter().chain(args))?;
        match cli.command {
            Command::Train(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_holds_the_run_and_the_recipe_holds_the_knobs() {
        let a = parse(&[]).unwrap();
        assert!(a.recipe.is_none() && a.steps.is_none() && a.init.is_none() && !a.cuda);
        let a = parse(&["--recipe", "r.toml", "--steps", "5", "--init", "m", "--log-every", "2"]).unwrap();
        assert_eq!((a.steps, a.log_every), (Some(5), 2));
        // Training knobs live in recipes only.
        for knob in ["--lr", "--stage", "--conv-stem", "--preset", "--gray-shape"] {
            let err = parse(&[knob, "1"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument, "{knob}");
        }
    }
}

//! `photoseg model ...`: inspect a model directory (loaded for real, so a broken model fails here with
//! the tensor or file it lacks, not later in a query), make one from public checkpoints, fetch one from
//! the Hugging Face hub, and install, list, choose and remove the models of the data directory.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Subcommand, ValueEnum};

use crate::catalog::{self, Active, Catalog};
use crate::hub::{self, Hub};
use crate::model::checkpoint;
use crate::train::pretrained::{self, BertFiles, Origins};

/// The files of a GRSer model repo (the card is fetched when there is one).
const MODEL_FILES: [&str; 3] = [checkpoint::CONFIG_FILE, checkpoint::WEIGHTS_FILE, checkpoint::TOKENIZER_FILE];

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Load a model directory (config.json, model.safetensors, tokenizer.json) and describe it.
    Info {
        /// The model directory.
        dir: PathBuf,
    },
    /// Copy a model directory with its weights stored as f16 (half the size; loaded back as f32).
    /// This is how the built-in model is packed into the binary. Training-only tensors (`aux.`) are left out.
    PackF16 {
        /// The model directory to read.
        src: PathBuf,
        /// The model directory to write (created; files in it are replaced).
        dst: PathBuf,
    },
    /// Check a model (a folder, or a Hugging Face repo id fetched first), copy it into the data directory
    /// and make it the model that answers.
    Install {
        /// A model directory or a hub repo id (`owner/name`, `owner/name@revision`).
        source: String,
        /// Its name (default: the folder's name, its parent's for `OUT/model`; a repo id with `/` as `--`).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the built-in model and the installed ones; `*` marks the one that answers.
    List,
    /// Make an installed model (or `builtin`) the one that answers.
    Use {
        /// The model's name, as `photoseg model list` shows it.
        name: String,
    },
    /// Remove an installed model. The active one only with --force, and the default (the built-in
    /// model) then answers.
    Remove {
        /// The model's name.
        name: String,
        /// Remove it even when it is the active model.
        #[arg(long)]
        force: bool,
    },
    /// Write a model directory from public checkpoints: Swin (timm or Microsoft) and BERT (Hugging Face)
    /// with a freshly initialised head, to be trained with `photoseg train --model DIR`.
    Init {
        /// The model's shape (`paper`: the paper's head and input size).
        #[arg(long, value_enum)]
        preset: InitPreset,
        /// Swin: a .safetensors or .pth file, a folder with model.safetensors, or a hub repo id.
        #[arg(long, value_name = "SRC")]
        swin: String,
        /// BERT: a folder with config.json, tokenizer.json and model.safetensors (or pytorch_model.bin),
        /// a weights file with those two beside it, or a hub repo id.
        #[arg(long, value_name = "SRC")]
        bert: String,
        /// The model directory to write (must not exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Input side in pixels (default: the preset's, 416).
        #[arg(long, value_name = "PX")]
        image_size: Option<usize>,
    },
    /// Fetch a GRSer model published on the Hugging Face hub into the hub's cache and check it (`photoseg
    /// model install REPO` also installs it).
    Fetch {
        /// The repo id (`owner/name`, `owner/name@revision`).
        repo: String,
    },
}

/// Shapes `photoseg model init` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitPreset {
    /// The paper's GRSer: its head (C_v 512, K 8), 416 px; the backbones' own shapes.
    Paper,
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Install { source, name } => install(&source, name),
        ModelCommand::List => list(),
        ModelCommand::Use { name } => {
            Catalog::open()?.set_active(&name)?;
            println!("{name} now answers");
            Ok(())
        }
        ModelCommand::Remove { name, force } => {
            let was_active = Catalog::open()?.remove(&name, force)?;
            println!("removed {name}");
            if was_active {
                println!("the default model answers now (photoseg model list)");
            }
            Ok(())
        }
        ModelCommand::Init { preset: InitPreset::Paper, swin, bert, out, image_size } => {
            let image_size = image_size.unwrap_or(crate::model::grser::Config::paper().image_size);
            if !(32..=1024).contains(&image_size) || image_size % 32 != 0 {
                bail!("--image-size {image_size}: give a multiple of 32 from 32 to 1024");
            }
            let swin_file = swin_source(&swin)?;
            let bert_files = bert_source(&bert)?;
            let origins = Origins { swin, bert };
            let cfg = pretrained::init_paper(&swin_file, &bert_files, &origins, image_size, &out)?;
            println!("wrote {} ({})", out.display(), cfg.description);
            println!("its head is untrained: train it with `photoseg train --model {} ...`", out.display());
            Ok(())
        }
        ModelCommand::Fetch { repo } => {
            let dir = fetch_model(&repo)?;
            println!("fetched {repo} into {}", dir.display());
            Ok(())
        }
        ModelCommand::PackF16 { src, dst } => {
            let model = checkpoint::load_model_dir(&src, &Device::Cpu)?; // refuse to pack a broken model
            drop(model);
            let weights = candle_core::safetensors::load(src.join(checkpoint::WEIGHTS_FILE), &Device::Cpu)?;
            // Training-only heads (`aux.`, e.g. the attribute heads of a stage's `attributes`) are left out.
            let half: std::collections::HashMap<String, candle_core::Tensor> = weights
                .into_iter()
                .filter(|(k, _)| !k.starts_with("aux."))
                .map(|(k, t)| {
                    let t = if t.dtype().is_float() { t.to_dtype(candle_core::DType::F16)? } else { t };
                    Ok((k, t))
                })
                .collect::<Result<_>>()?;
            std::fs::create_dir_all(&dst)?;
            candle_core::safetensors::save(&half, dst.join(checkpoint::WEIGHTS_FILE))?;
            for f in [checkpoint::CONFIG_FILE, checkpoint::TOKENIZER_FILE] {
                std::fs::copy(src.join(f), dst.join(f))?;
            }
            checkpoint::load_model_dir(&dst, &Device::Cpu)?;
            println!("packed {} into {} (f16 weights)", src.display(), dst.display());
            Ok(())
        }
        ModelCommand::Info { dir } => {
            let model = checkpoint::load_model_dir(&dir, &Device::Cpu)?;
            let cfg = &model.cfg;
            println!("model:       {}", dir.display());
            if !cfg.description.is_empty() {
                println!("description: {}", cfg.description);
            }
            println!(
                "swin:        embed {} depths {:?} heads {:?} window {}",
                cfg.swin.embed_dim, cfg.swin.depths, cfg.swin.num_heads, cfg.swin.window_size
            );
            println!(
                "bert:        hidden {} layers {} vocab {}",
                cfg.bert.hidden_size, cfg.bert.num_hidden_layers, cfg.bert.vocab_size
            );
            match &cfg.referent {
                Some(r) => println!(
                    "head:        referent over the dense trunk: E {} channels at 1/4, threshold {}",
                    r.dim, r.threshold
                ),
                None => println!(
                    "head:        C_v {} K {} lateral {} decoder {} margin {}",
                    cfg.head.c_v, cfg.head.k, cfg.head.lateral, cfg.head.decoder_dim, cfg.head.margin
                ),
            }
            println!("input:       {} x {} px", cfg.image_size, cfg.image_size);
            println!("cache codec: {} (features cached per photo, docs/library.md)", cfg.cache_codec()?.name());
            Ok(())
        }
    }
}

/// The snapshot folder of a GRSer repo, fetched (or found in the hub's cache) and checked.
fn fetch_model(repo: &str) -> Result<PathBuf> {
    let dir = Hub::from_env()?.fetch(repo, &MODEL_FILES, &[], &[catalog::CARD_FILE])?;
    checkpoint::check_model_dir(&dir, &Device::Cpu).with_context(|| format!("{repo} is not a photoseg model"))?;
    Ok(dir)
}

fn install(source: &str, name: Option<String>) -> Result<()> {
    let (dir, is_dir) = if Path::new(source).is_dir() {
        (PathBuf::from(source), true)
    } else if hub::is_repo_id(source) {
        (fetch_model(source)?, false)
    } else if Path::new(source).exists() {
        bail!("{source} is a file; give the model's folder (config.json, model.safetensors, tokenizer.json)");
    } else {
        bail!("no folder {source} here, and it is not a Hugging Face repo id (owner/name)");
    };
    let name = name.unwrap_or_else(|| catalog::default_name(hub::split_revision(source).0, is_dir));
    let catalog = Catalog::open()?;
    let check = |d: &Path| -> Result<()> {
        checkpoint::check_model_dir(d, &Device::Cpu).map(drop).with_context(|| format!("{source} cannot be installed"))
    };
    let installed = catalog.install(&dir, &name, check)?;
    catalog.set_active(&name)?;
    let cfg = checkpoint::read_config(&installed)?;
    println!("installed {name} in {} and made it the active model", installed.display());
    if !cfg.description.is_empty() {
        println!("{name}: {}", cfg.description);
    }
    if cfg.description.contains(pretrained::UNTRAINED) {
        eprintln!(
            "warning: {name}'s head is untrained, so it finds nothing yet; train it with `photoseg train --model`"
        );
    }
    println!(
        "run `photoseg index` to index the library for it (a running `photoseg daemon` started without --model \
         does so by itself and switches to it when done)"
    );
    Ok(())
}

fn list() -> Result<()> {
    let catalog = Catalog::open()?;
    // A choice that names a removed model is said, and the list still shown.
    let active = catalog.active().unwrap_or_else(|e| {
        eprintln!("photoseg: {e:#}");
        Active::Builtin { chosen: false }
    });
    let mark = |on: bool| if on { "*" } else { " " };
    let describe =
        |dir: &Path| checkpoint::read_config(dir).map(|c| c.description).unwrap_or_else(|e| format!("{e:#}"));
    let mut out = String::new();
    let builtin = matches!(active, Active::Builtin { .. });
    out += &format!(
        "{} {:<24} the built-in demo model: photoseg's synthetic world of coloured shapes only\n",
        mark(builtin),
        catalog::BUILTIN
    );
    if let Active::HandPlaced(dir) = &active {
        out += &format!("* {:<24} {} (placed by hand; {})\n", "model", dir.display(), describe(dir));
    }
    for name in catalog.installed()? {
        let on = matches!(&active, Active::Installed(a) if *a == name);
        out += &format!("{} {name:<24} {}\n", mark(on), describe(&catalog.model_dir(&name)));
    }
    super::print_out(&out)
}

/// A Swin checkpoint file from a file, a folder or a hub repo.
fn swin_source(src: &str) -> Result<PathBuf> {
    const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
    let path = Path::new(src);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else if hub::is_repo_id(src) {
        Hub::from_env()?.fetch(src, &[], &[&WEIGHTS], &[])?
    } else {
        bail!("the Swin checkpoint {src} does not exist (a file, a folder or a Hugging Face repo id)");
    };
    WEIGHTS
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .with_context(|| format!("the Swin checkpoint folder {} has no {}", dir.display(), WEIGHTS.join(" or ")))
}

/// A BERT checkpoint's config, weights and tokenizer from a folder, a weights file with the two others
/// beside it, or a hub repo.
fn bert_source(src: &str) -> Result<BertFiles> {
    const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
    let path = Path::new(src);
    let (dir, weights) = if path.is_file() {
        (path.parent().unwrap_or(Path::new(".")).to_path_buf(), Some(path.to_path_buf()))
    } else if path.is_dir() {
        (path.to_path_buf(), None)
    } else if hub::is_repo_id(src) {
        (Hub::from_env()?.fetch(src, &["config.json", "tokenizer.json"], &[&WEIGHTS], &[])?, None)
    } else {
        bail!("the BERT checkpoint {src} does not exist (a folder, a weights file or a Hugging Face repo id)");
    };
    let weights =
        match weights {
            Some(w) => w,
            None => WEIGHTS.iter().map(|f| dir.join(f)).find(|p| p.is_file()).with_context(|| {
                format!("the BERT checkpoint folder {} has no {}", dir.display(), WEIGHTS.join(" or "))
            })?,
        };
    let files = BertFiles { config: dir.join("config.json"), weights, tokenizer: dir.join("tokenizer.json") };
    for (what, file) in [("config", &files.config), ("tokenizer", &files.tokenizer)] {
        if !file.is_file() {
            bail!("the BERT checkpoint {src} has no {what} {}", file.display());
        }
    }
    Ok(files)
}

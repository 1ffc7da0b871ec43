//! `photoseg model info DIR`: what a model directory holds, loaded for real (a broken model fails here
//! with the tensor or file it lacks, not later in a query).
use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Subcommand;

use crate::model::checkpoint;

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
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
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

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
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
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
            println!(
                "head:        C_v {} K {} lateral {} decoder {} margin {}",
                cfg.head.c_v, cfg.head.k, cfg.head.lateral, cfg.head.decoder_dim, cfg.head.margin
            );
            println!("input:       {} x {} px", cfg.image_size, cfg.image_size);
            Ok(())
        }
    }
}

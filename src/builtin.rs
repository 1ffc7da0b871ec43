//! The built-in demo model, embedded in the binary so `photoseg demo` and `photoseg query` work on a
//! fresh machine with nothing downloaded. It was trained by photoseg itself on its synthetic world of
//! coloured shapes (docs/builtin-model.md gives the command, data, seed, time and held-out scores) and
//! knows nothing about real photos: commands that fall back to it say so.
//!
//! The files are written once to `$XDG_DATA_HOME/photoseg/builtin/<digest>/` so that every code path
//! loads models the same way, from a directory, and the feature cache ties features to these weights.
use std::path::PathBuf;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::model::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

const CONFIG: &[u8] = include_bytes!("../models/builtin/config.json");
const WEIGHTS: &[u8] = include_bytes!("../models/builtin/model.safetensors");
const TOKENIZER: &[u8] = include_bytes!("../models/builtin/tokenizer.json");

/// The built-in model as a model directory, written on first use (atomically: a temporary folder, then
/// a rename).
pub fn model_dir() -> Result<PathBuf> {
    let mut h = Sha256::new();
    for part in [CONFIG, WEIGHTS, TOKENIZER] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let root = crate::library::paths::model_dir()?.with_file_name("builtin");
    let dir = root.join(&digest);
    if dir.join(WEIGHTS_FILE).is_file() {
        return Ok(dir);
    }
    let tmp = root.join(format!(".{digest}.{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for (name, bytes) in [(CONFIG_FILE, CONFIG), (WEIGHTS_FILE, WEIGHTS), (TOKENIZER_FILE, TOKENIZER)] {
        std::fs::write(tmp.join(name), bytes)
            .with_context(|| format!("writing the built-in model to {}", tmp.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process won the race: use its copy.
        std::fs::remove_dir_all(&tmp).ok();
        if !dir.join(WEIGHTS_FILE).is_file() {
            return Err(e).with_context(|| format!("installing the built-in model in {}", dir.display()));
        }
    }
    Ok(dir)
}

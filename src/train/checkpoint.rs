//! A training run's checkpoints: `out/ckpt-<step>/` holds a model directory, the optimizer's moments
//! and the next step, and `out/latest` names the newest. Together with steps drawn from (seed, t)
//! alone ([`super::batch`]), that is all a run needs to resume exactly where it stopped.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::Trainer;
use crate::model::checkpoint::{save_model_dir, WEIGHTS_FILE};

const STATE_FILE: &str = "state.json";
const OPTIM_FILE: &str = "optimizer.safetensors";
const LATEST_FILE: &str = "latest";

/// What a checkpoint's `state.json` holds besides the weights and the optimizer's moments.
#[derive(Serialize)]
struct State<'a> {
    next_step: usize,
    train: &'a TrainConfig,
}

/// The part of a `state.json` resuming reads: the next step and what identifies the run. The rest is
/// not read, so a checkpoint whose settings name a field this build no longer has still resumes.
#[derive(Deserialize)]
struct SavedState {
    next_step: usize,
    train: SavedRun,
}

#[derive(Deserialize)]
struct SavedRun {
    steps: usize,
    seed: u64,
}

impl Trainer {
    /// Resumes from `out`'s latest checkpoint, if there is one; `Ok(false)` when there is none.
    pub fn resume(&mut self, out: &Path) -> Result<bool> {
        let Some(dir) = latest_checkpoint(out)? else { return Ok(false) };
        self.varmap.load(dir.join(WEIGHTS_FILE)).with_context(|| format!("loading weights from {}", dir.display()))?;
        self.opt.load(&dir.join(OPTIM_FILE))?;
        let state: SavedState = serde_json::from_str(&std::fs::read_to_string(dir.join(STATE_FILE))?)
            .with_context(|| format!("reading {}", dir.join(STATE_FILE).display()))?;
        if state.train.steps != self.cfg.steps || state.train.seed != self.cfg.seed {
            bail!(
                "checkpoint in {} was made with {} steps and seed {}, this run asks for {} and {}: use another --out",
                out.display(),
                state.train.steps,
                state.train.seed,
                self.cfg.steps,
                self.cfg.seed
            );
        }
        self.step = state.next_step;
        Ok(true)
    }

    /// Writes `out/ckpt-<step>/` (model directory + optimizer + state), then points `out/latest` at it
    /// (an atomic rename), then removes older checkpoints: a kill at any moment leaves a usable one.
    pub fn save(&self, out: &Path) -> Result<PathBuf> {
        let name = format!("ckpt-{:07}", self.step);
        let dir = out.join(&name);
        save_model_dir(&self.varmap, &self.model_cfg, &self.tokenizer, &dir)?;
        self.opt.save(&dir.join(OPTIM_FILE))?;
        let state = State { next_step: self.step, train: &self.cfg };
        std::fs::write(dir.join(STATE_FILE), serde_json::to_string_pretty(&state)?)?;
        let tmp = out.join(".latest.tmp");
        std::fs::write(&tmp, &name)?;
        std::fs::rename(&tmp, out.join(LATEST_FILE))?;
        for entry in std::fs::read_dir(out)? {
            let entry = entry?;
            let n = entry.file_name().to_string_lossy().to_string();
            if n.starts_with("ckpt-") && n != name {
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
        Ok(dir)
    }
}

/// The checkpoint `out/latest` points at, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let latest = out.join(LATEST_FILE);
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).with_context(|| format!("reading {}", latest.display()))?;
    let dir = out.join(name.trim());
    if !dir.is_dir() {
        bail!("{} names {}, which does not exist", latest.display(), dir.display());
    }
    Ok(Some(dir))
}

//! What a training run is asked to do: which part of GRSer it trains ([`Stage`]) and every setting of
//! one stage ([`TrainConfig`]), with its checks and learning-rate schedule. Apart from the trainer so a
//! recipe can be read and checked against the model before any tensor is made.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::optim::AdamWConfig;
use crate::model::grser::Config as ModelConfig;

/// Which part of GRSer a run trains (docs/model.md, "Training in stages").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Everything at once with the referring objective (the paper's way).
    #[default]
    Joint,
    /// The backbone and neck alone, taught the colour, shape and size of every object at every 1/4 cell
    /// by a training-only decoder ([`attributes::DenseDecoder`](super::attributes::DenseDecoder)), on
    /// photos turned by the symmetries of the square. Needs attribute labels (the synthetic world has
    /// them).
    Features,
    /// The referring objective with Swin frozen: its stage outputs are computed once per photo and kept,
    /// so a step costs the neck, the text encoder and the head only.
    Head,
}

/// Training settings: a stage of a [`recipe`](super::recipe). Defaults follow the paper where it gives
/// one, and a field a recipe leaves out takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps in all (T).
    pub steps: usize,
    /// Groups per step (paper: 4).
    pub groups_per_step: usize,
    /// Photos per group, positives:negatives 1:1 (paper: 8; must not exceed the head's K).
    pub group_size: usize,
    pub optim: AdamWConfig,
    /// Weight of the mirror (anti-expression) cross entropy.
    pub lambda_mirror: f64,
    /// Weight of the Dice term on positives (not in the paper; 0 gives the paper's objective).
    #[serde(default)]
    pub dice: f64,
    /// Weight of the cross entropy on negatives against an all-background mask (not in the paper, whose CE
    /// sees positives only; 0 gives the paper's objective). Without it nothing asks the language map to
    /// stay dark on a hard negative, and the decision has no evidence to learn from: docs/model.md.
    #[serde(default)]
    pub neg_ce: f64,
    /// Weight of the term keeping L' and L'_anti 2m apart (not in the paper; 0 gives its objective).
    #[serde(default)]
    pub separation: f64,
    /// Weight of the language-map supervision ([`loss::language_map`](super::loss::language_map); not in
    /// the paper, 0 gives its objective): M_l itself must light up the referred object and stay dark on
    /// negatives.
    #[serde(default)]
    pub language_map: f64,
    /// Weight of the dense attribute supervision ([`attributes`](super::attributes); not in the paper, 0 gives its
    /// objective). Needs labels in the training set (the synthetic world has them).
    #[serde(default)]
    pub attributes: f64,
    /// Share of steps for linear warm-up; then polynomial decay (power 0.9, as LAVT) to 0.
    pub warmup: f64,
    /// One group in `small_group_every` is drawn smaller than `group_size` (2..group_size photos), so the
    /// decoder also learns the zero maps of albums smaller than K. 0 disables.
    pub small_group_every: usize,
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// What this run trains.
    #[serde(default)]
    pub stage: Stage,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            groups_per_step: 4,
            group_size: 8,
            optim: AdamWConfig::default(),
            lambda_mirror: 0.5,
            dice: 1.0,
            neg_ce: 1.0,
            separation: 1.0,
            language_map: 1.0,
            attributes: 0.0,
            warmup: 0.05,
            small_group_every: 4,
            seed: 0,
            checkpoint_every: 100,
            stage: Stage::Joint,
        }
    }
}

impl TrainConfig {
    /// Refuses settings `model_cfg` cannot train, before any work is done (a recipe checks every stage
    /// before its first one starts).
    pub fn check(&self, model_cfg: &ModelConfig) -> Result<()> {
        if self.group_size > model_cfg.head.k {
            bail!("group_size {} is larger than the head's K = {}", self.group_size, model_cfg.head.k);
        }
        if self.group_size < 2 {
            bail!("group_size {}: a group needs at least 2 photos (one positive, one negative)", self.group_size);
        }
        if self.groups_per_step == 0 {
            bail!("groups_per_step is 0: a step needs a group");
        }
        if self.checkpoint_every == 0 {
            bail!("checkpoint_every is 0: give the steps between checkpoints");
        }
        if model_cfg.referent.is_some() && self.stage == Stage::Joint {
            bail!("a model with a referent head trains in stages: a `features` stage, then a `head` stage");
        }
        Ok(())
    }

    /// Whether the stage learns from dense attribute labels (the `features` stage, or `attributes` > 0),
    /// which only the synthetic world has.
    pub fn needs_attribute_labels(&self) -> bool {
        self.stage == Stage::Features || self.attributes > 0.0
    }

    /// Learning rate at step `t` (0-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        let warm = ((self.steps as f64) * self.warmup).round().max(1.0);
        let t = t as f64;
        if t < warm {
            return self.optim.lr * (t + 1.0) / warm;
        }
        let rest = (self.steps as f64 - warm).max(1.0);
        self.optim.lr * (1.0 - (t - warm) / rest).max(0.0).powf(0.9)
    }
}

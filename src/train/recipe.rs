//! Training recipes: one TOML file holds every knob of a model's training, the model's shape and each
//! stage in order, so `photoseg train --recipe FILE --data DIR --out DIR` reproduces a model with one
//! command (`recipes/builtin.toml` is one).
//!
//! ```toml
//! [model]
//! preset = "builtin"          # or "paper"
//! conv_stem = 32              # optional shape changes, as docs/model.md lists them
//! center_v = true
//! position = true
//!
//! [[stage]]
//! name = "features"           # the stage's folder under --out
//! [stage.train]               # a TrainConfig: fields left out take their defaults
//! stage = "features"
//! steps = 1800
//! optim = { lr = 2e-3, weight_decay = 1e-4 }
//! ```
//!
//! With a top-level `init = "DIR"` (a model directory, relative to the recipe file) the first stage
//! starts from that model's weights. Each stage starts from the previous stage's final weights and
//! writes its checkpoints to `OUT/NAME/`, so a killed run resumes in the stage it was in; unknown keys are refused, so a typo
//! cannot silently fall back to a default.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use crate::model::grser::{Config as ModelConfig, DecisionInput};

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// A model directory (same shape) the first stage starts from, relative to the recipe file; absent:
    /// a random initialisation.
    #[serde(default)]
    pub init: Option<PathBuf>,
    pub model: ModelRecipe,
    /// The stages, run in order.
    #[serde(rename = "stage")]
    pub stages: Vec<StageRecipe>,
}

/// The preset a recipe's model starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelPreset {
    Builtin,
    Paper,
}

/// The model's shape: a preset and the documented changes to it (docs/model.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecipe {
    pub preset: ModelPreset,
    /// Side photos are read at (a multiple of 32).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Width of a convolutional stem in place of Swin's patch projection.
    #[serde(default)]
    pub conv_stem: Option<usize>,
    #[serde(default)]
    pub center_v: bool,
    #[serde(default)]
    pub position: bool,
    #[serde(default)]
    pub lateral: Option<usize>,
    #[serde(default)]
    pub cache_codec: Option<String>,
    /// What the decision pools (`head.decision`; the preset's when absent).
    #[serde(default)]
    pub decision: Option<DecisionInput>,
    /// The referent head over a dense trunk in place of the neck and TQM head (docs/model.md).
    #[serde(default)]
    pub referent: bool,
}

/// One stage: a name (its folder) and its training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecipe {
    pub name: String,
    pub train: TrainConfig,
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading recipe {}", path.display()))?;
        let mut recipe: Recipe = toml::from_str(&text).with_context(|| format!("recipe {}", path.display()))?;
        if let Some(init) = recipe.init.as_mut().filter(|p| p.is_relative()) {
            *init = path.parent().unwrap_or(Path::new(".")).join(&*init);
        }
        recipe.check().with_context(|| format!("recipe {}", path.display()))?;
        Ok(recipe)
    }

    fn check(&self) -> Result<()> {
        if self.stages.is_empty() {
            bail!("no [[stage]]: nothing to train");
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.stages {
            let ok = !s.name.is_empty() && s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok || s.name == "model" {
                bail!("stage name {:?}: use letters, digits, - and _ (and not \"model\")", s.name);
            }
            if !names.insert(&s.name) {
                bail!("two stages are named {:?}", s.name);
            }
            if s.train.steps == 0 {
                bail!("stage {:?} has 0 steps", s.name);
            }
        }
        Ok(())
    }

    /// The model configuration for a tokenizer of `vocab_size` entries.
    pub fn model_config(&self, vocab_size: usize) -> Result<ModelConfig> {
        let m = &self.model;
        let mut cfg = match m.preset {
            ModelPreset::Builtin => ModelConfig::builtin(vocab_size),
            ModelPreset::Paper => ModelConfig::paper(),
        };
        if let Some(px) = m.image_size {
            if !(32..=1024).contains(&px) || px % 32 != 0 {
                bail!("image_size {px}: give a multiple of 32 from 32 to 1024");
            }
            cfg.image_size = px;
            cfg.swin.img_size = Some(px);
        }
        cfg.swin.conv_stem = m.conv_stem.filter(|&w| w > 0);
        cfg.swin.stem_batch_norm = cfg.swin.conv_stem.is_some();
        cfg.head.center_v = m.center_v;
        if m.position {
            // Swin's grid: the patch embedding divides by 4 (rounding up), each of two merges by 2.
            cfg.head.position_grid = Some(cfg.image_size.div_ceil(4).div_ceil(2).div_ceil(2));
        }
        if let Some(l) = m.lateral {
            cfg.head.lateral = l;
        }
        if let Some(d) = m.decision {
            cfg.head.decision = d;
        }
        if m.referent {
            cfg.referent = Some(crate::model::referent::ReferentConfig::default());
        }
        if let Some(codec) = &m.cache_codec {
            if crate::model::codec::FeatureCodec::from_name(codec).is_none() {
                bail!("unknown cache codec {codec:?}");
            }
            cfg.cache_codec = Some(codec.clone());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Stage;

    #[test]
    fn a_recipe_reads_its_stages_with_defaults_and_refuses_typos() {
        let text = r#"
            [model]
            preset = "builtin"
            conv_stem = 32
            position = true
            decision = "maps"

            [[stage]]
            name = "features"
            [stage.train]
            stage = "features"
            steps = 10
            optim = { lr = 2e-3 }

            [[stage]]
            name = "head"
            [stage.train]
            stage = "head"
            steps = 5
        "#;
        let r: Recipe = toml::from_str(text).unwrap();
        r.check().unwrap();
        assert_eq!(r.stages.len(), 2);
        assert_eq!(r.stages[0].train.stage, Stage::Features);
        assert_eq!(r.stages[0].train.optim.lr, 2e-3);
        // Left out: the defaults.
        assert_eq!(r.stages[0].train.optim.weight_decay, TrainConfig::default().optim.weight_decay);
        assert_eq!(r.stages[1].train.group_size, TrainConfig::default().group_size);
        let cfg = r.model_config(40).unwrap();
        assert_eq!(cfg.swin.conv_stem, Some(32));
        assert_eq!(cfg.head.position_grid, Some(8));
        assert!(!cfg.head.center_v);
        assert_eq!(cfg.head.decision, DecisionInput::Maps);

        let typo = text.replace("steps = 5", "step = 5");
        let err = toml::from_str::<Recipe>(&typo).unwrap_err().to_string();
        assert!(err.contains("step"), "{err}");
        assert_eq!(r.init, None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, format!("init = \"../models/base\"\n{text}")).unwrap();
        assert_eq!(Recipe::load(&file).unwrap().init, Some(dir.path().join("../models/base")));
        let twice = text.replace("name = \"head\"", "name = \"features\"");
        let err = toml::from_str::<Recipe>(&twice).unwrap().check().unwrap_err().to_string();
        assert!(err.contains("two stages"), "{err}");
    }

    #[test]
    fn the_built_in_models_recipe_reads_and_makes_a_referent_model() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/builtin.toml");
        let recipe = Recipe::load(&path).unwrap();
        let stages: Vec<Stage> = recipe.stages.iter().map(|s| s.train.stage).collect();
        assert_eq!(stages, vec![Stage::Features, Stage::Head]);
        let cfg = recipe.model_config(40).unwrap();
        assert!(cfg.referent.is_some() && cfg.swin.conv_stem == Some(32) && cfg.swin.stem_batch_norm);
    }
}

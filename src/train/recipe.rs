//! Training recipes: one TOML file holds every knob of a model's training, the model's shape and each
//! stage in order, so `photoseg train --recipe FILE --data DIR --out DIR` reproduces a model with one
//! command. `recipes/builtin.toml` is the built-in model's, and the one `photoseg train` runs when given
//! no `--recipe` (it is compiled in).
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
//! writes its checkpoints to `OUT/NAME/`, so a killed run resumes in the stage it was in. Unknown keys
//! are refused, so a typo cannot silently fall back to a default; every stage is checked against the
//! model before the first one starts, so a mistake in the last stage does not wait hours to show.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use crate::model::codec::FeatureCodec;
use crate::model::grser::{Config as ModelConfig, DecisionInput};

/// The built-in model's recipe (`recipes/builtin.toml`), compiled in: what `photoseg train` runs
/// without `--recipe`.
pub const BUILTIN: &str = include_str!("../../recipes/builtin.toml");

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
    /// The built-in model's shape (small Swin, small BERT on the synthetic vocabulary, 128 px).
    Builtin,
    /// The paper's shape (Swin-B, BERT-base, 416 px): for a GPU. `photoseg train --tokenizer`,
    /// `--swin-weights` and `--bert-weights` give it the public checkpoints; without a tokenizer BERT-base
    /// reads the synthetic vocabulary (from scratch).
    Paper,
}

/// The model's shape: a preset and the documented changes to it (docs/model.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecipe {
    pub preset: ModelPreset,
    /// Side photos are read at (a multiple of 32 from 32 to 1024; the preset's when absent). Photos are
    /// resized to it, so a larger side gives small objects more cells.
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Width of a convolutional stem, with BatchNorm, in place of Swin's patch projection
    /// (`swin.conv_stem`); absent or 0: Swin's own.
    #[serde(default)]
    pub conv_stem: Option<usize>,
    /// Standardise V's channels over each photo's positions before TQM (`head.center_v`).
    #[serde(default)]
    pub center_v: bool,
    /// A learnt position embedding added to V before TQM (`head.position_grid`), so expressions can say
    /// "on the left".
    #[serde(default)]
    pub position: bool,
    /// Channels of each lateral map the decoder reads besides z (`head.lateral`; the preset's when absent).
    #[serde(default)]
    pub lateral: Option<usize>,
    /// The codec the library caches the model's features in (`cache_codec`: f16, int8 or lr8;
    /// docs/library.md); absent: f16.
    #[serde(default)]
    pub cache_codec: Option<String>,
    /// What the decision pools (`head.decision`; the preset's when absent).
    #[serde(default)]
    pub decision: Option<DecisionInput>,
    /// The referent head over a dense trunk in place of the neck and the TQM head (docs/model.md); such a
    /// model trains in stages, `features` then `head`.
    #[serde(default)]
    pub referent: bool,
    /// How the referent head combines the words' matches at a cell (`referent.words`: `sum` or `all`;
    /// `sum` when absent).
    #[serde(default)]
    pub referent_words: Option<crate::model::referent::WordMatch>,
}

/// One stage: a name (its folder) and its training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecipe {
    pub name: String,
    pub train: TrainConfig,
}

impl Recipe {
    /// Reads and checks a recipe file; every error names the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading recipe {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The built-in model's recipe ([`BUILTIN`]).
    pub fn builtin() -> Result<Self> {
        Self::parse(BUILTIN, Path::new("recipes/builtin.toml"))
    }

    /// Reads and checks a recipe's text; `path` is where it comes from (for errors, and the base of a
    /// relative `init`).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut recipe: Recipe = toml::from_str(text).with_context(|| format!("recipe {}", path.display()))?;
        if let Some(init) = recipe.init.as_mut().filter(|p| p.is_relative()) {
            *init = path.parent().unwrap_or(Path::new(".")).join(&*init);
        }
        recipe.check().with_context(|| format!("recipe {}", path.display()))?;
        Ok(recipe)
    }

    /// The names of the stages, in order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// Sets the steps of a one-stage recipe (`photoseg train --steps`). A recipe of several stages is
    /// refused: which stage a single number is meant for is not clear, and each stage's steps belong to
    /// its settings.
    pub fn set_steps(&mut self, steps: usize) -> Result<()> {
        match self.stages.as_mut_slice() {
            [only] => {
                if steps == 0 {
                    bail!("--steps 0: nothing to train");
                }
                only.train.steps = steps;
                Ok(())
            }
            stages => bail!(
                "--steps: the recipe has {} stages ({}); set each stage's steps in the recipe",
                stages.len(),
                self.stage_names().join(", ")
            ),
        }
    }

    fn check(&self) -> Result<()> {
        if self.stages.is_empty() {
            bail!("no [[stage]]: nothing to train");
        }
        // The vocabulary's size does not change what is checked.
        let model = self.model_config(1)?;
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
            s.train.check(&model).with_context(|| format!("stage {:?}", s.name))?;
        }
        Ok(())
    }

    /// The model configuration for a tokenizer of `vocab_size` entries.
    pub fn model_config(&self, vocab_size: usize) -> Result<ModelConfig> {
        let m = &self.model;
        let mut cfg = match m.preset {
            ModelPreset::Builtin => ModelConfig::builtin(vocab_size),
            ModelPreset::Paper => {
                let mut cfg = ModelConfig::paper();
                cfg.bert.vocab_size = vocab_size;
                cfg
            }
        };
        if let Some(px) = m.image_size {
            if !(32..=1024).contains(&px) || px % 32 != 0 {
                bail!("[model] image_size = {px}: give a multiple of 32 from 32 to 1024");
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
            if l == 0 {
                bail!("[model] lateral = 0: the decoder needs at least one channel a lateral map");
            }
            cfg.head.lateral = l;
        }
        if let Some(d) = m.decision {
            cfg.head.decision = d;
        }
        if m.referent {
            let words = m.referent_words.unwrap_or_default();
            cfg.referent = Some(crate::model::referent::ReferentConfig { words, ..Default::default() });
        } else if m.referent_words.is_some() {
            bail!("[model] referent_words without referent = true: only the referent head matches words");
        }
        if let Some(codec) = &m.cache_codec {
            if FeatureCodec::from_name(codec).is_none() {
                let known: Vec<&str> = FeatureCodec::ALL.iter().map(|c| c.name()).collect();
                bail!("[model] cache_codec = {codec:?}: unknown codec; one of {}", known.join(", "));
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
        // The compiled-in copy is the file.
        assert_eq!(Recipe::builtin().unwrap(), recipe);
    }

    /// The paper preset's recipe trains as the paper says (GRSER.md, "Training"): 416 x 416 input, one
    /// joint stage (a joint step draws its photos as they are: no augmentation), 4 groups of 8 photos,
    /// AdamW at 5e-5 with weight decay 0.01.
    #[test]
    fn the_paper_recipe_has_the_papers_input_and_settings() {
        let recipe = Recipe::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/paper.toml")).unwrap();
        let cfg = recipe.model_config(30522).unwrap();
        assert_eq!((cfg.image_size, cfg.swin.img_size, cfg.head.c_v, cfg.head.k), (416, None, 512, 8));
        let [only] = recipe.stages.as_slice() else { panic!("{} stages", recipe.stages.len()) };
        let t = &only.train;
        assert_eq!((t.stage, t.groups_per_step, t.group_size), (Stage::Joint, 4, 8));
        assert_eq!((t.optim.lr, t.optim.weight_decay), (5e-5, 0.01));
        assert!(!t.needs_attribute_labels());
    }

    /// Every recipe under recipes/ reads and passes its checks.
    #[test]
    fn every_committed_recipe_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Recipe::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                n += 1;
            }
        }
        assert!(n >= 2, "{n} recipes in {}", dir.display());
    }

    /// Every training setting and every documented change of the model's shape can be written in a
    /// recipe: a stage and a model with every field away from its default survive TOML unchanged.
    #[test]
    fn every_setting_is_reachable_from_toml() {
        let train = TrainConfig {
            steps: 7,
            groups_per_step: 3,
            group_size: 6,
            optim: crate::train::optim::AdamWConfig { lr: 1e-3, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.5 },
            lambda_mirror: 0.25,
            dice: 0.5,
            neg_ce: 0.75,
            separation: 2.0,
            language_map: 3.0,
            attributes: 1.5,
            warmup: 0.1,
            small_group_every: 3,
            seed: 9,
            checkpoint_every: 5,
            stage: Stage::Features,
        };
        let model = ModelRecipe {
            preset: ModelPreset::Paper,
            image_size: Some(384),
            conv_stem: Some(16),
            center_v: true,
            position: true,
            lateral: Some(4),
            cache_codec: Some("lr8".into()),
            decision: Some(DecisionInput::Maps),
            referent: true,
            referent_words: Some(crate::model::referent::WordMatch::All),
        };
        let recipe = Recipe { init: None, model, stages: vec![StageRecipe { name: "only".into(), train }] };
        let text = toml::to_string(&recipe).unwrap();
        assert_eq!(Recipe::parse(&text, Path::new("r.toml")).unwrap(), recipe, "{text}");
        let cfg = recipe.model_config(30522).unwrap();
        assert_eq!((cfg.image_size, cfg.swin.img_size, cfg.head.position_grid), (384, Some(384), Some(24)));
        assert_eq!((cfg.head.lateral, cfg.cache_codec.as_deref(), cfg.swin.conv_stem), (4, Some("lr8"), Some(16)));
        assert!(cfg.head.center_v && cfg.swin.stem_batch_norm);
        assert_eq!(cfg.referent.map(|r| r.words), Some(crate::model::referent::WordMatch::All));
    }

    const ONE_STAGE: &str = r#"
        [model]
        preset = "builtin"

        [[stage]]
        name = "joint"
        [stage.train]
        steps = 10
    "#;

    /// A recipe's mistakes are refused with the file and the key in the message, before any training.
    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = |text: &str| format!("{:#}", Recipe::parse(text, Path::new("dir/r.toml")).unwrap_err());
        let e = err(&ONE_STAGE.replace("steps = 10", "steps = 10\ngray_shape = 1.0"));
        assert!(e.contains("dir/r.toml") && e.contains("gray_shape"), "{e}");
        let e = err(&ONE_STAGE.replace("preset = \"builtin\"", "preset = \"builtin\"\nimage_size = 100"));
        assert!(e.contains("dir/r.toml") && e.contains("image_size = 100") && e.contains("multiple of 32"), "{e}");
        let e = err(&ONE_STAGE.replace("preset = \"builtin\"", "preset = \"builtin\"\ncache_codec = \"zip\""));
        assert!(e.contains("cache_codec") && e.contains("unknown codec") && e.contains("lr8"), "{e}");
        let e = err(&ONE_STAGE.replace("steps = 10", "steps = 10\ngroup_size = 9"));
        assert!(e.contains("stage \"joint\"") && e.contains("group_size 9"), "{e}");
        let e = err(&ONE_STAGE.replace("steps = 10", "steps = 10\ncheckpoint_every = 0"));
        assert!(e.contains("checkpoint_every"), "{e}");
        // A referent model cannot train jointly: said before the first stage starts.
        let e = err(&ONE_STAGE.replace("preset = \"builtin\"", "preset = \"builtin\"\nreferent = true"));
        assert!(e.contains("stage \"joint\"") && e.contains("`features` stage"), "{e}");
    }

    #[test]
    fn steps_are_set_from_the_command_line_only_in_a_one_stage_recipe() {
        let mut one = Recipe::parse(ONE_STAGE, Path::new("r.toml")).unwrap();
        one.set_steps(3).unwrap();
        assert_eq!(one.stages[0].train.steps, 3);
        assert!(one.set_steps(0).is_err());
        let mut two = Recipe::builtin().unwrap();
        let err = two.set_steps(3).unwrap_err().to_string();
        assert!(err.contains("2 stages (features, head)") && err.contains("each stage's steps"), "{err}");
    }
}

//! Which model a command uses, and the id that ties cached features to that model's exact weights.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::catalog::{Active, Catalog};
use crate::model::checkpoint::{self, CONFIG_FILE, WEIGHTS_FILE};
use crate::model::codec::FeatureCodec;
use crate::model::grser::Grser;

/// Environment variable naming a model directory (used when `--model` is not given).
pub const MODEL_ENV: &str = "PHOTOSEG_MODEL";

/// The model directory to use: `explicit` (`--model`), else `$PHOTOSEG_MODEL`, else the active model of
/// the data directory ([`crate::catalog`]: the one `photoseg model install` or `use` chose, else one
/// placed by hand in `$XDG_DATA_HOME/photoseg/model`), else the built-in demo model (with a note on
/// stderr when nobody chose it: it only knows the synthetic world).
pub fn resolve_model_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let (dir, chosen) = active_model_dir()?;
    if !chosen {
        eprintln!(
            "photoseg: no model installed ({} is empty); using the built-in demo model, which only knows \
             photoseg's synthetic world of coloured shapes. Install one with `photoseg model install`, or \
             pass --model DIR.",
            Catalog::open()?.models_dir().display()
        );
    }
    Ok(dir)
}

/// The active model of the data directory ([`crate::catalog`]), else the built-in one, and whether
/// anyone chose it (false: the built-in model because nothing is installed). The daemon asks again
/// every few seconds to follow `photoseg model install` and `use`.
pub fn active_model_dir() -> Result<(PathBuf, bool)> {
    let catalog = Catalog::open()?;
    match catalog.active()? {
        Active::Installed(name) => Ok((catalog.model_dir(&name), true)),
        Active::HandPlaced(dir) => Ok((dir, true)),
        Active::Builtin { chosen } => Ok((crate::builtin::model_dir()?, chosen)),
    }
}

/// A loaded model with where it came from and a digest of its files.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub grser: Arc<Grser>,
    pub dir: PathBuf,
    /// What commands call it: `builtin`, an installed model's name, else its folder.
    pub name: String,
    /// Lowercase hex SHA-256 of `config.json` and `model.safetensors` (see [`model_digest`]).
    pub digest: String,
}

impl LoadedModel {
    /// The backbone id of this model's features in its own codec, as a query engine reads them.
    pub fn own_backbone_id(&self) -> String {
        self.backbone_id(self.codec())
    }

    /// Loads `dir` on the GPU when photoseg was built with CUDA and one is present, else on the CPU.
    pub fn load(dir: &Path) -> Result<Self> {
        let device = Device::cuda_if_available(0)?;
        let digest = model_digest(dir)?;
        let grser = checkpoint::load_model_dir(dir, &device)?;
        let name = Catalog::open().map_or_else(|_| dir.display().to_string(), |c| c.name_of(dir));
        Ok(Self { grser: Arc::new(grser), dir: dir.to_path_buf(), name, digest })
    }

    /// The codec this model's features are cached in (its config's `cache_codec`, checked at load).
    pub fn codec(&self) -> FeatureCodec {
        self.grser.cfg.cache_codec().unwrap_or_default()
    }

    /// The backbone id features of this model in `codec` are cached under, e.g.
    /// `grser-416px-f16@3f2a9c0d5e1b7a46`. Any change of weights, config or codec changes it, so a new
    /// model re-indexes instead of reading another model's features.
    pub fn backbone_id(&self, codec: FeatureCodec) -> String {
        format!("grser-{}px-{}@{}", self.grser.cfg.image_size, codec.name(), &self.digest[..16])
    }
}

/// A model folder with the sizes and dates of its config and weights: what changes when another model
/// is chosen or one is installed again under the same name, found without reading the weights.
pub type ModelStamp = (PathBuf, Vec<Option<(u64, std::time::SystemTime)>>);

/// The [`ModelStamp`] of `dir`.
pub fn model_stamp(dir: &Path) -> ModelStamp {
    let files = [CONFIG_FILE, WEIGHTS_FILE]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
        .collect();
    (dir.to_path_buf(), files)
}

/// SHA-256 over `config.json` and `model.safetensors` (each length-prefixed), read in chunks so a
/// large checkpoint is never held twice in memory. The tokenizer is left out: it does not touch
/// the visual features.
pub fn model_digest(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for name in [CONFIG_FILE, WEIGHTS_FILE] {
        let path = dir.join(name);
        let mut file = std::fs::File::open(&path).with_context(|| {
            format!("cannot read model file {}; is {} a model directory?", path.display(), dir.display())
        })?;
        let len = file.metadata()?.len();
        h.update(len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).with_context(|| format!("cannot read model file {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

//! Reading public checkpoints into the names our modules ask for. The only file in `model` that opens files.
//!
//! - timm's safetensors (`swin_base_patch4_window12_384.ms_in22k`): already in our layout.
//! - Microsoft's original `.pth` (`swin_base_patch4_window12_384_22k.pth`, a pickled `{"model": state_dict}`):
//!   downsampling sits at the end of stage i there and at the start of stage i + 1 in timm, the classifier
//!   is `head.*`, and derived buffers (`relative_position_index`, `attn_mask`) are stored; [`rename_microsoft_swin`]
//!   maps it to timm's names, as timm's own `checkpoint_filter_fn` does.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// The timm name of a Microsoft Swin key, or `None` for keys we do not load (buffers, classifier).
pub fn rename_microsoft_swin(key: &str) -> Option<String> {
    if key.ends_with("relative_position_index") || key.ends_with("attn_mask") || key.starts_with("head.") {
        return None;
    }
    if let Some(rest) = key.strip_prefix("layers.") {
        let (stage, tail) = rest.split_once('.')?;
        if tail.starts_with("downsample.") {
            let stage: usize = stage.parse().ok()?;
            return Some(format!("layers.{}.{tail}", stage + 1));
        }
    }
    Some(key.to_string())
}

/// Swin weights from a timm `.safetensors` or a Microsoft `.pth`, as tensors named in timm's layout.
pub fn load_swin_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tensors: HashMap<String, Tensor> = match ext {
        "safetensors" => candle_core::safetensors::load(path, device)
            .with_context(|| format!("reading swin weights {}", path.display()))?,
        "pth" | "pt" | "bin" => {
            let raw = candle_core::pickle::read_all_with_key(path, Some("model"))
                .or_else(|_| candle_core::pickle::read_all(path))
                .with_context(|| format!("reading pytorch checkpoint {}", path.display()))?;
            let microsoft = raw.iter().any(|(k, _)| k == "layers.0.downsample.reduction.weight");
            raw.into_iter()
                .filter_map(|(k, t)| {
                    let k = if microsoft { rename_microsoft_swin(&k)? } else { k };
                    Some(t.to_device(device).map(|t| (k, t)))
                })
                .collect::<candle_core::Result<_>>()?
        }
        _ => bail!("unknown checkpoint format {}: expected .safetensors or .pth", path.display()),
    };
    // timm classification checkpoints carry `head.fc.*`; strip a wrapper prefix if there is one.
    let tensors = tensors
        .into_iter()
        .filter(|(k, _)| !k.starts_with("head."))
        .map(|(k, t)| (k.strip_prefix("model.").map(str::to_string).unwrap_or(k), t))
        .collect();
    Ok(tensors)
}

/// BERT weights from a Hugging Face `.safetensors` or `.bin`, in `BertModel`'s names: a `bert.` prefix
/// (pre-training checkpoints) is stripped, old `LayerNorm.gamma`/`beta` become `weight`/`bias`, and heads
/// (`cls.*`) are dropped.
pub fn load_bert_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let raw: Vec<(String, Tensor)> = match ext {
        "safetensors" => candle_core::safetensors::load(path, device)
            .with_context(|| format!("reading bert weights {}", path.display()))?
            .into_iter()
            .collect(),
        "bin" | "pth" | "pt" => candle_core::pickle::read_all(path)
            .with_context(|| format!("reading pytorch checkpoint {}", path.display()))?,
        _ => bail!("unknown checkpoint format {}: expected .safetensors or .bin", path.display()),
    };
    Ok(raw.into_iter().filter_map(|(k, t)| Some((rename_bert(&k)?, t))).collect())
}

/// `BertModel`'s name for a key of a Hugging Face BERT checkpoint, or `None` for keys GRSer does not use.
pub fn rename_bert(key: &str) -> Option<String> {
    let key = key.strip_prefix("bert.").unwrap_or(key);
    if key.starts_with("cls.") || key.ends_with("position_ids") || key == "embeddings.token_type_ids" {
        return None;
    }
    let key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias");
    Some(key)
}

/// File names of a GRSer model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Reads `config.json` of a model directory.
pub fn read_config(dir: &Path) -> Result<crate::model::grser::Config> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading model config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing model config {}", path.display()))
}

/// Replaces `config.json` of a model directory (a temporary file renamed over it: never half written).
pub fn write_config(dir: &Path, cfg: &crate::model::grser::Config) -> Result<()> {
    let tmp = dir.join(format!(".{CONFIG_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(cfg)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(CONFIG_FILE))
        .with_context(|| format!("replacing the config in {}", dir.display()))?;
    Ok(())
}

/// Loads a GRSer model directory (`config.json`, `model.safetensors`, `tokenizer.json`).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<crate::model::grser::Grser> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    let cfg = read_config(dir)?;
    cfg.cache_codec().with_context(|| format!("loading model from {}", dir.display()))?;
    let tok_path = dir.join(TOKENIZER_FILE);
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("reading tokenizer {}: {e}", tok_path.display()))?;
    let weights = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&weights, device)
        .with_context(|| format!("reading model weights {}", weights.display()))?;
    load_model(&cfg, tokenizer, tensors, device).with_context(|| format!("loading model from {}", dir.display()))
}

/// Loads a model directory and checks that its parts agree: [`load_model_dir`] finds every tensor the
/// config needs with its shape, and this also asks that the tokenizer's vocabulary is the size of BERT's
/// word embeddings (a tokenizer of another checkpoint would read words as the wrong rows, or past the
/// table). `photoseg model install` runs it before a model can be chosen.
pub fn check_model_dir(dir: &Path, device: &Device) -> Result<crate::model::grser::Grser> {
    let model = load_model_dir(dir, device)?;
    let tok_path = dir.join(TOKENIZER_FILE);
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("reading tokenizer {}: {e}", tok_path.display()))?;
    let tokens = tokenizer.get_vocab_size(true);
    if tokens != model.cfg.bert.vocab_size {
        bail!(
            "the tokenizer of {} has {tokens} tokens but its config.json says BERT's vocabulary has {} \
             (bert.vocab_size): the tokenizer belongs to another checkpoint",
            dir.display(),
            model.cfg.bert.vocab_size
        );
    }
    Ok(model)
}

/// Writes a model directory: weights of `varmap`, `cfg` as JSON and the tokenizer. Each file is written to a
/// temporary name and renamed, so a crash never leaves a half-written model behind.
pub fn save_model_dir(
    varmap: &candle_nn::VarMap,
    cfg: &crate::model::grser::Config,
    tokenizer: &tokenizers::Tokenizer,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating model directory {}", dir.display()))?;
    let tmp = |name: &str| dir.join(format!(".{name}.tmp"));
    varmap.save(tmp(WEIGHTS_FILE)).with_context(|| format!("writing weights into {}", dir.display()))?;
    std::fs::write(tmp(CONFIG_FILE), serde_json::to_string_pretty(cfg)?)?;
    tokenizer
        .save(tmp(TOKENIZER_FILE), false)
        .map_err(|e| anyhow::anyhow!("writing tokenizer into {}: {e}", dir.display()))?;
    for name in [WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE] {
        std::fs::rename(tmp(name), dir.join(name))?;
    }
    Ok(())
}

/// Builds a GRSer from in-memory weights (e.g. a model embedded in the binary).
pub fn load_model(
    cfg: &crate::model::grser::Config,
    tokenizer: tokenizers::Tokenizer,
    tensors: HashMap<String, Tensor>,
    device: &Device,
) -> Result<crate::model::grser::Grser> {
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Ok(crate::model::grser::Grser::new(cfg, tokenizer, vb)?)
}

/// A VarBuilder over in-memory tensors, converting to `dtype`.
pub fn var_builder(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_tensors(tensors, dtype, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_names_map_to_timm() {
        assert_eq!(
            rename_microsoft_swin("layers.0.downsample.reduction.weight").as_deref(),
            Some("layers.1.downsample.reduction.weight")
        );
        assert_eq!(
            rename_microsoft_swin("layers.2.blocks.3.attn.qkv.weight").as_deref(),
            Some("layers.2.blocks.3.attn.qkv.weight")
        );
        assert_eq!(rename_microsoft_swin("layers.1.blocks.1.attn_mask"), None);
        assert_eq!(rename_microsoft_swin("layers.1.blocks.1.attn.relative_position_index"), None);
        assert_eq!(rename_microsoft_swin("head.weight"), None);
        assert_eq!(rename_microsoft_swin("norm.weight").as_deref(), Some("norm.weight"));
    }

    #[test]
    fn bert_pretraining_names_map_to_bert_model() {
        assert_eq!(rename_bert("bert.embeddings.LayerNorm.gamma").as_deref(), Some("embeddings.LayerNorm.weight"));
        assert_eq!(rename_bert("cls.predictions.bias"), None);
        assert_eq!(
            rename_bert("encoder.layer.0.attention.self.query.weight").as_deref(),
            Some("encoder.layer.0.attention.self.query.weight")
        );
    }
}

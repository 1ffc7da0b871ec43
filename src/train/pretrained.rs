//! A paper-shaped GRSer from public checkpoints (`photoseg model init --preset paper`): Swin from a timm
//! or Microsoft checkpoint, BERT from a Hugging Face one with its config and tokenizer, and the rest (neck,
//! Triphasic Query Module, hierarchizer, decoder) freshly initialised. The head is what GRSer trains, so
//! the result finds nothing until `photoseg train --model DIR` trains it; its config's description and its
//! card (`README.md`) say so.
//!
//! Swin's shape is read from its weights (embedding width, blocks per stage, heads from the relative
//! position tables, window from their size, MLP ratio), so Swin-T, -S, -B and -L all fit; BERT's from its
//! `config.json` (the weights do not hold the number of attention heads). The head and the input size are
//! the paper's. Every Swin and BERT tensor the model needs must be in the checkpoints with its shape: a
//! checkpoint of another architecture is refused, never half loaded.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::init;
use crate::model::checkpoint::{self, TOKENIZER_FILE};
use crate::model::grser::{Config, Grser};
use crate::model::{swin, text};

/// The model card's file name.
pub const CARD_FILE: &str = "README.md";
/// How the description of a model this module wrote goes on after its origins; `photoseg train
/// --model` drops it from the trained model's, `photoseg model install` warns on it.
pub const UNTRAINED: &str = "; its head is freshly initialised";
/// The seed of the head's initial weights: the same checkpoints give the same model.
pub const HEAD_SEED: u64 = 0;

/// A Hugging Face BERT checkpoint: its `config.json`, weights and `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct BertFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

/// Where the backbones come from, as the card names them (a path or a repo id).
#[derive(Debug, Clone)]
pub struct Origins {
    pub swin: String,
    pub bert: String,
}

/// Writes the paper-shaped model into `out`, which must not exist: it is written beside it under a
/// hidden name and renamed when whole and loadable, so an error or a kill never leaves a half-written
/// `out`. Returns its config.
pub fn init_paper(swin: &Path, bert: &BertFiles, origins: &Origins, image_size: usize, out: &Path) -> Result<Config> {
    if out.exists() {
        bail!("{} already exists; give a new folder for the model", out.display());
    }
    let device = Device::Cpu;
    let swin_tensors = checkpoint::load_swin_tensors(swin, &device)
        .with_context(|| format!("the Swin checkpoint {}", origins.swin))?;
    let swin_cfg = swin_config(&swin_tensors, image_size).with_context(|| {
        format!("the Swin checkpoint {} is not a Swin Transformer in timm's or Microsoft's layout", origins.swin)
    })?;
    let bert_cfg = bert_config(&bert.config).with_context(|| format!("the BERT checkpoint {}", origins.bert))?;
    let tokenizer = tokenizers::Tokenizer::from_file(&bert.tokenizer)
        .map_err(|e| anyhow!("reading the tokenizer {}: {e}", bert.tokenizer.display()))?;
    let tokens = tokenizer.get_vocab_size(true);
    if tokens != bert_cfg.vocab_size {
        bail!(
            "the tokenizer {} has {tokens} tokens but BERT's config {} says its vocabulary has {} (vocab_size): \
             the tokenizer belongs to another checkpoint",
            bert.tokenizer.display(),
            bert.config.display(),
            bert_cfg.vocab_size
        );
    }
    let bert_tensors = checkpoint::load_bert_tensors(&bert.weights, &device)
        .with_context(|| format!("the BERT checkpoint {}", origins.bert))?;

    let mut cfg = Config::paper();
    cfg.swin = swin_cfg;
    cfg.bert = bert_cfg;
    cfg.image_size = image_size;
    cfg.description = format!(
        "GRSer in the paper's shape, Swin from {} and BERT from {}{UNTRAINED} (random, untrained): train it \
         before use",
        origins.swin, origins.bert
    );
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    Grser::new(&cfg, tokenizer.clone(), vb)?;
    init::pytorch_default(&varmap, HEAD_SEED, &device)?;
    let mut weights: HashMap<String, Tensor> = {
        let data = varmap.data().lock().expect("varmap lock");
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    };
    fill(&mut weights, "swin.", &swin_tensors, &origins.swin)?;
    fill(&mut weights, "text.", &bert_tensors, &origins.bert)?;

    crate::whole_dir::write(out, |tmp| {
        candle_core::safetensors::save(&weights, tmp.join(checkpoint::WEIGHTS_FILE))?;
        checkpoint::write_config(tmp, &cfg)?;
        tokenizer.save(tmp.join(TOKENIZER_FILE), false).map_err(|e| anyhow!("writing the tokenizer: {e}"))?;
        std::fs::write(tmp.join(CARD_FILE), card(&cfg, origins))?;
        checkpoint::check_model_dir(tmp, &device)?;
        Ok(())
    })
    .with_context(|| format!("writing the model into {}", out.display()))?;
    Ok(cfg)
}

/// Replaces every weight under `prefix` by the checkpoint's (`tensors`, named without the prefix); every
/// one must be there with its shape, except relative position tables, which the loader resizes to the
/// model's windows as timm does. The error lists the first few that are not.
fn fill(
    weights: &mut HashMap<String, Tensor>,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
    origin: &str,
) -> Result<()> {
    let mut names: Vec<String> = weights.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
    names.sort();
    let mut wrong = Vec::new();
    for name in names {
        let key = &name[prefix.len()..];
        let want = weights[&name].dims().to_vec();
        match tensors.get(key) {
            None => wrong.push(format!("{key} is missing")),
            Some(t) if t.dims() != want && !(key.ends_with("relative_position_bias_table") && t.rank() == 2) => {
                wrong.push(format!("{key} is {:?}, the model needs {want:?}", t.dims()))
            }
            Some(t) => {
                weights.insert(name.clone(), t.to_dtype(DType::F32)?);
            }
        }
    }
    if !wrong.is_empty() {
        let n = wrong.len();
        wrong.truncate(4);
        bail!("the checkpoint {origin} does not fit: {} ({n} tensors in all)", wrong.join("; "));
    }
    Ok(())
}

/// Swin's hyper-parameters read off its weights (timm's names).
pub fn swin_config(tensors: &HashMap<String, Tensor>, image_size: usize) -> Result<swin::Config> {
    let get = |name: &str| -> Result<&Tensor> {
        tensors.get(name).ok_or_else(|| {
            let mut some: Vec<&String> = tensors.keys().collect();
            some.sort();
            some.truncate(3);
            anyhow!("it has no {name} (its tensors are e.g. {some:?})")
        })
    };
    let proj = get("patch_embed.proj.weight")?;
    let &[embed_dim, in_chans, patch_size, _] = proj.dims() else {
        bail!("patch_embed.proj.weight is {:?}, not a 4-d convolution", proj.dims());
    };
    let mut depths = Vec::new();
    let mut num_heads = Vec::new();
    let mut window_size = 0;
    let mut mlp_ratio = 0.0;
    for stage in 0.. {
        let blocks =
            (0..).take_while(|b| tensors.contains_key(&format!("layers.{stage}.blocks.{b}.norm1.weight"))).count();
        if blocks == 0 {
            break;
        }
        let table = get(&format!("layers.{stage}.blocks.0.attn.relative_position_bias_table"))?;
        let &[cells, heads] = table.dims() else { bail!("a relative position table is {:?}", table.dims()) };
        let side = (cells as f64).sqrt().round() as usize;
        if side * side != cells || side % 2 == 0 {
            bail!("a relative position table has {cells} rows, not (2 x window - 1)^2");
        }
        if stage == 0 {
            window_size = side.div_ceil(2);
            let fc1 = get("layers.0.blocks.0.mlp.fc1.weight")?;
            mlp_ratio = fc1.dims()[0] as f64 / embed_dim as f64;
        }
        depths.push(blocks);
        num_heads.push(heads);
    }
    if depths.is_empty() {
        bail!("it has no blocks (layers.0.blocks.0.norm1.weight)");
    }
    Ok(swin::Config {
        patch_size,
        in_chans,
        embed_dim,
        depths,
        num_heads,
        window_size,
        mlp_ratio,
        img_size: Some(image_size),
        ..swin::Config::swin_b()
    })
}

/// BERT's `config.json` as [`text::Config`]; one of another model type is refused.
pub fn bert_config(path: &Path) -> Result<text::Config> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("reading BERT's config {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&raw).with_context(|| format!("parsing BERT's config {}", path.display()))?;
    if let Some(kind) = value.get("model_type").and_then(|v| v.as_str()) {
        if kind != "bert" {
            bail!("{} is the config of a {kind:?} model, not BERT", path.display());
        }
    }
    serde_json::from_value(value).with_context(|| format!("{} is not a BERT config", path.display()))
}

/// The model card: what the model is and, plainly, that its head has not been trained.
fn card(cfg: &Config, origins: &Origins) -> String {
    format!(
        "# GRSer from public checkpoints: its head is NOT trained\n\n\
         Written by `photoseg model init --preset paper`. The Swin backbone comes from `{}` and the BERT text \
         encoder from `{}`. The rest of GRSer (neck, Triphasic Query Module, hierarchizer, decoder) is freshly \
         initialised with random weights (seed {HEAD_SEED}) and has not been trained, so this model finds \
         nothing yet: train it with `photoseg train --model DIR` (docs/training.md) before installing it.\n\n\
         | part | shape |\n| --- | --- |\n\
         | Swin | embed {}, depths {:?}, heads {:?}, window {} |\n\
         | BERT | hidden {}, layers {}, vocabulary {} |\n\
         | head | C_v {}, K {}, lateral {}, decoder {} (the paper's) |\n\
         | input | {} x {} px |\n",
        origins.swin,
        origins.bert,
        cfg.swin.embed_dim,
        cfg.swin.depths,
        cfg.swin.num_heads,
        cfg.swin.window_size,
        cfg.bert.hidden_size,
        cfg.bert.num_hidden_layers,
        cfg.bert.vocab_size,
        cfg.head.c_v,
        cfg.head.k,
        cfg.head.lateral,
        cfg.head.decoder_dim,
        cfg.image_size,
        cfg.image_size
    )
}

//! Tiny public-style checkpoints written by the tests: a Swin in timm's names, a BERT in Hugging Face's
//! (`bert.` prefix, a `cls.` head, `config.json`, `tokenizer.json`), drawn from a seed. They are the
//! backbones of `Config::tiny`, so `photoseg model init` makes a small paper-headed model of them.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::grser::{Config, Grser};

use super::{fixture, seed_weights};

/// Tokens of the fixture tokenizer (`tests/fixtures/tokenizer`).
pub const VOCAB: usize = 60;

/// Paths of the checkpoints [`write`] made.
pub struct Checkpoints {
    /// timm-layout Swin safetensors.
    pub swin: PathBuf,
    /// A folder with BERT's `config.json`, `tokenizer.json` and `model.safetensors`.
    pub bert: PathBuf,
}

/// Writes `dir/swin/model.safetensors` and `dir/bert/{config.json,tokenizer.json,model.safetensors}`.
pub fn write(dir: &Path) -> Checkpoints {
    let varmap = VarMap::new();
    let tok = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    let cfg = Config::tiny(VOCAB);
    Grser::new(&cfg, tok, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    seed_weights(&varmap, 11);
    let all: HashMap<String, Tensor> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let part = |prefix: &str, rename: &str| -> HashMap<String, Tensor> {
        all.iter().filter_map(|(k, t)| Some((format!("{rename}{}", k.strip_prefix(prefix)?), t.clone()))).collect()
    };
    let swin_dir = dir.join("swin");
    std::fs::create_dir_all(&swin_dir).unwrap();
    let swin = swin_dir.join("model.safetensors");
    candle_core::safetensors::save(&part("swin.", ""), &swin).unwrap();

    let bert = dir.join("bert");
    std::fs::create_dir_all(&bert).unwrap();
    let mut bert_tensors = part("text.", "bert.");
    bert_tensors.insert("cls.predictions.bias".into(), Tensor::zeros(VOCAB, DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&bert_tensors, bert.join("model.safetensors")).unwrap();
    let mut config = serde_json::to_value(&cfg.bert).unwrap();
    config["model_type"] = "bert".into();
    config["architectures"] = serde_json::json!(["BertForMaskedLM"]);
    std::fs::write(bert.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(fixture("tokenizer/tokenizer.json"), bert.join("tokenizer.json")).unwrap();
    Checkpoints { swin, bert }
}

/// `photoseg` with `args` and `env`, its output.
pub fn photoseg(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_photoseg"));
    c.args(args).env("PHOTOSEG_NO_DAEMON", "1").env_remove("PHOTOSEG_MODEL").env_remove("HF_ENDPOINT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Its stderr, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Its stdout, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The names in `dir` (an empty list when it does not exist), sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

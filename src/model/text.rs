//! BERT (Devlin et al., 2019), the text encoder of GRSer, and the expression / anti-expression features.
//!
//! Weight names follow Hugging Face's `BertModel` (`embeddings.word_embeddings`, `encoder.layer.{i}.attention.self.query`,
//! ...), so `bert-base-uncased`'s safetensors load directly ([`crate::model::checkpoint::load_bert_tensors`]
//! strips a `bert.` prefix and renames old `gamma`/`beta`). candle-transformers has a BERT, but its layer
//! norm and softmax have no backward; this one uses [`super::ops`] so it can be fine-tuned.
//!
//! The sentence feature L is the mean of the last hidden states over the real (non-padding) tokens. The
//! anti-expression is the same sentence with the literal prefix `<no> ` (see [`anti_expression`]): a
//! WordPiece vocabulary splits it into `<`, `no`, `>`, so no new token and no change to a public
//! checkpoint's embedding table is needed; the model learns what the prefix means during training.
use candle_core::{bail, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

use super::ops::{gelu_erf, linear, linear_few_rows, softmax_last_dim, LayerNorm, Linear};

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

/// BERT hyper-parameters, field names as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: u32,
}

impl Config {
    /// `bert-base-uncased`: the paper's text encoder (C_l = 768).
    pub fn bert_base_uncased() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            pad_token_id: 0,
        }
    }

    /// A small BERT for tests and for the built-in model's tiny vocabulary.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            pad_token_id: 0,
        }
    }
}

/// The paper's anti-expression: the same sentence with the `<no>` prefix.
pub fn anti_expression(text: &str) -> String {
    format!("<no> {text}")
}

fn activation(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "gelu" => gelu_erf(x),
        "gelu_new" | "gelu_pytorch_tanh" => x.gelu(),
        "relu" => x.relu(),
        other => bail!("unsupported hidden_act {other:?} in bert config"),
    }
}

#[derive(Debug)]
struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?,
            position: candle_nn::embedding(cfg.max_position_embeddings, cfg.hidden_size, vb.pp("position_embeddings"))?,
            token_type: candle_nn::embedding(cfg.type_vocab_size, cfg.hidden_size, vb.pp("token_type_embeddings"))?,
            norm: LayerNorm::new(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, ids: &Tensor, types: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let pos = Tensor::arange(0u32, len as u32, ids.device())?;
        let x = self.word.forward(ids)?.add(&self.token_type.forward(types)?)?;
        let x = x.broadcast_add(&self.position.forward(&pos)?)?;
        self.norm.forward(&x)
    }
}

#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    act: String,
}

impl Layer {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let att = vb.pp("attention");
        Ok(Self {
            query: linear_few_rows(h, h, att.pp("self.query"))?,
            key: linear_few_rows(h, h, att.pp("self.key"))?,
            value: linear_few_rows(h, h, att.pp("self.value"))?,
            attn_out: linear_few_rows(h, h, att.pp("output.dense"))?,
            attn_norm: LayerNorm::new(h, eps, att.pp("output.LayerNorm"))?,
            intermediate: linear_few_rows(h, i, vb.pp("intermediate.dense"))?,
            output: linear_few_rows(i, h, vb.pp("output.dense"))?,
            out_norm: LayerNorm::new(h, eps, vb.pp("output.LayerNorm"))?,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act.clone(),
        })
    }

    /// `x`: `[B, T, H]`; `mask_bias`: `[B, 1, 1, T]`, 0 for tokens and a large negative for padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |y: Tensor| y.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous();
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?.broadcast_add(mask_bias)?;
        let ctx = softmax_last_dim(&scores)?.matmul(&v)?; // [B, heads, T, hd]
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, h))?;
        let x = self.attn_norm.forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        let y = self.output.forward(&activation(&self.act, &self.intermediate.forward(&x)?)?)?;
        self.out_norm.forward(&(y + x)?)
    }
}

/// Hugging Face's `BertModel` (pooler loaded only if present: GRSer does not use it).
#[derive(Debug)]
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    cfg: Config,
}

impl Bert {
    /// Whether the weights are a training run's variables, whose values change between two calls.
    pub fn is_trained_now(&self) -> bool {
        self.embeddings.word.embeddings().is_variable()
    }

    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            bail!("bert config: hidden_size {} not divisible by {} heads", cfg.hidden_size, cfg.num_attention_heads);
        }
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, vb.pp("encoder.layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if vb.contains_tensor("pooler.dense.weight") {
            Some(linear(cfg.hidden_size, cfg.hidden_size, vb.pp("pooler.dense"))?)
        } else {
            None
        };
        Ok(Self { embeddings: Embeddings::new(cfg, vb.pp("embeddings"))?, layers, pooler, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Last hidden states `[B, T, H]` for `ids`, `types`, `mask` (all `[B, T]`, mask 1 for tokens, 0 for padding).
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            bail!("expression has {t} tokens, more than bert's {} positions", self.cfg.max_position_embeddings);
        }
        // HF: (1 - mask) * finfo(f32).min, added to every query's scores.
        let mut x = self.embeddings.forward(ids, types)?;
        let keep = mask.to_dtype(x.dtype())?;
        let mask_bias = ((1.0 - keep)? * f32::MIN as f64)?.reshape((b, 1, 1, t))?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }

    /// `tanh(W h_[CLS] + b)`, Hugging Face's pooler output.
    pub fn pool_cls(&self, hidden: &Tensor) -> Result<Tensor> {
        let Some(pooler) = &self.pooler else { bail!("this bert checkpoint has no pooler") };
        pooler.forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()
    }
}

/// Mean of `hidden` (`[B, T, H]`) over the tokens where `mask` (`[B, T]`) is 1.
pub fn masked_mean(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?; // [B, T, 1]
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1.0, f64::MAX)?;
    sum.broadcast_div(&count)
}

/// Token ids of a batch of sentences, padded to the longest.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Tensor,
    pub types: Tensor,
    pub mask: Tensor,
}

/// Tokeniser + BERT: sentences in, sentence features `[B, C_l]` out.
#[derive(Debug)]
pub struct TextEncoder {
    pub bert: Bert,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
}

impl TextEncoder {
    pub fn new(bert: Bert, tokenizer: tokenizers::Tokenizer, device: &Device) -> Self {
        Self { bert, tokenizer, device: device.clone() }
    }

    pub fn tokenize(&self, texts: &[&str]) -> anyhow::Result<Batch> {
        let max = self.bert.config().max_position_embeddings;
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        let t = enc.iter().map(|e| e.get_ids().len().min(max)).max().unwrap_or(0).max(1);
        let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        let pad = self.bert.config().pad_token_id;
        for e in &enc {
            let n = e.get_ids().len().min(max);
            ids.extend_from_slice(&e.get_ids()[..n]);
            types.extend(e.get_type_ids()[..n].iter().copied());
            mask.extend(std::iter::repeat_n(1u32, n));
            ids.extend(std::iter::repeat_n(pad, t - n));
            types.extend(std::iter::repeat_n(0u32, t - n));
            mask.extend(std::iter::repeat_n(0u32, t - n));
        }
        let b = enc.len();
        Ok(Batch {
            ids: Tensor::from_vec(ids, (b, t), &self.device)?,
            types: Tensor::from_vec(types, (b, t), &self.device)?,
            mask: Tensor::from_vec(mask, (b, t), &self.device)?,
        })
    }

    /// Sentence features `[B, C_l]` (masked mean of the last hidden states).
    pub fn encode(&self, texts: &[&str]) -> anyhow::Result<Tensor> {
        let batch = self.tokenize(texts)?;
        let hidden = self.bert.forward(&batch.ids, &batch.types, &batch.mask)?;
        Ok(masked_mean(&hidden, &batch.mask)?)
    }

    /// (L, L_anti) for each expression: `[B, C_l]` each, computed in one batch.
    pub fn encode_with_anti(&self, texts: &[&str]) -> anyhow::Result<(Tensor, Tensor)> {
        let anti: Vec<String> = texts.iter().map(|t| anti_expression(t)).collect();
        let mut all: Vec<&str> = texts.to_vec();
        all.extend(anti.iter().map(String::as_str));
        let f = self.encode(&all)?;
        let b = texts.len();
        Ok((f.narrow(0, 0, b)?, f.narrow(0, b, b)?))
    }
}

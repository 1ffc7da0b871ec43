//! The referent head: per-word matching of the expression against every 1/4 cell of a photo, and the
//! decision read from the peak of that map (docs/model.md, "The referent head").
//!
//! Per photo, a small per-cell network φ turns the dense map (and the cell's position, so "left" and
//! "top" have something to match) into an embedding E that does not depend on the expression: the
//! indexer caches it. Per expression, every token's last hidden state goes through one linear layer to a
//! query vector and a bias, and the expression's query is their sum. A cell's mask logit is E · q + b:
//! a sum of word matches, so "red circle" is high only where both "red" and "circle" match, at the
//! object itself. A photo holds the referent when the peak of its logit map, averaged over 2 x 2 cells
//! (1/8 of the input), is above a threshold chosen on validation albums.
//!
//! Because the map is linear in E, the decision can read E averaged to 1/8 (a quarter of the values) and
//! get exactly the averaged map; the masks read E itself, for the positives only.
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2d, VarBuilder};
use serde::{Deserialize, Serialize};

use super::ops::{linear, Linear};

/// The referent head's choices, in the model's config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferentConfig {
    /// Channels of the cached embedding E.
    pub dim: usize,
    /// A photo is positive when its peak score is above this (set on validation albums after training).
    pub threshold: f64,
}

impl Default for ReferentConfig {
    /// 32 channels (64 KB a photo in f16 at 128 px); threshold 0 (a logit: even odds) until calibrated.
    fn default() -> Self {
        Self { dim: 32, threshold: 0.0 }
    }
}

/// Width of φ's hidden layer.
const HIDDEN: usize = 64;

/// φ, the word projection and a global bias.
#[derive(Debug)]
pub struct Referent {
    phi1: Conv2d,
    phi2: Conv2d,
    words: Linear,
    bias: Tensor,
    cfg: ReferentConfig,
}

/// `[1, 2, h, w]` cell centres in [-1, 1]: x then y.
fn coordinates(h: usize, w: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let axis = |n: usize| -> Result<Tensor> {
        let v: Vec<f32> = (0..n).map(|i| if n == 1 { 0.0 } else { -1.0 + 2.0 * i as f32 / (n - 1) as f32 }).collect();
        Tensor::from_vec(v, n, dev)
    };
    let xs = axis(w)?.reshape((1, 1, 1, w))?.broadcast_as((1, 1, h, w))?;
    let ys = axis(h)?.reshape((1, 1, h, 1))?.broadcast_as((1, 1, h, w))?;
    Tensor::cat(&[&xs, &ys], 1)
}

impl Referent {
    /// `c_dense`: channels of the dense map; `c_l`: the text encoder's hidden size.
    pub fn new(cfg: &ReferentConfig, c_dense: usize, c_l: usize, vb: VarBuilder) -> Result<Self> {
        let c = Default::default();
        Ok(Self {
            phi1: candle_nn::conv2d(c_dense + 2, HIDDEN, 1, c, vb.pp("phi1"))?,
            phi2: candle_nn::conv2d(HIDDEN, cfg.dim, 1, c, vb.pp("phi2"))?,
            words: linear(c_l, cfg.dim + 1, vb.pp("words"))?,
            bias: vb.get_with_hints(1, "bias", candle_nn::Init::Const(0.0))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ReferentConfig {
        &self.cfg
    }

    /// Replaces the decision threshold (calibration; the weights do not depend on it).
    pub fn set_threshold(&mut self, threshold: f64) {
        self.cfg.threshold = threshold;
    }

    /// E `[N, dim, h, w]` from the dense map `[N, C, h, w]`.
    pub fn embed(&self, dense: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = dense.dims4()?;
        let xy = coordinates(h, w, dense.device())?.broadcast_as((n, 2, h, w))?.to_dtype(dense.dtype())?;
        let x = super::ops::conv2d(&self.phi1, &Tensor::cat(&[dense, &xy], 1)?)?.relu()?;
        super::ops::conv2d(&self.phi2, &x)
    }

    /// Each expression's query `[B, dim + 1]` (vector, then bias) from its tokens' last hidden states
    /// `[B, T, C_l]` and mask `[B, T]` (1 = token): the sum of the tokens' projections.
    pub fn query(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let per_token = self.words.forward(hidden)?; // [B, T, dim + 1]
        let m = mask.to_dtype(per_token.dtype())?.unsqueeze(D::Minus1)?;
        let q = per_token.broadcast_mul(&m)?.sum(1)?; // [B, dim + 1]
        let dim = self.cfg.dim;
        let b = q.narrow(1, dim, 1)?.broadcast_add(&self.bias)?;
        Tensor::cat(&[&q.narrow(1, 0, dim)?, &b], 1)
    }

    /// Logit maps `[N, h, w]` of embeddings `e` `[N, dim, h, w]` against queries `q` `[N, dim + 1]` (row n
    /// for photo n).
    pub fn logits(&self, e: &Tensor, q: &Tensor) -> Result<Tensor> {
        let (n, dim, h, w) = e.dims4()?;
        let vec = q.narrow(1, 0, dim)?.reshape((n, 1, dim))?;
        let bias = q.narrow(1, dim, 1)?.reshape((n, 1, 1))?;
        let flat = e.reshape((n, dim, h * w))?;
        vec.matmul(&flat)?.broadcast_add(&bias)?.reshape((n, h, w))
    }

    /// Each photo's score: the peak of its logit map averaged over 2 x 2 cells. `pooled`: E averaged
    /// over 2 x 2 cells ([`pool`]), `[N, dim, h8, w8]`; `q`: one query `[dim + 1]` for all.
    pub fn scores(&self, pooled: &Tensor, q: &Tensor) -> Result<Tensor> {
        self.logits(pooled, &repeat(q, pooled.dim(0)?)?)?.flatten_from(1)?.max(1)
    }
}

/// One query `[dim + 1]` as the rows of `n` photos, `[n, dim + 1]` ([`Referent::logits`] reads a row a photo).
pub fn repeat(q: &Tensor, n: usize) -> Result<Tensor> {
    q.unsqueeze(0)?.broadcast_as((n, q.dim(0)?))?.contiguous()
}

/// E averaged over 2 x 2 cells: what the decision reads.
pub fn pool(e: &Tensor) -> Result<Tensor> {
    e.avg_pool2d(2)
}

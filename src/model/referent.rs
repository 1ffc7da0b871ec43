//! The referent head: per-word matching of the expression against every 1/4 cell of a photo, and the
//! decision read from the peak of that map (docs/model.md, "The referent head").
//!
//! Per photo, a small per-cell network φ turns the dense map (and the cell's position, so "left" and
//! "top" have something to match) into an embedding E that does not depend on the expression: the
//! indexer caches it. Per expression, every token's last hidden state goes through one linear layer to a
//! query vector and a bias. A cell's logit combines the words' matches E · q_t + b_t ([`WordMatch`]):
//! their sum, or the logit of the product of their sigmoids, which is high only where every word
//! matches, at the object itself. A photo holds the referent when the peak of the map of E averaged over
//! 2 x 2 cells (1/8 of the input) is above a threshold chosen on validation albums.
//!
//! The decision reads E averaged to 1/8 (a quarter of the values: what a query loads for every photo;
//! under [`WordMatch::Sum`] its map is exactly the averaged map); the masks read E itself, for the
//! positives only.
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2d, VarBuilder};
use serde::{Deserialize, Serialize};

use super::ops::{linear, softplus, Linear};

/// The referent head's choices, in the model's config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferentConfig {
    /// Channels of the cached embedding E.
    pub dim: usize,
    /// A photo is positive when its peak score is above this (set on validation albums after training).
    pub threshold: f64,
    /// How a cell's word matches combine into its logit.
    #[serde(default)]
    pub words: WordMatch,
}

/// How the words' matches at a cell make the cell's logit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordMatch {
    /// Their sum, E · Σ q_t + b: a strong match of one word can outweigh a mismatch of another.
    #[default]
    Sum,
    /// Every word must match: the cell's probability is the product of the words' sigmoids, so one
    /// mismatched word (a red square asked for "red circle") keeps the cell out whatever the others say.
    All,
}

impl Default for ReferentConfig {
    /// 32 channels (64 KB a photo in f16 at 128 px); threshold 0 (a logit: even odds) until calibrated.
    fn default() -> Self {
        Self { dim: 32, threshold: 0.0, words: WordMatch::Sum }
    }
}

/// A padding token's bias under [`WordMatch::All`]: its sigmoid is 1 to f32 precision, so it matches
/// everywhere and leaves the product alone.
const PAD_BIAS: f64 = 30.0;
/// Under [`WordMatch::All`], how close the product may come to 1 before the logit is cut (logit 9.2):
/// the logit of a product of 1 is infinite.
const ALL_EPS: f64 = 1e-4;

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

    /// Each expression's query from its tokens' last hidden states `[B, T, C_l]` and mask `[B, T]` (1 =
    /// token). [`WordMatch::Sum`]: `[B, dim + 1]` (vector, then bias), the sum of the tokens' projections.
    /// [`WordMatch::All`]: `[B, T, dim + 1]`, one row a token, padding turned into a word that matches
    /// everywhere.
    pub fn query(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let per_token = self.words.forward(hidden)?; // [B, T, dim + 1]
        let m = mask.to_dtype(per_token.dtype())?.unsqueeze(D::Minus1)?;
        let dim = self.cfg.dim;
        if self.cfg.words == WordMatch::All {
            let kept = per_token.broadcast_mul(&m)?;
            let pad = ((1.0 - &m)? * PAD_BIAS)?; // [B, T, 1]
            let b = (kept.narrow(2, dim, 1)? + pad)?;
            return Tensor::cat(&[&kept.narrow(2, 0, dim)?, &b], 2);
        }
        let q = per_token.broadcast_mul(&m)?.sum(1)?; // [B, dim + 1]
        let b = q.narrow(1, dim, 1)?.broadcast_add(&self.bias)?;
        Tensor::cat(&[&q.narrow(1, 0, dim)?, &b], 1)
    }

    /// Logit maps `[N, h, w]` of embeddings `e` `[N, dim, h, w]` against queries `q` (row n for photo n:
    /// `[N, dim + 1]`, or `[N, T, dim + 1]` under [`WordMatch::All`]).
    pub fn logits(&self, e: &Tensor, q: &Tensor) -> Result<Tensor> {
        let (n, dim, h, w) = e.dims4()?;
        let flat = e.reshape((n, dim, h * w))?;
        if self.cfg.words == WordMatch::All {
            let vec = q.narrow(2, 0, dim)?.contiguous()?; // [N, T, dim]
            let bias = q.narrow(2, dim, 1)?; // [N, T, 1]
            let s = vec.matmul(&flat)?.broadcast_add(&bias)?; // [N, T, hw]
                                                              // log Π σ(s_t) = -Σ softplus(-s_t) = -u; the product's logit is -log(e^u - 1), written
                                                              // -u - log(1 - e^-u) so that neither it nor its gradient overflows for a large u.
            let u = softplus(&s.neg()?)?.sum(1)?.maximum(ALL_EPS)?;
            let logit = (u.neg()? - (1.0 - u.neg()?.exp()?)?.log()?)?;
            return logit.broadcast_add(&self.bias)?.reshape((n, h, w));
        }
        let vec = q.narrow(1, 0, dim)?.reshape((n, 1, dim))?;
        let bias = q.narrow(1, dim, 1)?.reshape((n, 1, 1))?;
        vec.matmul(&flat)?.broadcast_add(&bias)?.reshape((n, h, w))
    }

    /// Each photo's score `[N]`: the peak of the logit map of E averaged over 2 x 2 cells (under
    /// [`WordMatch::Sum`], the logit map averaged). `pooled`: [`pool`]ed E, `[N, dim, h8, w8]`; `q`: one
    /// query for all.
    pub fn scores(&self, pooled: &Tensor, q: &Tensor) -> Result<Tensor> {
        if self.cfg.words == WordMatch::All && pooled.device().is_cpu() && pooled.dtype() == DType::F32 {
            return self.all_words_scores_cpu(pooled, q);
        }
        self.peaks(pooled, &repeat(q, pooled.dim(0)?)?)
    }

    /// [`Referent::scores`] under [`WordMatch::All`] in one pass a photo (what a library query runs on
    /// every cached photo), reading the tensor's memory in place: [`all_words_min_u`].
    fn all_words_scores_cpu(&self, pooled: &Tensor, q: &Tensor) -> Result<Tensor> {
        let (n, dim, h, w) = pooled.dims4()?;
        let cells = h * w;
        let (_, width) = q.dims2()?;
        if width != dim + 1 {
            candle_core::bail!("query of width {width} for an embedding of {dim}");
        }
        let q: Vec<f32> = q.flatten_all()?.to_vec1()?;
        let bias = self.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?[0];
        let pooled = pooled.contiguous()?;
        let (storage, layout) = pooled.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
            candle_core::bail!("the one-pass score reads f32 on the CPU");
        };
        let e = &values[layout.start_offset()..layout.start_offset() + n * dim * cells];
        let mut scratch = vec![0f32; 3 * cells];
        let out: Vec<f32> = e
            .chunks_exact(dim * cells)
            .map(|photo| {
                let u = all_words_min_u(photo, &q, dim, &mut scratch).max(ALL_EPS as f32);
                -u - (1.0 - (-u).exp()).ln() + bias
            })
            .collect();
        drop(storage);
        Tensor::from_vec(out, n, pooled.device())
    }

    /// [`Referent::scores`] with a query row a photo, as [`Referent::logits`] takes them (training).
    pub fn peaks(&self, pooled: &Tensor, q: &Tensor) -> Result<Tensor> {
        self.logits(pooled, q)?.flatten_from(1)?.max(1)
    }
}

/// One query (`[dim + 1]`, or `[T, dim + 1]`) as the rows of `n` photos ([`Referent::logits`] reads a
/// row a photo).
pub fn repeat(q: &Tensor, n: usize) -> Result<Tensor> {
    let mut dims = vec![n];
    dims.extend_from_slice(q.dims());
    q.unsqueeze(0)?.broadcast_as(dims)?.contiguous()
}

/// The smallest u = Σ_t softplus(-s_t) over one photo's cells (`photo`: `[dim, cells]`; `q`: rows of
/// `dim + 1`): the words' matches as a small matrix product, then u = l + ln p with l = Σ max(-s_t, 0)
/// and p = Π (1 + e^-|s_t|) (each factor in (1, 2], so no overflow). The smallest u is the largest
/// e^-l / p, so one logarithm a photo; only where every cell misses by more than e^-87 does each cell
/// take its own. AVX2 + FMA when the CPU has them, as [`super::kernels`].
fn all_words_min_u(photo: &[f32], q: &[f32], dim: usize, scratch: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::isa::Isa::get().has_avx2() {
        // SAFETY: `Isa::get` found the features on this CPU.
        return unsafe { all_words_min_u_avx2(photo, q, dim, scratch) };
    }
    all_words_min_u_plain(photo, q, dim, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn all_words_min_u_avx2(photo: &[f32], q: &[f32], dim: usize, scratch: &mut [f32]) -> f32 {
    all_words_min_u_plain(photo, q, dim, scratch)
}

#[inline(always)]
fn all_words_min_u_plain(photo: &[f32], q: &[f32], dim: usize, scratch: &mut [f32]) -> f32 {
    let cells = photo.len() / dim;
    let (s, rest) = scratch.split_at_mut(cells);
    let (linear, product) = rest.split_at_mut(cells);
    linear.fill(0.0);
    product.fill(1.0);
    for row in q.chunks_exact(dim + 1) {
        s.fill(row[dim]);
        for (d, &qd) in row[..dim].iter().enumerate() {
            for (sc, &ec) in s.iter_mut().zip(&photo[d * cells..(d + 1) * cells]) {
                *sc += qd * ec;
            }
        }
        for ((l, p), &sc) in linear.iter_mut().zip(product.iter_mut()).zip(s.iter()) {
            *l += (-sc).max(0.0);
            *p *= 1.0 + super::kernels::exp_approx(-sc.abs());
        }
    }
    let best = linear.iter().zip(product.iter()).map(|(l, p)| super::kernels::exp_approx(-l) / p).fold(0f32, f32::max);
    if best > 1e-30 {
        return -best.ln();
    }
    linear.iter().zip(product.iter()).map(|(l, p)| l + p.ln()).fold(f32::INFINITY, f32::min)
}

/// E averaged over 2 x 2 cells: what the decision reads.
pub fn pool(e: &Tensor) -> Result<Tensor> {
    e.avg_pool2d(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn head(words: WordMatch) -> Referent {
        let cfg = ReferentConfig { dim: 2, threshold: 0.0, words };
        Referent::new(&cfg, 1, 2, VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu)).unwrap()
    }

    /// One word's product is its own sigmoid, so its logit is its match: both ways agree on it.
    #[test]
    fn one_word_scores_the_same_summed_or_all_required() {
        let dev = Device::Cpu;
        let e = Tensor::new(&[0.5f32, -1.0, 2.0, 0.25, 3.0, -2.0], &dev).unwrap().reshape((1, 2, 1, 3)).unwrap();
        let sum = head(WordMatch::Sum).logits(&e, &Tensor::new(&[[1.5f32, -0.5, 0.2]], &dev).unwrap()).unwrap();
        let all = head(WordMatch::All).logits(&e, &Tensor::new(&[[[1.5f32, -0.5, 0.2]]], &dev).unwrap()).unwrap();
        let (sum, all): (Vec<f32>, Vec<f32>) =
            (sum.flatten_all().unwrap().to_vec1().unwrap(), all.flatten_all().unwrap().to_vec1().unwrap());
        for (s, a) in sum.iter().zip(&all) {
            assert!((s - a).abs() < 1e-4, "sum {sum:?} all {all:?}");
        }
    }

    /// Every word required: one word far off keeps the cell out however well the others match, and
    /// matches and mismatches of any size give finite logits and finite gradients.
    #[test]
    fn all_words_required_keeps_out_a_cell_with_one_mismatch_and_stays_finite() {
        let dev = Device::Cpu;
        let r = head(WordMatch::All);
        // Cell 0 matches both words strongly; cell 1 matches the first by 500 and misses the second by 500.
        let e = Var::from_tensor(
            &Tensor::new(&[100f32, 100.0, 100.0, -100.0], &dev).unwrap().reshape((1, 2, 1, 2)).unwrap(),
        )
        .unwrap();
        let q = Tensor::new(&[[[5f32, 0.0, 0.0], [0.0, 5.0, 0.0]]], &dev).unwrap();
        let logits = r.logits(e.as_tensor(), &q).unwrap();
        let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v[0] > 9.0 && v[1] < -400.0, "{v:?}");
        let grads = logits.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads.get(e.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }

    /// The one-pass CPU scores a library query reads are the peaks of the composite map.
    #[test]
    fn all_words_scores_in_one_pass_match_the_composite_peaks() {
        let dev = Device::Cpu;
        let r = head(WordMatch::All);
        // The third photo misses every word everywhere by far: its cells take the exact logarithm.
        let far = Tensor::full(-60f32, (1, 2, 4, 4), &dev).unwrap();
        let e = Tensor::cat(&[&Tensor::randn(0f32, 2.0, (2, 2, 4, 4), &dev).unwrap(), &far], 0).unwrap();
        let q = Tensor::new(&[[1.5f32, -0.5, 0.2], [-2.0, 3.0, 1.0], [0.1, 0.1, -4.0]], &dev).unwrap();
        let fused: Vec<f32> = r.scores(&e, &q).unwrap().to_vec1().unwrap();
        let composite: Vec<f32> = r.peaks(&e, &repeat(&q, 3).unwrap()).unwrap().to_vec1().unwrap();
        for (a, b) in fused.iter().zip(&composite) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{fused:?} {composite:?}");
        }
    }

    /// A padded token of a batch's shorter expression matches everywhere: the expression scores as alone.
    #[test]
    fn padding_leaves_an_all_words_query_unchanged() {
        let dev = Device::Cpu;
        let r = head(WordMatch::All);
        let hidden = Tensor::new(&[[[0.3f32, -0.7], [1.1, 0.4], [9.0, -9.0]]], &dev).unwrap();
        let e = Tensor::new(&[0.5f32, -1.0, 2.0, 0.25], &dev).unwrap().reshape((1, 2, 1, 2)).unwrap();
        let padded = r.query(&hidden, &Tensor::new(&[[1u32, 1, 0]], &dev).unwrap()).unwrap();
        let alone = r.query(&hidden.narrow(1, 0, 2).unwrap(), &Tensor::new(&[[1u32, 1]], &dev).unwrap()).unwrap();
        let a: Vec<f32> = r.logits(&e, &padded).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = r.logits(&e, &alone).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} {b:?}");
        }
    }
}

//! Triphasic Query Module (the paper's step 3, docs/model.md): the language map of each photo, its prototype of the
//! referred object, and the visual maps that search every photo with other photos' prototypes.
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::ops::{linear, Linear};

/// Avoids 0/0 for all-zero vectors (padding); PyTorch's `cosine_similarity` uses 1e-8 likewise.
const COS_EPS: f64 = 1e-8;

/// Unit-normalise along `dim`.
pub fn l2_normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(dim)?.sqrt()?.clamp(COS_EPS, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// w_l: projects sentence features (C_l) into the visual space (C_v).
#[derive(Debug)]
pub struct Tqm {
    w_l: Linear,
}

impl Tqm {
    pub fn new(c_l: usize, c_v: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { w_l: linear(c_l, c_v, vb.pp("w_l"))? })
    }

    /// L' = w_l(L): `[C_l]` -> `[C_v]` (or `[B, C_l]` -> `[B, C_v]`).
    pub fn project_text(&self, l: &Tensor) -> Result<Tensor> {
        match l.rank() {
            1 => self.w_l.forward(&l.unsqueeze(0)?)?.squeeze(0),
            _ => self.w_l.forward(l),
        }
    }
}

/// Language maps and prototypes of a group.
///
/// `v`: `[N, C, H, W]`; `l_proj`: `[C]`. Returns M_l `[N, H, W]` (cosine of each position with L') and the
/// prototypes p_n = mean over H x W of (M_l[n] * V_n), `[N, C]`.
pub fn prototypes(v: &Tensor, l_proj: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = v.dims4()?;
    let flat = v.reshape((n, c, h * w))?; // [N, C, HW]
    let v_hat = l2_normalize(&flat, 1)?;
    let l_hat = l2_normalize(&l_proj.reshape((1, c, 1))?, 1)?;
    let m_l = v_hat.broadcast_mul(&l_hat)?.sum(1)?; // [N, HW]
    let p = flat.broadcast_mul(&m_l.unsqueeze(1)?)?.mean(D::Minus1)?; // [N, C]
    Ok((m_l.reshape((n, h, w))?, p))
}

/// Visual maps M_v[n, i] = cos(V_n, p_i) for the given prototypes: `v` `[N, C, H, W]`, `protos` `[K, C]`
/// -> `[N, K, H, W]`. One matrix product, linear in N for a fixed K.
pub fn visual_maps(v: &Tensor, protos: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = v.dims4()?;
    let k = protos.dim(0)?;
    let v_hat = l2_normalize(&v.reshape((n, c, h * w))?, 1)?; // [N, C, HW]
    let p_hat = l2_normalize(protos, 1)?; // [K, C]
    let maps = p_hat.unsqueeze(0)?.broadcast_as((n, k, c))?.contiguous()?.matmul(&v_hat)?; // [N, K, HW]
    maps.reshape((n, k, h, w))
}

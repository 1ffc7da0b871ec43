//! CPU training kernels that carry their own backward: bias add, LayerNorm, BatchNorm, GELU, the window
//! attention's biased softmax, and convolution as im2col + gemm (docs/model.md, "Training speed").
//!
//! Built from candle's elementary ops, each of these sums its gradient over broadcast leading
//! dimensions with candle's general reduction (one index division per element, one thread), and a
//! convolution's backward runs candle's direct loops; in a profile of the built-in model's features
//! stage those two took about half of a step, the matrix products under a tenth. Here each is one
//! pass forward and one backward over contiguous rows.
//!
//! Only f32 tensors on the CPU with a gradient to track take these paths ([`applies`]); the f64
//! finite-difference check, CUDA and inference keep candle's ops, and the unit tests below hold each
//! kernel's values and gradients to the composite's.
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Whether the fused path applies: some input tracks a gradient, and all are f32 on the CPU.
pub fn applies(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op()) && ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The f32 values of a contiguous input.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("grad kernel: a non-contiguous input"),
    }
}

/// Rows of `c` values summed column by column (per thread, then across threads).
fn col_sums(src: &[f32], c: usize) -> Vec<f32> {
    let rows = src.len() / c.max(1);
    let per = rows.div_ceil(rayon::current_num_threads().max(1)).max(16);
    src.par_chunks(per * c)
        .map(|block| {
            let mut acc = vec![0f32; c];
            for row in block.chunks_exact(c) {
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += x;
                }
            }
            acc
        })
        .reduce(
            || vec![0f32; c],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
}

/// Column sums of a `[rows, c]` tensor (no gradient of its own: used inside backward passes).
struct ColSum {
    c: usize,
}

impl CustomOp1 for ColSum {
    fn name(&self) -> &'static str {
        "col-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(col_sums(values(s, l)?, self.c)), Shape::from(self.c)))
    }
}

fn col_sum(g: &Tensor, c: usize) -> Result<Tensor> {
    g.contiguous()?.apply_op1_no_bwd(&ColSum { c })
}

/// `x` `[.., C]` plus `b` `[C]` on every row.
struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (values(s1, l1)?, values(s2, l2)?);
        let mut out = x.to_vec();
        out.par_chunks_mut(b.len() * 64).for_each(|block| {
            for row in block.chunks_exact_mut(b.len()) {
                for (y, &v) in row.iter_mut().zip(b) {
                    *y += v;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.clone()), Some(col_sum(g, b.dim(0)?)?)))
    }
}

/// `x` `[.., C]` + `b` `[C]`, broadcast over the leading dimensions.
pub fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if applies(&[x, b]) {
        x.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)
    } else {
        x.broadcast_add(b)
    }
}

/// LayerNorm over the last dimension, weight and bias (PyTorch's `nn.LayerNorm`).
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let mut out = vec![0f32; x.len()];
        super::kernels::layer_norm_rows(x, w, b, self.eps, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        let packed = x.apply_op3_no_bwd(w, &g.contiguous()?, &LayerNormBackward { eps: self.eps })?;
        let rows = x.elem_count() / c;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        Ok((Some(dx), Some(packed.get(rows)?), Some(packed.get(rows + 1)?)))
    }
}

/// LayerNorm's gradients from (x, weight, upstream gradient): `[rows + 2, C]`, the rows of dx, then dw
/// and db.
struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let c = w.len();
        let rows = x.len() / c;
        let mut out = vec![0f32; x.len() + 2 * c];
        // dx row by row; dw and db summed per block of rows, then across blocks.
        let per = rows.div_ceil(rayon::current_num_threads().max(1)).max(16);
        let (dx, tail) = out.split_at_mut(x.len());
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(per * c)
            .zip(x.par_chunks(per * c).zip(g.par_chunks(per * c)))
            .map(|(dxb, (xb, gb))| {
                let mut acc = vec![0f32; 2 * c];
                let mut xhat = vec![0f32; c];
                for ((dxr, xr), gr) in dxb.chunks_exact_mut(c).zip(xb.chunks_exact(c)).zip(gb.chunks_exact(c)) {
                    let (mean, rstd) = super::kernels::row_stats(xr, self.eps);
                    let (mut a, mut bsum) = (0f32, 0f32);
                    for i in 0..c {
                        xhat[i] = (xr[i] - mean) * rstd;
                        let gw = gr[i] * w[i];
                        a += gw;
                        bsum += gw * xhat[i];
                        acc[i] += gr[i] * xhat[i];
                        acc[c + i] += gr[i];
                    }
                    let (a, bsum) = (a / c as f32, bsum / c as f32);
                    for i in 0..c {
                        dxr[i] = rstd * (gr[i] * w[i] - a - xhat[i] * bsum);
                    }
                }
                acc
            })
            .collect();
        for p in partial {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, c))))
    }
}

/// LayerNorm over the last dimension (`weight`, `bias` `[C]`): training, and inference on the CPU.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNormOp { eps: eps as f32 })
}

/// BatchNorm over NCHW with given per-channel statistics (mean, reciprocal standard deviation), weight
/// and bias `[C]`: [`batch_norm`] measures the statistics once, and the forward, the backward and the
/// running statistics all read them.
struct BatchNormOp {
    stats: std::sync::Arc<Vec<(f32, f32)>>,
    /// Pixels per photo.
    hw: usize,
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let c = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(self.hw).zip(x.par_chunks(self.hw)).enumerate().for_each(|(plane, (y, xp))| {
            let ch = plane % c;
            let (mean, rstd) = self.stats[ch];
            let (scale, shift) = (rstd * w[ch], b[ch] - mean * rstd * w[ch]);
            for (o, &v) in y.iter_mut().zip(xp) {
                *o = v * scale + shift;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = BatchNormBackward { stats: self.stats.clone(), hw: self.hw };
        let packed = x.apply_op3_no_bwd(w, &g.contiguous()?, &op)?;
        let len = x.elem_count();
        let c = w.dim(0)?;
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        Ok((Some(dx), Some(packed.narrow(0, len, c)?), Some(packed.narrow(0, len + c, c)?)))
    }
}

/// BatchNorm's gradients from (x, weight, upstream gradient), flat: dx, then dw and db.
struct BatchNormBackward {
    stats: std::sync::Arc<Vec<(f32, f32)>>,
    hw: usize,
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let c = w.len();
        let n = x.len() / (c * self.hw);
        let stats = &self.stats;
        let m = (n * self.hw) as f32;
        let plane = |i: usize, ch: usize| (i * c + ch) * self.hw..(i * c + ch + 1) * self.hw;
        // Per channel: sum of g (db) and of g * xhat (dw).
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, rstd) = stats[ch];
                let (mut sg, mut sgx) = (0f32, 0f32);
                for i in 0..n {
                    for (&gv, &xv) in g[plane(i, ch)].iter().zip(&x[plane(i, ch)]) {
                        sg += gv;
                        sgx += gv * (xv - mean) * rstd;
                    }
                }
                (sg, sgx)
            })
            .collect();
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, tail) = out.split_at_mut(x.len());
        dx.par_chunks_mut(self.hw).enumerate().for_each(|(p, d)| {
            let ch = p % c;
            let (mean, rstd) = stats[ch];
            let (sg, sgx) = sums[ch];
            let k = w[ch] * rstd / m;
            let r = p * self.hw..(p + 1) * self.hw;
            for ((o, &gv), &xv) in d.iter_mut().zip(&g[r.clone()]).zip(&x[r]) {
                let xhat = (xv - mean) * rstd;
                *o = k * (m * gv - sg - xhat * sgx);
            }
        });
        for (ch, &(sg, sgx)) in sums.iter().enumerate() {
            tail[ch] = sgx;
            tail[c + ch] = sg;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

/// BatchNorm of `x` `[N, C, H, W]` with its own statistics, weight and bias `[C]`; also returns those
/// statistics, detached: each channel's mean and biased variance, `[C]`.
pub fn batch_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    // Reduced over each channel's contiguous pixels first: candle's fast path.
    let flat = x.detach().reshape((n, c, h * w))?;
    let count = (n * h * w) as f64;
    let mean = (flat.sum_keepdim(2)?.sum_keepdim(0)? / count)?;
    let var = (flat.broadcast_sub(&mean)?.sqr()?.sum_keepdim(2)?.sum_keepdim(0)? / count)?;
    let (mean, var) = (mean.reshape(c)?, var.reshape(c)?);
    let stats = mean.to_vec1::<f32>()?.into_iter().zip(var.to_vec1::<f32>()?);
    let stats = stats.map(|(m, v)| (m, 1.0 / (v + eps as f32).sqrt())).collect();
    let op = BatchNormOp { stats: std::sync::Arc::new(stats), hw: h * w };
    let y = x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, mean, var))
}

/// Softmax over the last dimension of window attention scores `[B*nW, heads, N, N]` with the relative
/// position bias `[heads, N, N]` (which takes a gradient) and the shift mask `[nW, N, N]` (a constant)
/// added first.
struct BiasSoftmax {
    mask: Option<(Vec<f32>, usize)>,
}

impl CustomOp2 for BiasSoftmax {
    fn name(&self) -> &'static str {
        "bias-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (values(s1, l1)?, values(s2, l2)?);
        let dims = l1.dims();
        let n = dims[dims.len() - 1];
        let per_window = bias.len(); // heads * N * N
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(per_window).zip(x.par_chunks(per_window)).enumerate().for_each(|(bw, (y, xw))| {
            let mask = self.mask.as_ref().map(|(m, nw)| &m[(bw % nw) * n * n..(bw % nw + 1) * n * n]);
            for (r, (yr, xr)) in y.chunks_exact_mut(n).zip(xw.chunks_exact(n)).enumerate() {
                let row = (r % n) * n..(r % n + 1) * n;
                super::kernels::softmax_row(xr, &bias[r * n..(r + 1) * n], mask.map(|m| &m[row]), yr);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, bias: &Tensor, y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d = y * (g - sum(g * y)) per row; the bias's gradient sums d over the windows.
        let g = g.contiguous()?;
        let dot = (&g * y)?.sum_keepdim(D::Minus1)?;
        let d = y.mul(&g.broadcast_sub(&dot)?)?;
        let db = col_sum(&d, bias.elem_count())?.reshape(bias.shape())?;
        Ok((Some(d), Some(db)))
    }
}

/// Softmax of `scores` `[B*nW, heads, N, N]` + `bias` `[1, heads, N, N]` (+ `mask` `[nW, N, N]`).
pub fn bias_softmax(scores: &Tensor, bias: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let mask = match mask {
        Some(m) => Some((m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, m.dim(0)?)),
        None => None,
    };
    let bias = bias.contiguous()?.squeeze(0)?;
    scores.contiguous()?.apply_op2(&bias, BiasSoftmax { mask })
}

/// Exact-erf GELU whose backward is one pass too: d/dx = Φ(x) + x φ(x).
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        // The inference kernel's forward: the backward below is what this op adds.
        super::kernels::Gelu.cpu_fwd(s, l)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluBackward)?))
    }
}

/// GELU's input gradient from (x, upstream gradient).
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-erf-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (values(s1, l1)?, values(s2, l2)?);
        let mut out = vec![0f32; x.len()];
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        out.par_chunks_mut(16 * 1024).zip(x.par_chunks(16 * 1024).zip(g.par_chunks(16 * 1024))).for_each(
            |(d, (xs, gs))| {
                for ((o, &v), &gv) in d.iter_mut().zip(xs).zip(gs) {
                    let cdf = 0.5 * (1.0 + super::kernels::erf_approx(v * std::f32::consts::FRAC_1_SQRT_2));
                    let pdf = inv_sqrt_2pi * super::kernels::exp_approx(-0.5 * v * v);
                    *o = gv * (cdf + v * pdf);
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Exact-erf GELU (PyTorch's `nn.GELU()`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

/// A convolution's geometry.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// The input position of output (oy, ox) and kernel tap (ky, kx), if inside the input.
    #[inline(always)]
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let y = (oy * self.stride + ky).checked_sub(self.pad)?;
        let x = (ox * self.stride + kx).checked_sub(self.pad)?;
        (y < self.h && x < self.w).then_some(y * self.w + x)
    }
}

/// `[N, C, H, W]` -> `[N * Ho * Wo, k * k * C]`: each output position's receptive field as a row, tap
/// by tap with the channels of a tap together (so a tap is one contiguous copy from the photo turned
/// to `[H, W, C]`, and its adjoint one contiguous add).
struct Im2Col(Geometry);

/// A photo's planes `[C, H * W]` turned to `[H * W, C]`.
fn to_hwc(planes: &[f32], c: usize, hw: usize, out: &mut [f32]) {
    for (ch, plane) in planes.chunks_exact(hw).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            out[i * c + ch] = v;
        }
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(s, l)?;
        let g = self.0;
        let (kk, l_out, hw) = (g.k * g.k, g.ho * g.wo, g.h * g.w);
        let cols = g.c * kk;
        let mut out = vec![0f32; g.n * l_out * cols];
        // One photo per task.
        out.par_chunks_mut(l_out * cols).zip(x.par_chunks(g.c * hw)).for_each(|(rows, planes)| {
            let mut hwc = vec![0f32; hw * g.c];
            to_hwc(planes, g.c, hw, &mut hwc);
            for (pos, r) in rows.chunks_exact_mut(cols).enumerate() {
                let (oy, ox) = (pos / g.wo, pos % g.wo);
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        if let Some(i) = g.source(oy, ox, ky, kx) {
                            let tap = ky * g.k + kx;
                            r[tap * g.c..(tap + 1) * g.c].copy_from_slice(&hwc[i * g.c..(i + 1) * g.c]);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((g.n * l_out, cols))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

/// [`Im2Col`]'s adjoint: rows back to `[N, C, H, W]`, overlapping taps summed.
struct Col2Im(Geometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = values(s, l)?;
        let g = self.0;
        let (kk, l_out, hw) = (g.k * g.k, g.ho * g.wo, g.h * g.w);
        let width = g.c * kk;
        let mut out = vec![0f32; g.n * g.c * hw];
        // One photo per task, summed in `[H * W, C]` and turned back at the end.
        out.par_chunks_mut(g.c * hw).zip(cols.par_chunks(l_out * width)).for_each(|(planes, rows)| {
            let mut hwc = vec![0f32; hw * g.c];
            for (pos, row) in rows.chunks_exact(width).enumerate() {
                let (oy, ox) = (pos / g.wo, pos % g.wo);
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        if let Some(i) = g.source(oy, ox, ky, kx) {
                            let tap = ky * g.k + kx;
                            let (dst, src) = (&mut hwc[i * g.c..(i + 1) * g.c], &row[tap * g.c..(tap + 1) * g.c]);
                            for (d, &v) in dst.iter_mut().zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
            for (ch, plane) in planes.chunks_exact_mut(hw).enumerate() {
                for (i, v) in plane.iter_mut().enumerate() {
                    *v = hwc[i * g.c + ch];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.c, g.h, g.w))))
    }
}

/// A square convolution of `x` `[N, C, H, W]` with `weight` `[Co, C, k, k]` (groups and dilation 1) and
/// an optional `bias` `[Co]`: im2col, one gemm, the bias added per row; `[N, Co, Ho, Wo]`.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (co, ci, k, k2) = weight.dims4()?;
    if ci != c || k != k2 {
        bail!("conv2d: a [{co}, {ci}, {k}, {k2}] kernel on {c} channels");
    }
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    let geo = Geometry { n, c, h, w, k, stride, pad, ho, wo };
    let cols = x.contiguous()?.apply_op1(Im2Col(geo))?;
    // The kernel in the rows' order: `[Co, k, k, C]`.
    let y = cols.matmul(&weight.permute((0, 2, 3, 1))?.reshape((co, k * k * c))?.t()?)?;
    let y = match bias {
        Some(b) => bias_add(&y, b)?,
        None => y,
    };
    y.reshape((n, ho, wo, co))?.permute((0, 3, 1, 2))?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Values and gradients of `fused` and `composite` on the same variables, weighted unevenly.
    fn agree(vars: &[Var], fused: &Tensor, composite: &Tensor, tol: f32) -> Result<()> {
        let diff = (fused - composite)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < tol, "values differ by {diff}");
        let w = Tensor::randn(0f32, 1.0, fused.shape(), fused.device())?;
        let gf = (fused * &w)?.sum_all()?.backward()?;
        let gc = (composite * &w)?.sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            let (a, b) = (gf.get(v.as_tensor()).expect("fused grad"), gc.get(v.as_tensor()).expect("composite grad"));
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d / scale < tol, "gradient of input {i} differs by {d} (scale {scale})");
        }
        Ok(())
    }

    fn var(shape: &[usize], mean: f32) -> Result<Var> {
        Var::from_tensor(&Tensor::randn(mean, 1.0, shape, &Device::Cpu)?)
    }

    #[test]
    fn bias_add_matches_broadcast_add() -> Result<()> {
        let (x, b) = (var(&[5, 7, 6], 0.0)?, var(&[6], 0.0)?);
        let fused = bias_add(x.as_tensor(), b.as_tensor())?;
        let composite = x.as_tensor().broadcast_add(b.as_tensor())?;
        agree(&[x, b], &fused, &composite, 1e-5)
    }

    #[test]
    fn layer_norm_matches_the_composite() -> Result<()> {
        let (x, w, b) = (var(&[4, 9, 24], 0.5)?, var(&[24], 1.0)?, var(&[24], 0.0)?);
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
        let composite = super::super::ops::layer_norm_composite(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
        agree(&[x, w, b], &fused, &composite, 1e-4)
    }

    #[test]
    fn batch_norm_matches_the_composite() -> Result<()> {
        let (x, w, b) = (var(&[3, 5, 6, 7], 0.5)?, var(&[5], 1.0)?, var(&[5], 0.0)?);
        let (fused, mean, var) = batch_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
        let xt = x.as_tensor();
        let over = |t: &Tensor| -> Result<Tensor> { t.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3) };
        let centred = xt.broadcast_sub(&over(xt)?)?;
        let normed = centred.broadcast_div(&(over(&centred.sqr()?)? + 1e-5)?.sqrt()?)?;
        let composite = normed
            .broadcast_mul(&w.as_tensor().reshape((1, 5, 1, 1))?)?
            .broadcast_add(&b.as_tensor().reshape((1, 5, 1, 1))?)?;
        let (want_mean, want_var) = (over(xt)?.flatten_all()?, over(&centred.sqr()?)?.flatten_all()?);
        assert!((mean - want_mean)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5, "batch mean");
        assert!((var - want_var)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4, "batch variance");
        agree(&[x, w, b], &fused, &composite, 1e-4)
    }

    #[test]
    fn bias_softmax_matches_the_composite_with_and_without_mask() -> Result<()> {
        let (bw, heads, n, nw) = (6, 2, 9, 3);
        let mask = Tensor::randn(0f32, 3.0, (nw, n, n), &Device::Cpu)?;
        for m in [None, Some(&mask)] {
            let (x, b) = (var(&[bw, heads, n, n], 0.0)?, var(&[1, heads, n, n], 0.0)?);
            let fused = bias_softmax(x.as_tensor(), b.as_tensor(), m)?;
            let mut s = x.as_tensor().broadcast_add(b.as_tensor())?;
            if let Some(m) = m {
                s = s
                    .reshape((bw / nw, nw, heads, n, n))?
                    .broadcast_add(&m.unsqueeze(1)?.unsqueeze(0)?)?
                    .reshape((bw, heads, n, n))?;
            }
            let composite = candle_nn::ops::softmax(&s, D::Minus1)?;
            agree(&[x, b], &fused, &composite, 1e-4)?;
        }
        Ok(())
    }

    #[test]
    fn gelu_matches_candle() -> Result<()> {
        let x = var(&[3, 1000], 0.0)?;
        let scaled = (x.as_tensor() * 3.0)?;
        agree(std::slice::from_ref(&x), &gelu_erf(&scaled)?, &scaled.gelu_erf()?, 1e-5)
    }

    #[test]
    fn conv2d_matches_candle_for_strides_and_padding() -> Result<()> {
        // Strided cases square: candle's own backward pads only by the height's remainder.
        for (k, stride, pad, h, w) in
            [(3, 1, 1, 7, 6), (3, 2, 1, 9, 9), (3, 2, 1, 8, 8), (1, 1, 0, 5, 4), (2, 2, 0, 6, 6)]
        {
            let (x, wt, b) = (var(&[2, 3, h, w], 0.0)?, var(&[4, 3, k, k], 0.0)?, var(&[4], 0.0)?);
            let fused = conv2d(x.as_tensor(), wt.as_tensor(), Some(b.as_tensor()), stride, pad)?;
            let composite = x
                .as_tensor()
                .conv2d(wt.as_tensor(), pad, stride, 1, 1)?
                .broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1))?)?;
            agree(&[x, wt, b], &fused, &composite, 1e-4)?;
        }
        Ok(())
    }
}

//! Inference-only CPU kernels for the element-wise work that dominates a Swin forward once matrix
//! products are fast: exact-erf GELU, layer norm's rows, and softmax with the attention biases added on
//! the fly.
//!
//! candle 0.11's versions run `libm` `erff`/`expf` per element (GELU on one thread); here the loops are
//! written so LLVM vectorises them (AVX-512 or AVX2 + FMA when the CPU has them, see [`super::isa`]), with
//! polynomial `exp` (relative error < 2e-7) and Abramowitz-Stegun 7.1.26 `erf` (absolute error < 1.5e-7, plus f32 rounding),
//! split across threads with rayon. No backward: callers use them only when no input tracks gradients
//! (see [`super::ops`]), and only on CPU; [`super::grad_kernels`] reuses the GELU, layer-norm-row and softmax-row
//! forwards under the backward it adds for training.
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::isa::Isa;

/// e^x for x up to 88 (clamped), and exactly 0 below -86. 2^n * 2^f with a degree-6 polynomial for
/// 2^f. Plain `a * b + c`, not `mul_add`: without FMA in the target, `mul_add` is a slow software call.
///
/// The zero matters for speed: below e^-87 an f32 is subnormal, and each operation on a subnormal takes
/// a microcode assist on x86, some hundred cycles. A shifted window's mask (-100) sends half the
/// scores there, which made the fused window attention 12 times slower on those layers.
#[inline(always)]
pub(super) fn exp_approx(x: f32) -> f32 {
    let tiny = x < -86.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest without `round()` (which would not vectorise on baseline x86-64): adding
    // 1.5 * 2^23 leaves n = round(t) in the low bits of the sum's mantissa.
    let shifted = t + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let f = t - n; // in [-0.5, 0.5]
                   // 2^f, minimax-like Taylor coefficients of e^(f ln2).
    let p = 1.535_336_2e-4_f32;
    let p = p * f + 1.339_887_4e-3;
    let p = p * f + 9.618_437e-3;
    let p = p * f + 5.550_332_5e-2;
    let p = p * f + 2.402_264_9e-1;
    let p = p * f + 6.931_472e-1;
    let p = p * f + 1.0;
    // 2^n built from those bits: integer ops that vectorise (`n as i32` is a saturating conversion,
    // which LLVM turns into one scalar conversion and two fix-ups an element).
    let bits = shifted.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    let e = p * f32::from_bits(bits);
    if tiny {
        0.0
    } else {
        e
    }
}

/// erf(x), Abramowitz & Stegun 7.1.26.
#[inline(always)]
pub(super) fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.061_405_4_f32;
    let y = y * t + -1.453_152_1;
    let y = y * t + 1.421_413_8;
    let y = y * t + -0.284_496_74;
    let y = y * t + 0.254_829_6;
    let r = 1.0 - y * t * exp_approx(-a * a);
    r.copysign(x)
}

#[inline(always)]
fn gelu_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = 0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(src: &[f32], dst: &mut [f32]) {
    gelu_slice(src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_slice_avx512(src: &[f32], dst: &mut [f32]) {
    gelu_slice(src, dst)
}

fn gelu_chunk(src: &[f32], dst: &mut [f32]) {
    match Isa::get() {
        // SAFETY: `Isa::get` found the features on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { gelu_slice_avx512(src, dst) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { gelu_slice_avx2(src, dst) },
        _ => gelu_slice(src, dst),
    }
}

const CHUNK: usize = 16 * 1024;

pub(super) struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "photoseg-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(src) = storage else { bail!("gelu kernel: f32 only") };
        let Some((a, b)) = layout.contiguous_offsets() else { bail!("gelu kernel: input must be contiguous") };
        let src = &src[a..b];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| gelu_chunk(s, d));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Exact-erf GELU (PyTorch's `nn.GELU()`), f32 CPU inference only.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Gelu)
}

/// LayerNorm's forward over rows of `w.len()` values (PyTorch's `nn.LayerNorm`: weight, bias, biased
/// variance): `dst` from `src`. The sums run in 16 lanes so they vectorise; whole rows a task across
/// threads; AVX-512, AVX2 or plain code chosen at run time. The forward of
/// [`super::grad_kernels::layer_norm`], which serves inference as well as training.
pub(super) fn layer_norm_rows(src: &[f32], w: &[f32], b: &[f32], eps: f32, dst: &mut [f32]) {
    let c = w.len();
    let ln = LayerNormRows { w, b, eps };
    let chunk = c * (CHUNK / c).max(1);
    let isa = Isa::get();
    dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| match isa {
        // SAFETY: `Isa::get` found the features on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { ln.rows_avx512(s, d) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { ln.rows_avx2(s, d) },
        _ => ln.rows(s, d),
    });
}

struct LayerNormRows<'a> {
    w: &'a [f32],
    b: &'a [f32],
    eps: f32,
}

impl LayerNormRows<'_> {
    #[inline(always)]
    fn rows(&self, src: &[f32], dst: &mut [f32]) {
        let c = self.w.len();
        for (x, y) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c)) {
            let (mean, rstd) = row_stats(x, self.eps);
            y.iter_mut().zip(x).zip(self.w).zip(self.b).for_each(|(((y, &v), &w), &b)| *y = (v - mean) * rstd * w + b);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512(&self, src: &[f32], dst: &mut [f32]) {
        self.rows(src, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(&self, src: &[f32], dst: &mut [f32]) {
        self.rows(src, dst)
    }
}

/// Mean and reciprocal standard deviation (biased variance) of one row, the sums in 16 lanes.
#[inline(always)]
pub(super) fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lanes(row, 0.0, |a, v| a + v) / n;
    (mean, 1.0 / (centred_sum_of_squares(row, mean) / n + eps).sqrt())
}

/// Σ (x - mean)², in 16 lanes.
#[inline(always)]
fn centred_sum_of_squares(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
}

/// `dst = softmax(src + bias [+ mask])` over one row: the training kernel's forward
/// (grad_kernels), the same arithmetic as the fused window attention's.
#[inline(always)]
pub(super) fn softmax_row(src: &[f32], bias: &[f32], mask: Option<&[f32]>, dst: &mut [f32]) {
    dst.copy_from_slice(src);
    bias_softmax_in_place(dst, bias, mask);
}

/// `row = softmax(row + bias [+ mask])`.
#[inline(always)]
fn bias_softmax_in_place(row: &mut [f32], bias: &[f32], mask: Option<&[f32]>) {
    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    if let Some(m) = mask {
        row.iter_mut().zip(m).for_each(|(v, m)| *v += m);
    }
    softmax_in_place(row);
}

/// Window attention of one layer in one pass a (window, head): softmax(scale · q kᵀ + bias [+ mask]) v,
/// with q, k and v read in place from the qkv projection `[B*nW, N, 3C]` and each head's output written
/// in place into `[B*nW, N, C]`. The `[B*nW, heads, N, N]` score tensor of the unfused path is never
/// built (a 169 x 169 matrix a head stays in cache), and neither are the head split and merge copies.
/// `bias`: `[1, heads, N, N]`; `mask`: `[nW, N, N]` (window index = batch index mod nW). f32 CPU
/// inference only.
pub fn window_attention(
    qkv: &Tensor,
    heads: usize,
    scale: f32,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (bw, n, c3) = qkv.dims3()?;
    let c = c3 / 3;
    if c3 % 3 != 0 || c % heads != 0 || bias.elem_count() != heads * n * n {
        bail!("window attention: qkv {:?}, {heads} heads and bias {:?} do not match", qkv.dims(), bias.dims());
    }
    let qkv = qkv.contiguous()?;
    let bias = bias.contiguous()?;
    let mask = mask.map(|m| m.contiguous()).transpose()?;
    let (qkv_s, qkv_l) = qkv.storage_and_layout();
    let (bias_s, bias_l) = bias.storage_and_layout();
    let mask_windows = mask.as_ref().map(|m| m.dim(0)).transpose()?;
    let mask_sl = mask.as_ref().map(|m| m.storage_and_layout());
    let f32_slice = |s: &candle_core::Storage, l: &Layout| -> Result<*const f32> {
        match s {
            candle_core::Storage::Cpu(CpuStorage::F32(v)) => Ok(v[l.start_offset()..].as_ptr()),
            _ => bail!("window attention: f32 on the CPU only"),
        }
    };
    let op = WindowAttention {
        qkv: f32_slice(&qkv_s, qkv_l)?,
        bias: f32_slice(&bias_s, bias_l)?,
        mask: match (&mask_sl, mask_windows) {
            (Some((s, l)), Some(nw)) => Some((f32_slice(s, l)?, nw)),
            _ => None,
        },
        heads,
        n,
        c,
        scale,
    };
    let mut out = vec![0f32; bw * n * c];
    let dst = SendPtr(out.as_mut_ptr());
    let isa = Isa::get();
    (0..bw * heads).into_par_iter().for_each_init(Vec::new, |scratch, k| {
        let (w, h) = (k / heads, k % heads);
        match isa {
            // SAFETY: `Isa::get` found the features on this CPU; see `WindowAttention::head`.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { window_attention_avx512(&op, w, h, scratch, dst) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { window_attention_avx2(&op, w, h, scratch, dst) },
            // SAFETY: see `WindowAttention::head`.
            _ => unsafe { op.head(w, h, scratch, dst) },
        }
    });
    drop((qkv_s, bias_s, mask_sl));
    Tensor::from_vec(out, (bw, n, c), qkv.device())
}

/// A pointer the threads of [`window_attention`] write through: each (window, head) owns its own
/// columns of its own rows, so no two threads write the same element.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: writes through it are disjoint (see the type's comment); the buffer outlives the threads.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// [`window_attention`]'s inputs, read in place.
struct WindowAttention {
    qkv: *const f32,
    bias: *const f32,
    /// The mask and its window count.
    mask: Option<(*const f32, usize)>,
    heads: usize,
    n: usize,
    c: usize,
    scale: f32,
}
// SAFETY: read-only pointers into tensors that [`window_attention`] keeps alive while its threads run.
unsafe impl Send for WindowAttention {}
unsafe impl Sync for WindowAttention {}

impl WindowAttention {
    /// Window `w`, head `h`. Every Swin here has 32 channels a head: q, kᵀ and v are gathered into
    /// zero-padded blocks and multiplied 4 rows by 16 columns (scores) and 2 rows by 32 channels (output)
    /// at a time, so the accumulators stay in registers; other head widths take plain loops.
    /// (gemm's packing costs more than a 169 x 169 x 32 product takes.)
    ///
    /// # Safety
    /// The pointers must cover `[bw, n, 3c]`, `[heads, n, n]`, `[nW, n, n]` and the `[bw, n, c]` output.
    #[inline(always)]
    unsafe fn head(&self, w: usize, h: usize, scratch: &mut Vec<f32>, dst: SendPtr) {
        let (n, c) = (self.n, self.c);
        let hd = c / self.heads;
        let row = 3 * c;
        // Rows padded to a multiple of 4 (q) and columns to a multiple of 16 (kᵀ, scores).
        let (nr, nc) = (n.div_ceil(4) * 4, n.div_ceil(16) * 16);
        scratch.resize(nr * hd + hd * nc + nr * nc + n * hd, 0.0);
        let (qs, rest) = scratch.split_at_mut(nr * hd);
        let (kt, rest) = rest.split_at_mut(hd * nc);
        let (scores, vs) = rest.split_at_mut(nr * nc);
        // The scratch holds the last head's values: zero the padding (the rest is overwritten).
        qs[n * hd..].fill(0.0);
        kt.chunks_exact_mut(nc).for_each(|k| k[n..].fill(0.0));
        let base = self.qkv.add(w * n * row + h * hd);
        for j in 0..n {
            let t = |part: usize| std::slice::from_raw_parts(base.add(j * row + part * c), hd);
            qs[j * hd..(j + 1) * hd].iter_mut().zip(t(0)).for_each(|(d, &x)| *d = x * self.scale);
            for (d, &x) in t(1).iter().enumerate() {
                kt[d * nc + j] = x;
            }
            vs[j * hd..(j + 1) * hd].copy_from_slice(t(2));
        }
        if hd == HEAD {
            scores_blocked(qs, kt, scores, nr, nc);
        } else {
            for i in 0..n {
                let s = &mut scores[i * nc..i * nc + n];
                s.fill(0.0);
                for (d, &qd) in qs[i * hd..(i + 1) * hd].iter().enumerate() {
                    s.iter_mut().zip(&kt[d * nc..d * nc + n]).for_each(|(v, k)| *v += qd * k);
                }
            }
        }
        let bias = std::slice::from_raw_parts(self.bias.add(h * n * n), n * n);
        let mask = self.mask.map(|(m, nw)| std::slice::from_raw_parts(m.add((w % nw) * n * n), n * n));
        for i in 0..n {
            let row = i * n..(i + 1) * n;
            bias_softmax_in_place(&mut scores[i * nc..i * nc + n], &bias[row.clone()], mask.map(|m| &m[row]));
        }
        let out = |i: usize| std::slice::from_raw_parts_mut(dst.0.add((w * n + i) * c + h * hd), hd);
        if hd == HEAD {
            let mut i = 0;
            while i + 2 <= n {
                let acc = output_rows(&scores[i * nc..i * nc + n], &scores[(i + 1) * nc..(i + 1) * nc + n], vs);
                out(i).copy_from_slice(&acc[0]);
                out(i + 1).copy_from_slice(&acc[1]);
                i += 2;
            }
            if i < n {
                let acc = output_rows(&scores[i * nc..i * nc + n], &scores[i * nc..i * nc + n], vs);
                out(i).copy_from_slice(&acc[0]);
            }
        } else {
            for i in 0..n {
                let o = out(i);
                o.fill(0.0);
                for (j, &p) in scores[i * nc..i * nc + n].iter().enumerate() {
                    o.iter_mut().zip(&vs[j * hd..(j + 1) * hd]).for_each(|(a, v)| *a += p * v);
                }
            }
        }
    }
}

/// The head width of every Swin configuration here (embed / heads = 32), which has the blocked path.
const HEAD: usize = 32;

/// scores `[nr, nc]` = q `[nr, 32]` · kᵀ `[32, nc]`, 4 rows by 16 columns at a time.
#[inline(always)]
fn scores_blocked(q: &[f32], kt: &[f32], scores: &mut [f32], nr: usize, nc: usize) {
    for i0 in (0..nr).step_by(4) {
        for j0 in (0..nc).step_by(16) {
            let mut acc = [[0f32; 16]; 4];
            for d in 0..HEAD {
                let k: &[f32; 16] = kt[d * nc + j0..d * nc + j0 + 16].try_into().expect("16 columns");
                for (r, a) in acc.iter_mut().enumerate() {
                    let qv = q[(i0 + r) * HEAD + d];
                    for (x, &kv) in a.iter_mut().zip(k) {
                        *x += qv * kv;
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                scores[(i0 + r) * nc + j0..(i0 + r) * nc + j0 + 16].copy_from_slice(a);
            }
        }
    }
}

/// Two output rows `p0 · v` and `p1 · v` (v `[n, 32]`).
#[inline(always)]
fn output_rows(p0: &[f32], p1: &[f32], v: &[f32]) -> [[f32; HEAD]; 2] {
    let mut acc = [[0f32; HEAD]; 2];
    for ((&a, &b), vj) in p0.iter().zip(p1).zip(v.chunks_exact(HEAD)) {
        let vj: &[f32; HEAD] = vj.try_into().expect("32 channels");
        for d in 0..HEAD {
            acc[0][d] += a * vj[d];
            acc[1][d] += b * vj[d];
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn window_attention_avx512(op: &WindowAttention, w: usize, h: usize, scratch: &mut Vec<f32>, dst: SendPtr) {
    op.head(w, h, scratch, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window_attention_avx2(op: &WindowAttention, w: usize, h: usize, scratch: &mut Vec<f32>, dst: SendPtr) {
    op.head(w, h, scratch, dst)
}

/// Softmax of one row, in place. The maximum and the sum run in 16 lanes: a plain float reduction is
/// sequential (its order is part of its result), which would keep the whole loop, `exp` included, scalar.
#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let max = lanes(row, f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp_approx(*v - max));
    let inv = 1.0 / lanes(row, 0.0, |a, b| a + b);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `x` folded with `f` in 16 independent lanes, then across them.
#[inline(always)]
fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32 + Copy) -> f32 {
    let mut acc = [init; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    tail.iter().fold(acc.into_iter().fold(init, f), |a, &v| f(a, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let e = exp_approx(x);
            assert!(((e - x.exp()) / x.exp()).abs() < 2e-6, "exp({x}) = {e}, want {}", x.exp());
            // The series reference is exact enough on [-3, 3]; beyond, erf is within 2.3e-5 of +-1.
            let want = if x.abs() <= 3.0 { libm_erf(x as f64) as f32 } else { x.signum() };
            // A&S 7.1.26 is good to 1.5e-7 in exact arithmetic; f32 rounding adds a few 1e-7.
            let tol = if x.abs() <= 3.0 { 5e-7 } else { 2.3e-5 };
            assert!((erf_approx(x) - want).abs() < tol, "erf({x}) = {}, want {want}", erf_approx(x));
        }
        // Never subnormal (slow to compute with): normal and accurate down to -86, zero below.
        for i in -1000..=-200 {
            let x = i as f32 * 0.1;
            let e = exp_approx(x);
            if x < -86.0 {
                assert_eq!(e, 0.0, "exp({x})");
            } else {
                // x · log2(e) rounds in f32, so the relative error grows with |x|: 2.6e-6 at -86.
                assert!(e.is_normal() && ((e - x.exp()) / x.exp()).abs() < 4e-6, "exp({x}) = {e}, want {}", x.exp());
            }
        }
    }

    /// erf in f64 by its Taylor series, good to 1e-12 on [-3, 3].
    fn libm_erf(x: f64) -> f64 {
        // Series: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 400.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_candle() -> Result<()> {
        let x = Tensor::randn(0f32, 3.0, (37, 129), &Device::Cpu)?;
        let d = (gelu_erf(&x)? - x.gelu_erf()?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        Ok(())
    }

    #[test]
    fn fused_window_attention_matches_the_unfused_ops() -> Result<()> {
        let dev = Device::Cpu;
        // Window 5 x 5 (N = 25: padded blocks), 2 windows of 2 photos, 3 heads of 4 channels (plain
        // loops) or 32 (blocked); with and without a mask.
        let (b, nw, heads, n) = (2, 2, 3, 25);
        let bias = Tensor::randn(0f32, 1.0, (1, heads, n, n), &dev)?;
        let mask = (Tensor::randn(0f32, 1.0, (nw, n, n), &dev)?.ge(0.0)?.to_dtype(candle_core::DType::F32)? * -100.0)?;
        let scale = 0.5f32;
        for (hd, m) in [(4, None), (4, Some(&mask)), (32, None), (32, Some(&mask))] {
            let c = heads * hd;
            let qkv = Tensor::randn(0f32, 1.0, (b * nw, n, 3 * c), &dev)?;
            let split = qkv.reshape((b * nw, n, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
            let q = (split.get(0)?.contiguous()? * scale as f64)?;
            let k = split.get(1)?.contiguous()?;
            let v = split.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let scores = match m {
                Some(m) => scores.reshape((b, nw, heads, n, n))?.broadcast_add(&m.unsqueeze(1)?.unsqueeze(0)?)?,
                None => scores,
            };
            let attn = candle_nn::ops::softmax(&scores.reshape((b * nw, heads, n, n))?, D::Minus1)?;
            let want = attn.matmul(&v)?.transpose(1, 2)?.reshape((b * nw, n, c))?;
            let got = window_attention(&qkv, heads, scale, &bias, m)?;
            let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "fused and unfused window attention differ by {d} (head {hd}, mask: {})", m.is_some());
        }
        Ok(())
    }
}

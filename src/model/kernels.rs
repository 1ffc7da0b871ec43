//! Inference-only CPU kernels for the element-wise work that dominates a Swin forward once matrix
//! products are fast: exact-erf GELU and softmax with the attention biases added on the fly.
//!
//! candle 0.11's versions run `libm` `erff`/`expf` per element (GELU on one thread); here the loops are
//! written so LLVM vectorises them (AVX2 + FMA when the CPU has them, chosen at run time), with
//! polynomial `exp` (relative error < 2e-7) and Abramowitz-Stegun 7.1.26 `erf` (absolute error < 1.5e-7, plus f32 rounding),
//! split across threads with rayon. No backward: callers use them only when no input tracks gradients
//! (see [`super::ops`]), and only on CPU; [`super::grad_kernels`] reuses the GELU and softmax-row
//! forwards under the backward it adds for training.
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// e^x for x in roughly [-87, 88] (clamped). 2^n * 2^f with a degree-6 polynomial for 2^f. Plain `a * b + c`,
/// not `mul_add`: without FMA in the target, `mul_add` is a slow software call.
#[inline(always)]
pub(super) fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest without `round()` (which would not vectorise on baseline x86-64).
    let n = (t + 12_582_912.0) - 12_582_912.0;
    let f = t - n; // in [-0.5, 0.5]
                   // 2^f, minimax-like Taylor coefficients of e^(f ln2).
    let p = 1.535_336_2e-4_f32;
    let p = p * f + 1.339_887_4e-3;
    let p = p * f + 9.618_437e-3;
    let p = p * f + 5.550_332_5e-2;
    let p = p * f + 2.402_264_9e-1;
    let p = p * f + 6.931_472e-1;
    let p = p * f + 1.0;
    let bits = ((n as i32 + 127) << 23) as u32;
    p * f32::from_bits(bits)
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

fn gelu_chunk(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected on this CPU just above.
        return unsafe { gelu_slice_avx2(src, dst) };
    }
    gelu_slice(src, dst)
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

/// Softmax over the last dim of `[B * nW, heads, N, N]` scores after adding the relative-position bias
/// `[heads, N, N]` and, for shifted windows, the mask `[nW, N, N]` (window index = batch index mod nW).
struct BiasSoftmax {
    bias: Vec<f32>,
    mask: Option<(usize, Vec<f32>)>,
    heads: usize,
    n: usize,
}

#[inline(always)]
pub(super) fn softmax_row(src: &[f32], bias: &[f32], mask: Option<&[f32]>, dst: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    match mask {
        Some(m) => {
            for j in 0..src.len() {
                dst[j] = src[j] + bias[j] + m[j];
            }
        }
        None => {
            for j in 0..src.len() {
                dst[j] = src[j] + bias[j];
            }
        }
    }
    for &v in dst.iter() {
        max = max.max(v);
    }
    let mut sum = 0f32;
    for v in dst.iter_mut() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in dst.iter_mut() {
        *v *= inv;
    }
}

impl BiasSoftmax {
    /// One `[N, N]` attention matrix (batch-window `bw`, head `h`).
    #[inline(always)]
    fn matrix(&self, bw: usize, h: usize, src: &[f32], dst: &mut [f32]) {
        let n = self.n;
        let bias = &self.bias[h * n * n..(h + 1) * n * n];
        let mask = self.mask.as_ref().map(|(nw, m)| &m[(bw % nw) * n * n..(bw % nw + 1) * n * n]);
        for i in 0..n {
            let r = i * n..(i + 1) * n;
            softmax_row(&src[r.clone()], &bias[r.clone()], mask.map(|m| &m[r.clone()]), &mut dst[r]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bias_softmax_avx2(op: &BiasSoftmax, bw: usize, h: usize, src: &[f32], dst: &mut [f32]) {
    op.matrix(bw, h, src, dst)
}

impl CustomOp1 for BiasSoftmax {
    fn name(&self) -> &'static str {
        "photoseg-bias-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(src) = storage else { bail!("softmax kernel: f32 only") };
        let Some((a, b)) = layout.contiguous_offsets() else { bail!("softmax kernel: input must be contiguous") };
        let src = &src[a..b];
        let nn = self.n * self.n;
        let mut dst = vec![0f32; src.len()];
        #[cfg(target_arch = "x86_64")]
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        dst.par_chunks_mut(nn).zip(src.par_chunks(nn)).enumerate().for_each(|(k, (d, s))| {
            let (bw, h) = (k / self.heads, k % self.heads);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the features were detected on this CPU above.
                return unsafe { bias_softmax_avx2(self, bw, h, s, d) };
            }
            self.matrix(bw, h, s, d)
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// softmax(scores + bias [+ mask]) for window attention; `scores` `[B*nW, heads, N, N]`, `bias`
/// `[1, heads, N, N]`, `mask` `[nW, N, N]`. f32 CPU inference only.
pub fn bias_softmax(scores: &Tensor, bias: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (_, heads, n, n2) = scores.dims4()?;
    if n != n2 || bias.elem_count() != heads * n * n {
        bail!("bias softmax: scores {:?} and bias {:?} do not match", scores.dims(), bias.dims());
    }
    let bias = bias.flatten_all()?.to_vec1::<f32>()?;
    let mask = match mask {
        Some(m) => Some((m.dim(0)?, m.flatten_all()?.to_vec1::<f32>()?)),
        None => None,
    };
    scores.contiguous()?.apply_op1_no_bwd(&BiasSoftmax { bias, mask, heads, n })
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
        assert_eq!(exp_approx(-200.0), exp_approx(-87.0));
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
    fn bias_softmax_matches_composite() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nw, heads, n) = (2, 3, 2, 5);
        let s = Tensor::randn(0f32, 2.0, (b * nw, heads, n, n), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, (1, heads, n, n), &dev)?;
        let mask = Tensor::randn(0f32, 1.0, (nw, n, n), &dev)?.ge(0.0)?.to_dtype(candle_core::DType::F32)?;
        let mask = (mask * -100.0)?;
        let want = s
            .broadcast_add(&bias)?
            .reshape((b, nw, heads, n, n))?
            .broadcast_add(&mask.unsqueeze(1)?.unsqueeze(0)?)?
            .reshape((b * nw, heads, n, n))?;
        let want = candle_nn::ops::softmax(&want, D::Minus1)?;
        let got = bias_softmax(&s, &bias, Some(&mask))?;
        let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        Ok(())
    }
}

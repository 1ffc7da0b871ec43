//! Inference-only CPU kernels for the element-wise work that dominates a Swin forward once matrix
//! products are fast: exact-erf GELU and softmax with the attention biases added on the fly.
//!
//! candle 0.11's versions run `libm` `erff`/`expf` per element (GELU on one thread); here the loops are
//! written so LLVM vectorises them (AVX2 + FMA when the CPU has them, chosen at run time), with
//! polynomial `exp` (relative error < 2e-7) and Abramowitz-Stegun 7.1.26 `erf` (absolute error < 1.5e-7, plus f32 rounding),
//! split across threads with rayon. No backward: callers use them only when no input tracks gradients
//! (see [`super::ops`]), and only on CPU.
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// e^x for x in roughly [-87, 88] (clamped). 2^n * 2^f with a degree-6 polynomial for 2^f. Plain `a * b + c`,
/// not `mul_add`: without FMA in the target, `mul_add` is a slow software call.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
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
fn erf_approx(x: f32) -> f32 {
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

struct Gelu;

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
fn softmax_row(src: &[f32], bias: &[f32], mask: Option<&[f32]>, dst: &mut [f32]) {
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

/// What [`triphasic_pooled`] computes for a group of N photos.
#[derive(Debug, Clone)]
pub struct PooledTriphasic {
    /// The language maps M_l, `[N, HW]`.
    pub language_map: Vec<f32>,
    /// The visual maps of the K best-ranked prototypes (zeros past the group's size), `[N, K, HW]`.
    pub maps: Vec<f32>,
    /// concat(mean over HW, max over HW) of z_n = (V_n, M_l[n], maps[n]), `[N, 2 (C + 1 + K)]`.
    pub pooled: Vec<f32>,
    /// The hierarchizer's prototype order, best first.
    pub order: Vec<usize>,
}

/// The decision half of the head (TQM, hierarchizer with top-K maps, pooling of z_n) fused for the CPU:
/// the same maths as `Head::triphasic` with `Pairs::TopK` up to the pooled vector, but each photo's V
/// (`v`: `[N, C, HW]`, contiguous) is read in place instead of through a dozen tensor ops that each write
/// a copy of it. `l_proj`, `anti_proj`: L' and L'_anti, `[C]`. Photos run in parallel.
///
/// Two sweeps over a photo's V, while it is in the L1 cache, give |V[:, p]|, M_l, the mean and max of
/// every V channel and the photo's prototype; one more, once the hierarchizer has ranked the group, gives
/// all K visual maps (each channel plane read once for the K maps, not once per map). Sums and maxima run
/// in eight lanes (AVX2 when the CPU has it), so they may differ from a sequential sum by float rounding.
pub fn triphasic_pooled(
    v: &[f32],
    (n, c, hw): (usize, usize, usize),
    k: usize,
    l_proj: &[f32],
    anti_proj: &[f32],
) -> PooledTriphasic {
    assert_eq!(v.len(), n * c * hw, "V is [N, C, HW]");
    let l_hat = unit(l_proj);
    let plane = (c * hw).max(1);
    let c_z = c + 1 + k;
    let hw1 = hw.max(1);
    let mut out = PooledTriphasic {
        language_map: vec![0f32; n * hw],
        maps: vec![0f32; n * k * hw],
        pooled: vec![0f32; n * 2 * c_z],
        order: Vec::new(),
    };
    let mut inv = vec![0f32; n * hw];
    let mut protos = vec![0f32; n * c];
    #[cfg(target_arch = "x86_64")]
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    // Sweeps 1 and 2, per photo: |V[:, p]|^-1, M_l, V's pooled channels, the prototype.
    v.par_chunks(plane)
        .zip(inv.par_chunks_mut(hw1))
        .zip(out.language_map.par_chunks_mut(hw1))
        .zip(protos.par_chunks_mut(c.max(1)))
        .zip(out.pooled.par_chunks_mut(2 * c_z))
        .for_each(|((((vn, inv), m_l), proto), pooled)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the features were detected on this CPU above.
                return unsafe { photo_first_avx2(vn, hw, &l_hat, inv, m_l, proto, pooled) };
            }
            photo_first(vn, hw, &l_hat, inv, m_l, proto, pooled)
        });
    let dist = |p: &[f32], x: &[f32]| p.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
    let s_pos: Vec<f32> = protos.chunks(c.max(1)).take(n).map(|p| dist(p, l_proj)).collect();
    let s_neg: Vec<f32> = protos.chunks(c.max(1)).take(n).map(|p| dist(p, anti_proj)).collect();
    out.order = super::hierarchizer::order(&s_pos, &s_neg);
    // The kept prototypes, unit length, `[kept, C]`; maps past them stay zero.
    let kept: Vec<f32> = out.order.iter().take(k).flat_map(|&i| unit(&protos[i * c..(i + 1) * c])).collect();
    // Sweep 3, per photo: the K visual maps and their pooled channels.
    v.par_chunks(plane)
        .zip(inv.par_chunks(hw1))
        .zip(out.maps.par_chunks_mut((k * hw).max(1)))
        .zip(out.pooled.par_chunks_mut(2 * c_z))
        .for_each(|(((vn, inv), maps), pooled)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the features were detected on this CPU above.
                return unsafe { photo_maps_avx2(vn, hw, c, &kept, inv, maps, pooled) };
            }
            photo_maps(vn, hw, c, &kept, inv, maps, pooled)
        });
    out
}

const EPS: f32 = 1e-8; // as tqm::l2_normalize

fn unit(x: &[f32]) -> Vec<f32> {
    let norm = x.iter().map(|a| a * a).sum::<f32>().sqrt().max(EPS);
    x.iter().map(|a| a / norm).collect()
}

/// Sum and max of `x` in eight lanes (so the loop vectorises); max of an empty slice is -inf.
#[inline(always)]
fn sum_max(x: &[f32]) -> (f32, f32) {
    let mut s = [0f32; 8];
    let mut m = [f32::NEG_INFINITY; 8];
    let mut it = x.chunks_exact(8);
    for ch in &mut it {
        for i in 0..8 {
            s[i] += ch[i];
            m[i] = m[i].max(ch[i]);
        }
    }
    let (mut sum, mut max) = ((s[0] + s[4]) + (s[1] + s[5]) + ((s[2] + s[6]) + (s[3] + s[7])), f32::NEG_INFINITY);
    for &x in &m {
        max = max.max(x);
    }
    for &x in it.remainder() {
        sum += x;
        max = max.max(x);
    }
    (sum, max)
}

/// Dot product of `a` and `b` in eight lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    let (mut ia, mut ib) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ia).zip(&mut ib) {
        for i in 0..8 {
            s[i] += x[i] * y[i];
        }
    }
    let mut sum = (s[0] + s[4]) + (s[1] + s[5]) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (x, y) in ia.remainder().iter().zip(ib.remainder()) {
        sum += x * y;
    }
    sum
}

/// One photo's first two sweeps (see [`triphasic_pooled`]): `inv` = 1 / |V[:, p]|, `m_l` = M_l, `proto`,
/// and the pooled mean / max of V's channels and of M_l into `pooled` (`[2 C_z]`).
#[inline(always)]
fn photo_first(
    vn: &[f32],
    hw: usize,
    l_hat: &[f32],
    inv: &mut [f32],
    m_l: &mut [f32],
    proto: &mut [f32],
    pooled: &mut [f32],
) {
    let c = l_hat.len();
    let c_z = pooled.len() / 2;
    let scale = 1.0 / hw as f32;
    // inv and m_l first hold sum of squares and dot with L-hat.
    inv.fill(0.0);
    m_l.fill(0.0);
    for (j, (ch, &lc)) in vn.chunks_exact(hw).zip(l_hat).enumerate() {
        for ((s, d), &x) in inv.iter_mut().zip(m_l.iter_mut()).zip(ch) {
            *s += x * x;
            *d += x * lc;
        }
        let (sum, max) = sum_max(ch);
        pooled[j] = sum * scale;
        pooled[c_z + j] = max;
    }
    for (i, m) in inv.iter_mut().zip(m_l.iter_mut()) {
        *i = 1.0 / i.sqrt().max(EPS);
        *m *= *i;
    }
    let (sum, max) = sum_max(m_l);
    pooled[c] = sum * scale;
    pooled[c_z + c] = max;
    for (p, ch) in proto.iter_mut().zip(vn.chunks_exact(hw)) {
        *p = dot(ch, m_l) * scale;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn photo_first_avx2(
    vn: &[f32],
    hw: usize,
    l_hat: &[f32],
    inv: &mut [f32],
    m_l: &mut [f32],
    proto: &mut [f32],
    pooled: &mut [f32],
) {
    photo_first(vn, hw, l_hat, inv, m_l, proto, pooled)
}

/// One photo's third sweep: the visual maps of the `kept` unit prototypes (`[kept, C]`) into `maps`
/// (`[K, HW]`, zeros past the kept ones) and their pooled mean / max into `pooled`.
#[inline(always)]
fn photo_maps(vn: &[f32], hw: usize, c: usize, kept: &[f32], inv: &[f32], maps: &mut [f32], pooled: &mut [f32]) {
    let c_z = pooled.len() / 2;
    let n_kept = kept.len() / c.max(1);
    maps.fill(0.0);
    if hw == 0 {
        return;
    }
    for (ci, ch) in vn.chunks_exact(hw).enumerate() {
        for (kk, map) in maps.chunks_exact_mut(hw).take(n_kept).enumerate() {
            let w = kept[kk * c + ci];
            for (m, &x) in map.iter_mut().zip(ch) {
                *m += x * w;
            }
        }
    }
    for (kk, map) in maps.chunks_exact_mut(hw).enumerate() {
        if kk < n_kept {
            for (m, i) in map.iter_mut().zip(inv) {
                *m *= i;
            }
        }
        let (sum, max) = sum_max(map);
        pooled[c + 1 + kk] = sum / hw as f32;
        pooled[c_z + c + 1 + kk] = max;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn photo_maps_avx2(
    vn: &[f32],
    hw: usize,
    c: usize,
    kept: &[f32],
    inv: &[f32],
    maps: &mut [f32],
    pooled: &mut [f32],
) {
    photo_maps(vn, hw, c, kept, inv, maps, pooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// The kernel as first written (sequential sums, one sweep of V per map): the reference for the
    /// lane-wise, fewer-sweep version.
    fn triphasic_pooled_reference(
        v: &[f32],
        (_, c, hw): (usize, usize, usize),
        k: usize,
        l_proj: &[f32],
        anti_proj: &[f32],
    ) -> PooledTriphasic {
        let plane = c * hw;
        let l_hat = unit(l_proj);
        let per_photo: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = v
            .chunks(plane)
            .map(|vn| {
                let mut sq = vec![0f32; hw];
                let mut dot = vec![0f32; hw];
                for (ch, &lc) in vn.chunks_exact(hw).zip(&l_hat) {
                    for ((s, d), &x) in sq.iter_mut().zip(dot.iter_mut()).zip(ch) {
                        *s += x * x;
                        *d += x * lc;
                    }
                }
                let inv: Vec<f32> = sq.iter().map(|s| 1.0 / s.sqrt().max(EPS)).collect();
                let m_l: Vec<f32> = dot.iter().zip(&inv).map(|(d, i)| d * i).collect();
                let proto: Vec<f32> = vn
                    .chunks_exact(hw)
                    .map(|ch| ch.iter().zip(&m_l).map(|(x, m)| x * m).sum::<f32>() / hw as f32)
                    .collect();
                (inv, m_l, proto)
            })
            .collect();
        let dist = |p: &[f32], x: &[f32]| p.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
        let s_pos: Vec<f32> = per_photo.iter().map(|(_, _, p)| dist(p, l_proj)).collect();
        let s_neg: Vec<f32> = per_photo.iter().map(|(_, _, p)| dist(p, anti_proj)).collect();
        let order = crate::model::hierarchizer::order(&s_pos, &s_neg);
        let kept: Vec<Vec<f32>> = order.iter().take(k).map(|&i| unit(&per_photo[i].2)).collect();
        let c_z = c + 1 + k;
        let mut out = PooledTriphasic { language_map: vec![], maps: vec![], pooled: vec![], order };
        for (vn, (inv, m_l, _)) in v.chunks(plane).zip(&per_photo) {
            let mut maps = vec![0f32; k * hw];
            for (map, p_hat) in maps.chunks_exact_mut(hw).zip(&kept) {
                for (ch, &pc) in vn.chunks_exact(hw).zip(p_hat) {
                    for (m, &x) in map.iter_mut().zip(ch) {
                        *m += x * pc;
                    }
                }
                for (m, i) in map.iter_mut().zip(inv) {
                    *m *= i;
                }
            }
            let mut pooled = vec![0f32; 2 * c_z];
            let channels = vn.chunks_exact(hw).chain(std::iter::once(m_l.as_slice())).chain(maps.chunks_exact(hw));
            for (j, ch) in channels.enumerate() {
                pooled[j] = ch.iter().sum::<f32>() / hw as f32;
                pooled[c_z + j] = ch.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            }
            out.language_map.extend_from_slice(m_l);
            out.maps.extend_from_slice(&maps);
            out.pooled.extend_from_slice(&pooled);
        }
        out
    }

    #[test]
    fn fused_kernel_matches_its_sequential_reference() {
        // Sizes that are not multiples of the eight lanes, groups smaller and larger than K.
        for (n, c, hw, k) in [(1, 13, 35, 4), (3, 8, 64, 8), (10, 13, 35, 4), (17, 64, 64, 8), (5, 9, 7, 3)] {
            let v: Vec<f32> = Tensor::randn(0f32, 1.0, n * c * hw, &Device::Cpu).unwrap().to_vec1().unwrap();
            let l: Vec<f32> = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap().to_vec1().unwrap();
            let anti: Vec<f32> = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap().to_vec1().unwrap();
            let got = triphasic_pooled(&v, (n, c, hw), k, &l, &anti);
            let want = triphasic_pooled_reference(&v, (n, c, hw), k, &l, &anti);
            assert_eq!(got.order, want.order, "{n} {c} {hw} {k}");
            for (name, a, b) in [
                ("language map", &got.language_map, &want.language_map),
                ("maps", &got.maps, &want.maps),
                ("pooled", &got.pooled, &want.pooled),
            ] {
                assert_eq!(a.len(), b.len(), "{name}");
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{name} ({n} {c} {hw} {k}): {x} vs {y}");
                }
            }
        }
    }

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

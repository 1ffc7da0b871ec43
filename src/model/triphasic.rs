//! The decision half of the head fused for the CPU: TQM's language map, the prototypes, the
//! hierarchizer's order, the top-K visual maps and the pooled z_n, in a few sweeps over each photo's V.
//! It computes what `tqm.rs`, `hierarchizer.rs` and `Head::triphasic` compute with tensors (no
//! backward), and is what `photoseg query` runs to decide an album on the CPU.
use rayon::prelude::*;

use super::hierarchizer;

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
    let avx2 = super::isa::Isa::get().has_avx2();
    // Sweeps 1 and 2, per photo: |V[:, p]|^-1, M_l, V's pooled channels, the prototype.
    v.par_chunks(plane)
        .zip(inv.par_chunks_mut(hw1))
        .zip(out.language_map.par_chunks_mut(hw1))
        .zip(protos.par_chunks_mut(c.max(1)))
        .zip(out.pooled.par_chunks_mut(2 * c_z))
        .for_each(|((((vn, inv), m_l), proto), pooled)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `Isa::get` found the features on this CPU.
                return unsafe { photo_first_avx2(vn, hw, &l_hat, inv, m_l, proto, pooled) };
            }
            photo_first(vn, hw, &l_hat, inv, m_l, proto, pooled)
        });
    let dist = |p: &[f32], x: &[f32]| p.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
    let s_pos: Vec<f32> = protos.chunks(c.max(1)).take(n).map(|p| dist(p, l_proj)).collect();
    let s_neg: Vec<f32> = protos.chunks(c.max(1)).take(n).map(|p| dist(p, anti_proj)).collect();
    out.order = hierarchizer::order(&s_pos, &s_neg);
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
                // SAFETY: `Isa::get` found the features on this CPU.
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
    use candle_core::{Device, Tensor};

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
        let order = hierarchizer::order(&s_pos, &s_neg);
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
}

//! The bytes photoseg caches per photo: [`VisualFeatures`] in a small versioned binary format.
//!
//! Layout (all little-endian):
//!
//! ```text
//! "PSVF"            magic, 4 bytes
//! version  u8       = 1
//! codec    u8       1 = f16, 2 = int8, 6 = lr8 (V at low rank in int8, laterals int8); 3, 4 and 5 are
//!                   not used (refused when read)
//! reserved u16      = 0
//! 4 x dims [u32; 4] N, C, H, W of v, lat0, lat1, lat3 (in that order)
//! 4 x data          each map in turn, NCHW order, in the codec's format for that map:
//!                     f16:  N*C*H*W half floats
//!                     int8: N*C f32 scales (one per photo and channel), then N*C*H*W i8
//!                     low rank (V of lr8): per photo, with r = [`low_rank`]`(C, H*W)`: C f32 means
//!                           and C f32 standard deviations of V's channels; an orthonormal basis Q of
//!                           r directions of the standardised channels V', as an int8 map of r planes
//!                           of C values (r f32 scales, r*C i8); the coordinates A = Q^T V' as an int8
//!                           map of r planes of H*W values (r scales, r*H*W i8). V ~ mean + std * Q A.
//! ```
//!
//! V comes first, so the decision (which reads V alone) needs only the blob's first
//! [`Layout::v_end`] bytes: [`decode_v_into`] decodes that prefix and nothing else.
//!
//! f16 halves the f32 size and keeps ~3 significant digits, far below what changes an answer; int8
//! halves it again with a symmetric per-channel scale (max |x| / 127), because channels of a 1x1
//! projection differ in range by orders of magnitude and one scale per map would crush the small ones.
//! docs/library.md has the measured effect of each codec on answers. The codec is part of the backbone
//! id, so features of two codecs are never mixed. lr8 stores fewer values rather than fewer bits: a
//! photo's standardised V (C channels at H*W positions) is kept as its best rank-5C/16 approximation,
//! found per photo by subspace iteration, since V's channels are far from independent, while four bits
//! a value (the other way under 256 KB at the paper's shape) moves masks and a trained model's
//! decisions (docs/library.md). Decoding checks the length exactly: a truncated or padded blob is an
//! error, never a silently wrong tensor.
use candle_core::{bail, DType, Device, Result, Tensor};
use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::neck::VisualFeatures;

const MAGIC: &[u8; 4] = b"PSVF";
const VERSION: u8 = 1;
/// Bytes before the first map's data.
pub const HEADER: usize = 8 + 4 * 16;

/// How one map is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFormat {
    F16,
    /// Symmetric, one f32 scale per (photo, channel).
    Int8,
    /// Per photo the channels' means and deviations (f32) and a rank-r factorisation of the standardised
    /// V, Q A (r = [`low_rank`]), both factors in int8.
    LowRank8,
}

/// The rank lr8 keeps of a `C x HW` map: 5/16 of its channels (160 of the paper's 512: the most that
/// keeps its photo, with laterals of 4 channels in int8, under 256 KB), at least 1, at most its positions.
pub fn low_rank(c: usize, hw: usize) -> usize {
    (5 * c).div_ceil(16).min(hw).max(1)
}

impl MapFormat {
    /// Bytes of a `[n, c, h, w]` map in this format.
    pub fn len(self, [n, c, h, w]: [usize; 4]) -> usize {
        let count = n * c * h * w;
        match self {
            MapFormat::F16 => 2 * count,
            MapFormat::Int8 => 4 * n * c + count,
            MapFormat::LowRank8 => {
                let r = low_rank(c, h * w);
                n * (8 * c + MapFormat::Int8.len([1, r, 1, c]) + MapFormat::Int8.len([1, r, h, w]))
            }
        }
    }
}

/// How the four maps are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureCodec {
    /// IEEE half precision: 2 bytes a value.
    #[default]
    F16,
    /// Symmetric int8 with one f32 scale per (photo, channel): ~1 byte a value.
    Int8,
    /// V as its rank-5C/16 approximation with both factors in int8, the three lateral maps as int8.
    LowRank8,
}

impl FeatureCodec {
    /// Every codec, for benchmarks and tests.
    pub const ALL: [FeatureCodec; 3] = [FeatureCodec::F16, FeatureCodec::Int8, FeatureCodec::LowRank8];

    /// Short name, part of the backbone id (`"f16"`, `"int8"`, `"lr8"`).
    pub fn name(self) -> &'static str {
        match self {
            FeatureCodec::F16 => "f16",
            FeatureCodec::Int8 => "int8",
            FeatureCodec::LowRank8 => "lr8",
        }
    }

    /// Parses [`FeatureCodec::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn tag(self) -> u8 {
        match self {
            FeatureCodec::F16 => 1,
            FeatureCodec::Int8 => 2,
            FeatureCodec::LowRank8 => 6,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.tag() == tag)
    }

    /// The format of map `i` (0 = V, then lat0, lat1, lat3).
    pub fn map_format(self, i: usize) -> MapFormat {
        match (self, i) {
            (FeatureCodec::F16, _) => MapFormat::F16,
            (FeatureCodec::Int8, _) | (FeatureCodec::LowRank8, 1..) => MapFormat::Int8,
            (FeatureCodec::LowRank8, 0) => MapFormat::LowRank8,
        }
    }

    /// Bytes an encoding of maps with these `[N, C, H, W]` dims takes (for sizing, without encoding).
    pub fn encoded_len(self, dims: &[[usize; 4]; 4]) -> usize {
        HEADER + dims.iter().enumerate().map(|(i, &d)| self.map_format(i).len(d)).sum::<usize>()
    }
}

fn maps(f: &VisualFeatures) -> [&Tensor; 4] {
    [&f.v, &f.lat0, &f.lat1, &f.lat3]
}

/// Encodes features (any N) with `codec`.
pub fn encode(feats: &VisualFeatures, codec: FeatureCodec) -> Result<Vec<u8>> {
    let mut dims = [[0usize; 4]; 4];
    for (d, t) in dims.iter_mut().zip(maps(feats)) {
        let (n, c, h, w) = t.dims4()?;
        *d = [n, c, h, w];
    }
    let mut out = Vec::with_capacity(codec.encoded_len(&dims));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, codec.tag(), 0, 0]);
    for d in &dims {
        for &x in d {
            let x = u32::try_from(x).map_err(|_| candle_core::Error::Msg(format!("dimension {x} too large")))?;
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    for (i, (t, &[_, c, h, w])) in maps(feats).into_iter().zip(&dims).enumerate() {
        let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        encode_map(&values, c, h * w, codec.map_format(i), &mut out);
    }
    Ok(out)
}

/// Power iterations of the subspace iteration in [`low_rank_factors`].
const SUBSPACE_ITERATIONS: usize = 4;

/// A rank-`r` factorisation of the row-major `c x hw` matrix `m`: `q` holds `r` orthonormal rows of
/// `c` values (the basis, as rows), `a = q m` holds `r` rows of `hw` values, and `q^T a` approximates
/// `m`. Subspace iteration from a fixed pseudo-random start (the same input gives the same bytes): it
/// converges on the `r` leading left singular vectors, the best rank-`r` approximation in the least
/// squares sense.
fn low_rank_factors(m: &[f32], c: usize, hw: usize, r: usize) -> (Vec<f32>, Vec<f32>) {
    debug_assert_eq!(m.len(), c * hw);
    // q (r x c) starts as r pseudo-random combinations of m's columns: row k = m . omega_k.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut omega = vec![0f32; r * hw];
    for x in omega.iter_mut() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        *x = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
    }
    let mut q = times_transposed(&omega, m, r, hw, c); // r x c
    let mut z = vec![0f32; r * hw];
    for _ in 0..SUBSPACE_ITERATIONS {
        orthonormalise(&mut q, r, c);
        rows_times(&q, m, r, c, hw, &mut z); // z = q m (r x hw)
        q = times_transposed(&z, m, r, hw, c); // q = z m^T (r x c)
    }
    orthonormalise(&mut q, r, c);
    rows_times(&q, m, r, c, hw, &mut z);
    (q, z)
}

/// `out = a b` for `a` (r x c) and row-major `b` (c x hw): rows of `b` added in turn (contiguous).
fn rows_times(a: &[f32], b: &[f32], r: usize, c: usize, hw: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (row, o) in a.chunks(c).zip(out.chunks_mut(hw)).take(r) {
        for (&x, b_row) in row.iter().zip(b.chunks(hw)) {
            for (o, &y) in o.iter_mut().zip(b_row) {
                *o += x * y;
            }
        }
    }
}

/// `a b^T` for `a` (r x hw) and row-major `b` (c x hw): an r x c matrix of row dot products.
fn times_transposed(a: &[f32], b: &[f32], r: usize, hw: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; r * c];
    for (a_row, o) in a.chunks(hw).zip(out.chunks_mut(c)).take(r) {
        for (o, b_row) in o.iter_mut().zip(b.chunks(hw)) {
            *o = a_row.iter().zip(b_row).map(|(x, y)| x * y).sum();
        }
    }
    out
}

/// Modified Gram-Schmidt, twice (one pass loses orthogonality in f32): the rows of `q` (r x c)
/// become orthonormal; a row that depends on the earlier ones becomes zero (its coordinates then too).
fn orthonormalise(q: &mut [f32], r: usize, c: usize) {
    for _ in 0..2 {
        for k in 0..r {
            let (done, rest) = q.split_at_mut(k * c);
            let row = &mut rest[..c];
            for prev in done.chunks(c) {
                let d: f32 = prev.iter().zip(row.iter()).map(|(x, y)| x * y).sum();
                for (y, x) in row.iter_mut().zip(prev) {
                    *y -= d * x;
                }
            }
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            let inv = if norm > 1e-20 { 1.0 / norm } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// Appends `values` (photos of `channels` planes of `plane` values each) in `format`.
fn encode_map(values: &[f32], channels: usize, plane: usize, format: MapFormat, out: &mut Vec<u8>) {
    let plane = plane.max(1);
    match format {
        MapFormat::LowRank8 => {
            let r = low_rank(channels, plane);
            let mut standard = vec![0f32; channels * plane];
            for photo in values.chunks(channels * plane) {
                // Each channel standardised first, so that weak channels are kept as well as strong ones
                // (the head standardises V too when `head.center_v` is on).
                let (mut means, mut stds) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
                for (ch, out) in photo.chunks(plane).zip(standard.chunks_mut(plane)) {
                    let mean = ch.iter().sum::<f32>() / plane as f32;
                    let std = (ch.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / plane as f32).sqrt();
                    let inv = if std > 0.0 { 1.0 / std } else { 0.0 };
                    out.iter_mut().zip(ch).for_each(|(o, x)| *o = (x - mean) * inv);
                    means.push(mean);
                    stds.push(std);
                }
                for x in means.iter().chain(&stds) {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                let (q, a) = low_rank_factors(&standard, channels, plane, r);
                encode_map(&q, r, channels, MapFormat::Int8, out);
                encode_map(&a, r, plane, MapFormat::Int8, out);
            }
        }
        MapFormat::F16 => {
            for &x in values {
                // Clamped: a value beyond f16's range must not come back as infinity.
                out.extend_from_slice(&f16::from_f32(x.clamp(-65504.0, 65504.0)).to_le_bytes());
            }
        }
        MapFormat::Int8 => {
            let scales: Vec<f32> =
                values.chunks(plane).map(|ch| ch.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0).collect();
            for s in &scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            for (i, x) in values.iter().enumerate() {
                out.push(quantize(*x, scales[i / plane], 127) as u8);
            }
        }
    }
}

fn quantize(x: f32, scale: f32, levels: i32) -> i8 {
    if scale > 0.0 {
        (x / scale).round().clamp(-levels as f32, levels as f32) as i8
    } else {
        0
    }
}

/// Where each map lies in a blob, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub codec: FeatureCodec,
    /// `[N, C, H, W]` of v, lat0, lat1, lat3.
    pub dims: [[usize; 4]; 4],
    /// Byte offset of each map's data; `offsets[4]` is the blob's length.
    pub offsets: [usize; 5],
}

impl Layout {
    /// Bytes from the start of the blob through the end of V: all the decision needs.
    pub fn v_end(&self) -> usize {
        self.offsets[1]
    }

    /// The blob's full length.
    pub fn len(&self) -> usize {
        self.offsets[4]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The layout a blob's header (its first [`HEADER`] bytes or more) describes.
pub fn layout(bytes: &[u8]) -> Result<Layout> {
    let (codec, dims) = header(bytes)?;
    let mut offsets = [HEADER; 5];
    for i in 0..4 {
        offsets[i + 1] = offsets[i] + codec.map_format(i).len(dims[i]);
    }
    Ok(Layout { codec, dims, offsets })
}

/// Appends map `i` of `bytes` (which holds at least the blob through that map) to `out` as f32.
pub fn decode_map_into(bytes: &[u8], layout: &Layout, i: usize, out: &mut Vec<f32>) -> Result<()> {
    let [n, c, h, w] = layout.dims[i];
    let (start, end) = (layout.offsets[i], layout.offsets[i + 1]);
    if bytes.len() < end {
        bail!("feature blob has {} bytes, map {i} ends at byte {end}", bytes.len());
    }
    let data = &bytes[start..end];
    let count = n * c * h * w;
    let plane = (h * w).max(1);
    let at = out.len();
    out.resize(at + count, 0.0);
    let dst = &mut out[at..];
    match layout.codec.map_format(i) {
        MapFormat::F16 => {
            // SAFETY: any two bytes are a valid u16.
            let (head, halves, tail) = unsafe { data.align_to::<u16>() };
            if cfg!(target_endian = "little") && head.is_empty() && tail.is_empty() {
                // Straight from the blob's bytes (F16C when the CPU has it), no copy in between.
                halves.reinterpret_cast::<f16>().convert_to_f32_slice(dst);
            } else {
                let halves: Vec<f16> = data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect();
                halves.convert_to_f32_slice(dst);
            }
        }
        MapFormat::LowRank8 => {
            let r = low_rank(c, plane);
            let (q_len, a_len) = (MapFormat::Int8.len([1, r, 1, c]), MapFormat::Int8.len([1, r, h, w]));
            let (mut q, mut a) = (Vec::with_capacity(r * c), Vec::with_capacity(r * plane));
            for (photo, out) in data.chunks(8 * c + q_len + a_len).zip(dst.chunks_mut(c * plane)) {
                let (moments, factors) = photo.split_at(8 * c);
                let moment = |i: usize| f32::from_le_bytes(moments[4 * i..4 * i + 4].try_into().expect("4 bytes"));
                q.clear();
                a.clear();
                dequantize_int8(&factors[..q_len], r, c, &mut q);
                dequantize_int8(&factors[q_len..], r, plane, &mut a);
                // V = mean + std * (q^T a), the product through candle's matrix multiply (blocked and
                // threaded: at the paper's shape it is 55 M multiply-adds a photo).
                for row in q.chunks_mut(c) {
                    row.iter_mut().enumerate().for_each(|(ch, x)| *x *= moment(c + ch));
                }
                let qt = Tensor::from_slice(&q, (r, c), &Device::Cpu)?;
                let a = Tensor::from_slice(&a, (r, plane), &Device::Cpu)?;
                let v: Vec<f32> = qt.t()?.matmul(&a)?.flatten_all()?.to_vec1()?;
                for ((ch, out), v) in out.chunks_mut(plane).enumerate().zip(v.chunks(plane)) {
                    let mean = moment(ch);
                    out.iter_mut().zip(v).for_each(|(o, x)| *o = x + mean);
                }
            }
        }
        MapFormat::Int8 => {
            let (scales, q) = data.split_at(4 * n * c);
            let scales: Vec<f32> =
                scales.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            for (ch, (d, s)) in dst.chunks_mut(plane).zip(&scales).enumerate() {
                let src = &q[ch * plane..ch * plane + d.len()];
                for (x, &b) in d.iter_mut().zip(src) {
                    *x = b as i8 as f32 * s;
                }
            }
        }
    }
    Ok(())
}

/// Appends an int8 map of `planes` planes of `plane` values (scales, then values) to `out` as f32.
fn dequantize_int8(data: &[u8], planes: usize, plane: usize, out: &mut Vec<f32>) {
    let (scales, q) = data.split_at(4 * planes);
    for (s, values) in scales.chunks_exact(4).zip(q.chunks(plane)) {
        let s = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        out.extend(values.iter().map(|&b| b as i8 as f32 * s));
    }
}

/// Decodes bytes written by [`encode`] (any codec; the header says which) onto `device`, as f32.
pub fn decode(bytes: &[u8], device: &Device) -> Result<VisualFeatures> {
    let layout = layout(bytes)?;
    if bytes.len() != layout.len() {
        bail!("feature blob has {} bytes, its header describes {}", bytes.len(), layout.len());
    }
    let mut out = Vec::with_capacity(4);
    for i in 0..4 {
        let mut values = Vec::new();
        decode_map_into(bytes, &layout, i, &mut values)?;
        let [n, c, h, w] = layout.dims[i];
        out.push(Tensor::from_vec(values, (n, c, h, w), device)?);
    }
    let mut it = out.into_iter();
    let mut next = || it.next().expect("four maps decoded");
    Ok(VisualFeatures { v: next(), lat0: next(), lat1: next(), lat3: next() })
}

/// Appends V of a blob to `out` from `prefix`, the blob's first [`Layout::v_end`] bytes or more
/// (the rest is not read); returns V's `[N, C, H, W]`.
pub fn decode_v_into(prefix: &[u8], out: &mut Vec<f32>) -> Result<[usize; 4]> {
    let layout = layout(prefix)?;
    decode_map_into(prefix, &layout, 0, out)?;
    Ok(layout.dims[0])
}

/// The codec named in a blob's header, without decoding the data.
pub fn codec_of(bytes: &[u8]) -> Result<FeatureCodec> {
    Ok(header(bytes)?.0)
}

fn header(bytes: &[u8]) -> Result<(FeatureCodec, [[usize; 4]; 4])> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        bail!("not a photoseg feature blob ({} bytes, no PSVF header)", bytes.len());
    }
    if bytes[4] != VERSION {
        bail!("feature blob has format version {}, this photoseg reads version {VERSION}", bytes[4]);
    }
    let Some(codec) = FeatureCodec::from_tag(bytes[5]) else {
        bail!("feature blob names unknown codec {}", bytes[5]);
    };
    let mut dims = [[0usize; 4]; 4];
    for (i, d) in dims.iter_mut().flatten().enumerate() {
        let at = 8 + 4 * i;
        *d = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
    }
    // Guard the size arithmetic against hostile headers. The header may come alone (a prefix read for V),
    // so it is not compared with the blob's length here; the decoders check that before allocating.
    let total: Option<usize> =
        dims.iter().try_fold(0usize, |acc, d| d.iter().try_fold(1usize, |p, &x| p.checked_mul(x))?.checked_add(acc));
    if total.is_none_or(|t| t > u32::MAX as usize) {
        bail!("feature blob header describes more values than its {} bytes hold", bytes.len());
    }
    Ok((codec, dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize) -> VisualFeatures {
        let dev = Device::Cpu;
        // Channels of very different ranges, as 1x1 projections produce.
        let ranged = |c: usize, h: usize, w: usize| {
            let t = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let scale: Vec<f32> = (0..c).map(|i| 10f32.powi(i as i32 % 4 - 2)).collect();
            t.broadcast_mul(&Tensor::from_vec(scale, (1, c, 1, 1), &dev).unwrap()).unwrap()
        };
        VisualFeatures { v: ranged(8, 4, 4), lat0: ranged(3, 16, 16), lat1: ranged(3, 8, 8), lat3: ranged(3, 2, 2) }
    }

    fn pairs(a: &VisualFeatures, b: &VisualFeatures) -> Vec<(Tensor, Tensor)> {
        maps(a).into_iter().cloned().zip(maps(b).into_iter().cloned()).collect()
    }

    #[test]
    fn f16_round_trip_within_half_precision() {
        let f = features(2);
        let bytes = encode(&f, FeatureCodec::F16).unwrap();
        let back = decode(&bytes, &Device::Cpu).unwrap();
        for (a, b) in pairs(&f, &back) {
            assert_eq!(a.dims(), b.dims());
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            for (x, y) in a.iter().zip(&b) {
                // Half precision: 11 significant bits (relative 2^-11), subnormals below 6e-5.
                assert!((x - y).abs() <= x.abs() / 2048.0 + 6e-8, "{x} -> {y}");
            }
        }
        assert_eq!(codec_of(&bytes).unwrap(), FeatureCodec::F16);
    }

    #[test]
    fn int8_round_trip_within_half_a_step_per_channel() {
        let f = features(2);
        let bytes = encode(&f, FeatureCodec::Int8).unwrap();
        let back = decode(&bytes, &Device::Cpu).unwrap();
        for (a, b) in pairs(&f, &back) {
            let (n, c, h, w) = a.dims4().unwrap();
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            for ch in 0..n * c {
                let r = ch * h * w..(ch + 1) * h * w;
                let max = a[r.clone()].iter().fold(0f32, |m, x| m.max(x.abs()));
                for i in r {
                    assert!((a[i] - b[i]).abs() <= max / 254.0 * 1.0001 + 1e-12, "{} -> {}", a[i], b[i]);
                }
            }
        }
        assert!(bytes.len() < encode(&f, FeatureCodec::F16).unwrap().len());
    }

    #[test]
    fn low_rank_keeps_a_low_rank_v_and_the_leading_directions_of_any_v() {
        let dev = Device::Cpu;
        let (c, h, w) = (16, 5, 7); // rank 5 of 16 channels at 35 positions
        let r = low_rank(c, h * w);
        assert_eq!((r, low_rank(512, 26 * 26), low_rank(64, 3)), (5, 160, 3));
        // V of rank 3 exactly (three channel patterns times three spatial patterns) plus offsets of very
        // different sizes per direction, as a 1x1 projection gives.
        let exact = Tensor::randn(0f32, 1.0, (c, 3), &dev)
            .unwrap()
            .matmul(&Tensor::randn(0f32, 1.0, (3, h * w), &dev).unwrap())
            .unwrap();
        let f = |v: &Tensor| VisualFeatures {
            v: v.reshape((1, c, h, w)).unwrap(),
            lat0: Tensor::ones((1, 2, 8, 8), DType::F32, &dev).unwrap(),
            lat1: Tensor::ones((1, 2, 4, 4), DType::F32, &dev).unwrap(),
            lat3: Tensor::ones((1, 2, 1, 1), DType::F32, &dev).unwrap(),
        };
        let rel_err = |v: &Tensor| -> f32 {
            let bytes = encode(&f(v), FeatureCodec::LowRank8).unwrap();
            assert_eq!(
                bytes.len(),
                FeatureCodec::LowRank8.encoded_len(&[[1, c, h, w], [1, 2, 8, 8], [1, 2, 4, 4], [1, 2, 1, 1]])
            );
            let back = decode(&bytes, &dev).unwrap().v.reshape((c, h * w)).unwrap();
            let err = (back - v).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            (err / v.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sqrt()
        };
        // Rank 3 <= r: only int8 rounding is lost.
        assert!(rel_err(&exact) < 0.02, "rank-3 V: {}", rel_err(&exact));
        // Full rank, with five strong directions and weak noise: the noise is what goes.
        let noise = Tensor::randn(0f32, 0.01, (c, h * w), &dev).unwrap();
        let strong = Tensor::randn(0f32, 1.0, (c, 5), &dev)
            .unwrap()
            .matmul(&Tensor::randn(0f32, 1.0, (5, h * w), &dev).unwrap())
            .unwrap();
        let noisy = (&strong + &noise).unwrap();
        assert!(rel_err(&noisy) < 0.03, "strong directions plus noise: {}", rel_err(&noisy));
        // Random full-rank V: no better than the best rank-5 approximation allows, but not much worse
        // than the share of energy beyond it (for a random 16 x 35 Gaussian matrix, about 0.6-0.8).
        let random = Tensor::randn(0f32, 1.0, (c, h * w), &dev).unwrap();
        let e = rel_err(&random);
        assert!(e > 0.4 && e < 0.9, "random V: {e}");
        // The same input gives the same bytes.
        let v = f(&noisy);
        assert_eq!(encode(&v, FeatureCodec::LowRank8).unwrap(), encode(&v, FeatureCodec::LowRank8).unwrap());
        // All-zero V stays zero.
        let zero = Tensor::zeros((c, h * w), DType::F32, &dev).unwrap();
        let bytes = encode(&f(&zero), FeatureCodec::LowRank8).unwrap();
        assert_eq!(decode(&bytes, &dev).unwrap().v.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn low_rank_factors_are_orthonormal_and_near_the_best_approximation() {
        // Channel i holds a pattern of its own (disjoint support), so the singular values are known:
        // sigma_i = sqrt(2) * energy(i).
        let (c, hw, r) = (8, 16, 2);
        let fit = |energy: &dyn Fn(usize) -> f32| -> (Vec<f32>, Vec<f32>, f32) {
            let mut m = vec![0f32; c * hw];
            for i in 0..c {
                m[i * hw + 2 * i] = energy(i);
                m[i * hw + 2 * i + 1] = -energy(i);
            }
            let (q, a) = low_rank_factors(&m, c, hw, r);
            for k in 0..r {
                for l in 0..r {
                    let d: f32 = q[k * c..(k + 1) * c].iter().zip(&q[l * c..(l + 1) * c]).map(|(x, y)| x * y).sum();
                    assert!((d - f32::from(k == l)).abs() < 1e-5, "q rows {k}, {l}: {d}");
                }
            }
            let mut back = vec![0f32; c * hw];
            for k in 0..r {
                for ch in 0..c {
                    for p in 0..hw {
                        back[ch * hw + p] += q[k * c + ch] * a[k * hw + p];
                    }
                }
            }
            let err: f32 = back.iter().zip(&m).map(|(x, y)| (x - y).powi(2)).sum();
            (m, back, err)
        };
        // A clear gap after the second direction: those two are kept exactly, the rest dropped.
        let (m, back, _) = fit(&|i| if i < 2 { 1.0 - 0.1 * i as f32 } else { 0.01 });
        for ch in 0..c {
            for p in 0..hw {
                let want = if ch < 2 { m[ch * hw + p] } else { 0.0 };
                assert!((back[ch * hw + p] - want).abs() < 1e-3, "channel {ch}, position {p}");
            }
        }
        // A slow decay (sigma halves at each step): the error is within 5 % of the best rank-2 error.
        let (_, _, err) = fit(&|i| 0.5f32.powi(i as i32));
        let best: f32 = (2..c).map(|i| 2.0 * 0.25f32.powi(i as i32)).sum();
        assert!(err <= best * 1.05, "error {err}, best {best}");
    }

    #[test]
    fn v_decodes_from_the_prefix_alone() {
        let f = features(1);
        for codec in FeatureCodec::ALL {
            let bytes = encode(&f, codec).unwrap();
            let l = layout(&bytes).unwrap();
            assert_eq!(l.len(), bytes.len());
            let mut v = Vec::new();
            assert_eq!(decode_v_into(&bytes[..l.v_end()], &mut v).unwrap(), [1, 8, 4, 4]);
            let full: Vec<f32> = decode(&bytes, &Device::Cpu).unwrap().v.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(v, full, "{}", codec.name());
            assert!(decode_v_into(&bytes[..l.v_end() - 1], &mut Vec::new()).is_err(), "short prefix");
            assert_eq!(FeatureCodec::from_name(codec.name()), Some(codec));
            assert_eq!(codec_of(&bytes).unwrap(), codec);
        }
    }

    #[test]
    fn f16_v_decodes_the_same_from_any_alignment() {
        let bytes = encode(&features(2), FeatureCodec::F16).unwrap();
        let v_end = layout(&bytes).unwrap().v_end();
        let mut want = Vec::new();
        decode_v_into(&bytes[..v_end], &mut want).unwrap();
        for shift in 0..4 {
            // The prefix at an odd address takes the copying path, at an even one the direct path.
            let mut buf = vec![0u8; shift];
            buf.extend_from_slice(&bytes[..v_end]);
            let mut got = vec![1.5];
            decode_v_into(&buf[shift..], &mut got).unwrap();
            assert_eq!(got[0], 1.5, "appended, not overwritten");
            assert_eq!(got[1..], want[..], "shift {shift}");
        }
    }

    #[test]
    fn sizes_match_the_documented_layout() {
        let f = features(1);
        let dims = [[1, 8, 4, 4], [1, 3, 16, 16], [1, 3, 8, 8], [1, 3, 2, 2]];
        let values: usize = dims.iter().map(|d| d.iter().product::<usize>()).sum();
        assert_eq!(encode(&f, FeatureCodec::F16).unwrap().len(), HEADER + 2 * values);
        assert_eq!(encode(&f, FeatureCodec::Int8).unwrap().len(), HEADER + values + 4 * (8 + 3 + 3 + 3));
    }

    #[test]
    fn all_zero_channels_survive_int8() {
        let dev = Device::Cpu;
        let z = |c, h, w| Tensor::zeros((1, c, h, w), DType::F32, &dev).unwrap();
        let f = VisualFeatures { v: z(2, 2, 2), lat0: z(1, 8, 8), lat1: z(1, 4, 4), lat3: z(1, 1, 1) };
        let back = decode(&encode(&f, FeatureCodec::Int8).unwrap(), &dev).unwrap();
        assert_eq!(back.v.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn damaged_blobs_are_refused() {
        let bytes = encode(&features(1), FeatureCodec::F16).unwrap();
        let err = |b: &[u8]| decode(b, &Device::Cpu).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).contains("bytes"), "truncated");
        assert!(err(b"JPEG").contains("PSVF"));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert!(err(&v2).contains("version 2"));
        for unused in [0, 3, 4, 5, 7] {
            let mut other = bytes.clone();
            other[5] = unused;
            assert!(err(&other).contains(&format!("unknown codec {unused}")), "codec {unused}");
        }
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&huge).contains("more values"));
    }
}

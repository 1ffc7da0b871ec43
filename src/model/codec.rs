//! The bytes photoseg caches per photo: [`VisualFeatures`] in a small versioned binary format.
//!
//! Layout (all little-endian):
//!
//! ```text
//! "PSVF"            magic, 4 bytes
//! version  u8       = 1
//! codec    u8       1 = f16, 2 = int8, 3 = int4, 4 = v8l4 (V int8, laterals int4), 5 = v4l8 (V int4,
//!                   laterals int8)
//! reserved u16      = 0
//! 4 x dims [u32; 4] N, C, H, W of v, lat0, lat1, lat3 (in that order)
//! 4 x data          each map in turn, NCHW order, in the codec's format for that map:
//!                     f16:  N*C*H*W half floats
//!                     int8: N*C f32 scales (one per photo and channel), then N*C*H*W i8
//!                     int4: N*C f32 scales, then ceil(N*C*H*W / 2) bytes, two values a byte
//!                           (low nibble first, two's complement in [-7, 7])
//! ```
//!
//! V comes first, so the decision (which reads V alone) needs only the blob's first
//! [`Layout::v_end`] bytes: [`decode_v_into`] decodes that prefix and nothing else.
//!
//! f16 halves the f32 size and keeps ~3 significant digits, far below what changes an answer; int8
//! halves it again with a symmetric per-channel scale (max |x| / 127), because channels of a 1x1
//! projection differ in range by orders of magnitude and one scale per map would crush the small ones.
//! int4 halves it once more; its per-channel scale is chosen to minimise the squared error (clipping the
//! few largest values rather than spending the 15 levels on them). docs/library.md has the measured effect
//! of each codec on answers. The codec is part of the backbone id, so features of two codecs are never
//! mixed. Decoding checks the length exactly: a truncated or padded blob is an error, never a silently
//! wrong tensor.
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
    /// Symmetric in [-7, 7], one f32 scale per (photo, channel), two values a byte.
    Int4,
}

impl MapFormat {
    /// Bytes of a `[n, c, h, w]` map in this format.
    pub fn len(self, [n, c, h, w]: [usize; 4]) -> usize {
        let count = n * c * h * w;
        match self {
            MapFormat::F16 => 2 * count,
            MapFormat::Int8 => 4 * n * c + count,
            MapFormat::Int4 => 4 * n * c + count.div_ceil(2),
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
    /// Symmetric int4 with one f32 scale per (photo, channel): ~half a byte a value.
    Int4,
    /// V as int8, the three lateral maps as int4.
    V8Lat4,
    /// V as int4 (it moves distances by < 1 %), the three lateral maps as int8 (int4 there moves masks).
    V4Lat8,
}

impl FeatureCodec {
    /// Every codec, for benchmarks and tests.
    pub const ALL: [FeatureCodec; 5] =
        [FeatureCodec::F16, FeatureCodec::Int8, FeatureCodec::Int4, FeatureCodec::V8Lat4, FeatureCodec::V4Lat8];

    /// Short name, part of the backbone id (`"f16"`, `"int8"`, `"int4"`, `"v8l4"`, `"v4l8"`).
    pub fn name(self) -> &'static str {
        match self {
            FeatureCodec::F16 => "f16",
            FeatureCodec::Int8 => "int8",
            FeatureCodec::Int4 => "int4",
            FeatureCodec::V8Lat4 => "v8l4",
            FeatureCodec::V4Lat8 => "v4l8",
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
            FeatureCodec::Int4 => 3,
            FeatureCodec::V8Lat4 => 4,
            FeatureCodec::V4Lat8 => 5,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.tag() == tag)
    }

    /// The format of map `i` (0 = V, then lat0, lat1, lat3).
    pub fn map_format(self, i: usize) -> MapFormat {
        match (self, i) {
            (FeatureCodec::F16, _) => MapFormat::F16,
            (FeatureCodec::Int8, _) | (FeatureCodec::V8Lat4, 0) => MapFormat::Int8,
            (FeatureCodec::V4Lat8, 0) => MapFormat::Int4,
            (FeatureCodec::V4Lat8, _) => MapFormat::Int8,
            (FeatureCodec::Int4, _) | (FeatureCodec::V8Lat4, _) => MapFormat::Int4,
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
    for (i, (t, &[_, _, h, w])) in maps(feats).into_iter().zip(&dims).enumerate() {
        let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        encode_map(&values, h * w, codec.map_format(i), &mut out);
    }
    Ok(out)
}

/// Appends `values` (channel planes of `plane` values each) in `format`.
fn encode_map(values: &[f32], plane: usize, format: MapFormat, out: &mut Vec<u8>) {
    let plane = plane.max(1);
    match format {
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
        MapFormat::Int4 => {
            let scales: Vec<f32> = values.chunks(plane).map(int4_scale).collect();
            for s in &scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            let q = |i: usize| (quantize(values[i], scales[i / plane], 7) as u8) & 0x0f;
            for i in (0..values.len()).step_by(2) {
                let hi = if i + 1 < values.len() { q(i + 1) } else { 0 };
                out.push(q(i) | (hi << 4));
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

/// The int4 scale of one channel: of max|x| / 7 and smaller scales that clip the largest values, the one
/// with the least squared error (15 levels spent on a few outliers leave the bulk of values coarse).
fn int4_scale(ch: &[f32]) -> f32 {
    let max = ch.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return 0.0;
    }
    let err = |s: f32| -> f32 {
        ch.iter()
            .map(|&x| {
                let d = x - quantize(x, s, 7) as f32 * s;
                d * d
            })
            .sum()
    };
    (0..=12)
        .map(|k| max / 7.0 * (1.0 - 0.05 * k as f32))
        .map(|s| (err(s), s))
        .fold((f32::INFINITY, max / 7.0), |best, c| if c.0 < best.0 { c } else { best })
        .1
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
        MapFormat::Int8 | MapFormat::Int4 => {
            let (scales, q) = data.split_at(4 * n * c);
            let scales: Vec<f32> =
                scales.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if layout.codec.map_format(i) == MapFormat::Int8 {
                for (ch, (d, s)) in dst.chunks_mut(plane).zip(&scales).enumerate() {
                    let src = &q[ch * plane..ch * plane + d.len()];
                    for (x, &b) in d.iter_mut().zip(src) {
                        *x = b as i8 as f32 * s;
                    }
                }
            } else {
                for (j, x) in dst.iter_mut().enumerate() {
                    let b = q[j / 2];
                    let nib = if j % 2 == 0 { b << 4 } else { b & 0xf0 };
                    *x = ((nib as i8) >> 4) as f32 * scales[j / plane];
                }
            }
        }
    }
    Ok(())
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
    fn int4_round_trip_stays_within_its_steps() {
        let f = features(2);
        for codec in [FeatureCodec::Int4, FeatureCodec::V8Lat4, FeatureCodec::V4Lat8] {
            let bytes = encode(&f, codec).unwrap();
            let back = decode(&bytes, &Device::Cpu).unwrap();
            for (i, (a, b)) in pairs(&f, &back).into_iter().enumerate() {
                let levels = if codec.map_format(i) == MapFormat::Int8 { 127.0 } else { 7.0 };
                let (n, c, h, w) = a.dims4().unwrap();
                let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
                for ch in 0..n * c {
                    let r = ch * h * w..(ch + 1) * h * w;
                    let max = a[r.clone()].iter().fold(0f32, |m, x| m.max(x.abs()));
                    // The int4 scale may clip down to 40 % of max / 7, so one value can move by up to 0.6 max;
                    // but it minimises the squared error, so that stays within max / 7's half a step.
                    let mse: f32 = r.clone().map(|i| (a[i] - b[i]).powi(2)).sum::<f32>() / r.len() as f32;
                    let step = max / levels;
                    assert!(mse <= step * step / 4.0 * 1.0001 + 1e-12, "channel {ch}: mse {mse}, step {step}");
                    for i in r {
                        assert!((a[i] - b[i]).abs() <= max * 0.6001 + 1e-12, "{} -> {}", a[i], b[i]);
                    }
                }
            }
            assert_eq!(bytes.len(), codec.encoded_len(&[[2, 8, 4, 4], [2, 3, 16, 16], [2, 3, 8, 8], [2, 3, 2, 2]]));
        }
    }

    #[test]
    fn odd_counts_pack_into_whole_bytes() {
        let dev = Device::Cpu;
        let t = |c, h, w| Tensor::arange(0f32, (c * h * w) as f32, &dev).unwrap().reshape((1, c, h, w)).unwrap();
        let f = VisualFeatures { v: t(3, 3, 3), lat0: t(1, 5, 5), lat1: t(1, 3, 3), lat3: t(1, 1, 1) };
        let bytes = encode(&f, FeatureCodec::Int4).unwrap();
        assert_eq!(bytes.len(), HEADER + 4 * 6 + 14 + 13 + 5 + 1);
        let back = decode(&bytes, &dev).unwrap();
        assert_eq!(back.lat3.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.0]);
        assert_eq!(back.lat0.dims(), [1, 1, 5, 5]);
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
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&huge).contains("more values"));
    }
}

//! The bytes photoseg caches per photo: [`VisualFeatures`] in a small versioned binary format.
//!
//! Layout (all little-endian):
//!
//! ```text
//! "PSVF"            magic, 4 bytes
//! version  u8       = 1
//! codec    u8       1 = f16, 2 = int8
//! reserved u16      = 0
//! 4 x dims [u32; 4] N, C, H, W of v, lat0, lat1, lat3 (in that order)
//! 4 x data          each map in turn, NCHW order:
//!                     f16:  N*C*H*W half floats
//!                     int8: N*C f32 scales (one per photo and channel), then N*C*H*W i8
//! ```
//!
//! f16 halves the f32 size and keeps ~3 significant digits, far below what changes an answer; int8
//! halves it again with a symmetric per-channel scale (max |x| / 127), because channels of a 1x1
//! projection differ in range by orders of magnitude and one scale per map would crush the small ones.
//! The codec is part of the backbone id, so features of two codecs are never mixed. Decoding checks the
//! length exactly: a truncated or padded blob is an error, never a silently wrong tensor.
use candle_core::{bail, DType, Device, Result, Tensor};
use half::f16;

use super::neck::VisualFeatures;

const MAGIC: &[u8; 4] = b"PSVF";
const VERSION: u8 = 1;
const HEADER: usize = 8 + 4 * 16;

/// How the four maps are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureCodec {
    /// IEEE half precision: 2 bytes a value.
    #[default]
    F16,
    /// Symmetric int8 with one f32 scale per (photo, channel): ~1 byte a value.
    Int8,
}

impl FeatureCodec {
    /// Short name, part of the backbone id (`"f16"`, `"int8"`).
    pub fn name(self) -> &'static str {
        match self {
            FeatureCodec::F16 => "f16",
            FeatureCodec::Int8 => "int8",
        }
    }

    /// Parses [`FeatureCodec::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "f16" => Some(FeatureCodec::F16),
            "int8" => Some(FeatureCodec::Int8),
            _ => None,
        }
    }

    fn tag(self) -> u8 {
        match self {
            FeatureCodec::F16 => 1,
            FeatureCodec::Int8 => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(FeatureCodec::F16),
            2 => Some(FeatureCodec::Int8),
            _ => None,
        }
    }

    /// Bytes an encoding of maps with these `[N, C, H, W]` dims takes (for sizing, without encoding).
    pub fn encoded_len(self, dims: &[[usize; 4]; 4]) -> usize {
        HEADER
            + dims
                .iter()
                .map(|&[n, c, h, w]| match self {
                    FeatureCodec::F16 => 2 * n * c * h * w,
                    FeatureCodec::Int8 => 4 * n * c + n * c * h * w,
                })
                .sum::<usize>()
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
    for (t, &[n, c, h, w]) in maps(feats).into_iter().zip(&dims) {
        let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        match codec {
            FeatureCodec::F16 => {
                for x in values {
                    // Clamped: a value beyond f16's range must not come back as infinity.
                    out.extend_from_slice(&f16::from_f32(x.clamp(-65504.0, 65504.0)).to_le_bytes());
                }
            }
            FeatureCodec::Int8 => {
                let plane = h * w;
                let scales: Vec<f32> = values
                    .chunks(plane.max(1))
                    .take(n * c)
                    .map(|ch| ch.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0)
                    .collect();
                for s in &scales {
                    out.extend_from_slice(&s.to_le_bytes());
                }
                for (i, x) in values.iter().enumerate() {
                    let s = scales[i / plane];
                    let q = if s > 0.0 { (x / s).round().clamp(-127.0, 127.0) as i8 } else { 0 };
                    out.push(q as u8);
                }
            }
        }
    }
    Ok(out)
}

/// Decodes bytes written by [`encode`] (either codec; the header says which) onto `device`, as f32.
pub fn decode(bytes: &[u8], device: &Device) -> Result<VisualFeatures> {
    let (codec, dims) = header(bytes)?;
    let want = codec.encoded_len(&dims);
    if bytes.len() != want {
        bail!("feature blob has {} bytes, its header describes {want}", bytes.len());
    }
    let mut at = HEADER;
    let mut out = Vec::with_capacity(4);
    for [n, c, h, w] in dims {
        let count = n * c * h * w;
        let values: Vec<f32> = match codec {
            FeatureCodec::F16 => {
                let v = bytes[at..at + 2 * count]
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect();
                at += 2 * count;
                v
            }
            FeatureCodec::Int8 => {
                let scales: Vec<f32> = bytes[at..at + 4 * n * c]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                at += 4 * n * c;
                let plane = (h * w).max(1);
                let v = bytes[at..at + count]
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| q as i8 as f32 * scales[i / plane])
                    .collect();
                at += count;
                v
            }
        };
        out.push(Tensor::from_vec(values, (n, c, h, w), device)?);
    }
    let mut it = out.into_iter();
    let mut next = || it.next().expect("four maps decoded");
    Ok(VisualFeatures { v: next(), lat0: next(), lat1: next(), lat3: next() })
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
    // Guard the size arithmetic against hostile headers before anything is allocated.
    let total: Option<usize> =
        dims.iter().try_fold(0usize, |acc, d| d.iter().try_fold(1usize, |p, &x| p.checked_mul(x))?.checked_add(acc));
    if total.is_none_or(|t| t > bytes.len()) {
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

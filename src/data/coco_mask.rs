//! COCO masks: run-length encoding (RLE), its compressed string form, and polygon rasterisation, ported
//! from pycocotools' `maskApi.c` (`rleEncode`, `rleDecode`, `rleToString`, `rleFrString`, `rleFrPoly`) so
//! that masks match the reference pixel for pixel: a mask that differs by one edge pixel from the one the
//! data set's authors evaluated with would shift every IoU reported against them.
//!
//! COCO runs are column-major (down the first column, then the next), start with a run of zeros (possibly
//! of length 0) and alternate; [`Mask`] is row-major.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::Mask;

/// A run-length mask of `height` x `width` pixels, runs column-major, the first run background.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    pub counts: Vec<u32>,
}

/// A COCO annotation's `segmentation` as `instances.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Segmentation {
    /// One or more polygons `[x1, y1, x2, y2, ...]` in pixel coordinates (object parts).
    Polygons(Vec<Vec<f64>>),
    /// A run-length mask (crowd annotations use the uncompressed form).
    Rle(CocoRle),
}

/// The JSON form of an RLE: `{"size": [h, w], "counts": "..."}` (compressed, as pycocotools' `encode`
/// returns and photoseg writes) or `{"size": [h, w], "counts": [ints]}` (uncompressed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoRle {
    pub size: [u32; 2],
    pub counts: RleCounts,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RleCounts {
    Uncompressed(Vec<u32>),
    Compressed(String),
}

impl Rle {
    /// An RLE from uncompressed counts; they must cover the mask exactly (pycocotools does not check, and
    /// decoding a short RLE there leaves memory uninitialised).
    pub fn from_counts(height: u32, width: u32, counts: Vec<u32>) -> Result<Rle> {
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let pixels = u64::from(height) * u64::from(width);
        if total != pixels {
            bail!("rle counts sum to {total}, but a {height}x{width} mask has {pixels} pixels");
        }
        Ok(Rle { height, width, counts })
    }

    /// Parses COCO's compressed counts (`rleFrString`): LEB128-like, 6 bits a character (ASCII 48-111),
    /// each count after the third stored as the difference to the count two before it.
    pub fn from_compressed(counts: &str, height: u32, width: u32) -> Result<Rle> {
        let bytes = counts.as_bytes();
        let mut out: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0;
            loop {
                let Some(&b) = bytes.get(p) else {
                    bail!("compressed rle counts end inside a number: {counts:?}");
                };
                if !(48..=111).contains(&b) || k > 10 {
                    bail!("compressed rle counts hold {:?} at {p}: not COCO's encoding", b as char);
                }
                let c = i64::from(b - 48);
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            if out.len() > 2 {
                x += i64::from(out[out.len() - 2]);
            }
            let Ok(count) = u32::try_from(x) else {
                bail!("compressed rle counts decode to the run length {x}: corrupt counts {counts:?}");
            };
            out.push(count);
        }
        Rle::from_counts(height, width, out)
    }

    /// The compressed string of these counts, byte for byte what pycocotools' `encode` returns (`rleToString`).
    pub fn to_compressed(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for i in 0..self.counts.len() {
            let mut x = i64::from(self.counts[i]);
            if i > 2 {
                x -= i64::from(self.counts[i - 2]);
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(char::from(c + 48));
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// The JSON form photoseg writes (`{"size": [h, w], "counts": "<compressed>"}`).
    pub fn to_coco(&self) -> CocoRle {
        CocoRle { size: [self.height, self.width], counts: RleCounts::Compressed(self.to_compressed()) }
    }

    /// Run-length encodes a mask (`rleEncode`).
    pub fn encode(mask: &Mask) -> Rle {
        let (h, w) = (mask.height as usize, mask.width as usize);
        let col_major = (0..w).flat_map(|x| (0..h).map(move |y| mask.data[y * w + x] != 0));
        Rle { height: mask.height, width: mask.width, counts: runs(col_major) }
    }

    /// Decodes into a row-major mask (`rleDecode`).
    pub fn decode(&self) -> Mask {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut mask = Mask::new(self.width, self.height);
        self.for_each_foreground_run(|start, end| {
            for p in start..end {
                mask.data[(p % h) * w + p / h] = 1;
            }
        });
        mask
    }

    /// Calls `f(start, end)` with the column-major index range of each foreground run, clipped to the mask.
    fn for_each_foreground_run(&self, mut f: impl FnMut(usize, usize)) {
        let n = self.height as usize * self.width as usize;
        let mut pos = 0usize;
        for (i, &c) in self.counts.iter().enumerate() {
            let end = (pos + c as usize).min(n);
            if i % 2 == 1 {
                f(pos, end);
            }
            pos = end;
        }
    }

    /// Foreground pixel count (`rleArea`: the sum of the odd runs).
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| u64::from(c)).sum()
    }

    /// Rasterises one polygon `[x1, y1, x2, y2, ...]` exactly as pycocotools' `rleFrPoly`: vertices are
    /// scaled by 5 and rounded, the edges walked point by point on that fine grid, and a pixel column's
    /// boundary crossings sampled where the fine grid meets the pixel centres. A trailing odd coordinate
    /// is ignored, as pycocotools does.
    pub fn from_polygon(xy: &[f64], height: u32, width: u32) -> Rle {
        const SCALE: f64 = 5.0;
        let k = xy.len() / 2;
        let (h, w) = (i64::from(height), i64::from(width));
        // C's (int)(v + .5): truncation toward zero, not rounding.
        let mut x: Vec<i64> = (0..k).map(|j| (SCALE * xy[2 * j] + 0.5) as i64).collect();
        let mut y: Vec<i64> = (0..k).map(|j| (SCALE * xy[2 * j + 1] + 0.5) as i64).collect();
        if k > 0 {
            x.push(x[0]);
            y.push(y[0]);
        }
        // Every fine-grid point along every edge.
        let mut u: Vec<i64> = Vec::new();
        let mut v: Vec<i64> = Vec::new();
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe - xs).abs();
            let dy = (ys - ye).abs();
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            if dx >= dy {
                let s = if dx == 0 { 0.0 } else { (ye - ys) as f64 / dx as f64 };
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    u.push(t + xs);
                    v.push((ys as f64 + s * t as f64 + 0.5) as i64);
                }
            } else {
                let s = (xe - xs) as f64 / dy as f64;
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    v.push(t + ys);
                    u.push((xs as f64 + s * t as f64 + 0.5) as i64);
                }
            }
        }
        // Where the boundary crosses a pixel centre column: the first pixel inside below it.
        let mut bounds: Vec<u32> = Vec::new();
        for j in 1..u.len() {
            if u[j] == u[j - 1] {
                continue;
            }
            let xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
            let xd = (xd + 0.5) / SCALE - 0.5;
            if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
                continue;
            }
            let yd = v[j].min(v[j - 1]) as f64;
            let mut yd = (yd + 0.5) / SCALE - 0.5;
            if yd < 0.0 {
                yd = 0.0;
            } else if yd > h as f64 {
                yd = h as f64;
            }
            let yd = yd.ceil();
            bounds.push((xd as i64 * h + yd as i64) as u32);
        }
        // Sorted crossings toggle the mask; their differences are the runs, and a zero-length run merges
        // its neighbours.
        bounds.push((h * w) as u32);
        bounds.sort_unstable();
        let mut prev = 0u32;
        for b in bounds.iter_mut() {
            let t = *b;
            *b -= prev;
            prev = t;
        }
        let mut counts = vec![bounds[0]];
        let mut j = 1;
        while j < bounds.len() {
            if bounds[j] > 0 {
                counts.push(bounds[j]);
                j += 1;
            } else {
                j += 1;
                if j < bounds.len() {
                    *counts.last_mut().expect("counts starts non-empty") += bounds[j];
                    j += 1;
                }
            }
        }
        Rle { height, width, counts }
    }

    /// The union of an object's polygon parts: pycocotools `merge(frPyObjects(polygons, h, w))`. No parts
    /// is an empty mask (pycocotools would return a 0x0 one).
    pub fn from_polygons(polygons: &[Vec<f64>], height: u32, width: u32) -> Rle {
        if polygons.is_empty() {
            return Rle { height, width, counts: vec![height * width] };
        }
        let parts: Vec<Rle> = polygons.iter().map(|p| Rle::from_polygon(p, height, width)).collect();
        Rle::union(&parts).expect("polygon parts share one size")
    }

    /// The union of masks of one size (`rleMerge` without `intersect`); an empty list is a 0x0 mask.
    pub fn union(rles: &[Rle]) -> Result<Rle> {
        let Some(first) = rles.first() else { return Ok(Rle { height: 0, width: 0, counts: vec![0] }) };
        if rles.len() == 1 {
            return Ok(first.clone());
        }
        let mut col_major = vec![false; first.height as usize * first.width as usize];
        for r in rles {
            if (r.height, r.width) != (first.height, first.width) {
                bail!("cannot merge a {}x{} rle with a {}x{} one", r.height, r.width, first.height, first.width);
            }
            r.for_each_foreground_run(|start, end| col_major[start..end].fill(true));
        }
        let counts = runs(col_major.into_iter());
        Ok(Rle { height: first.height, width: first.width, counts })
    }
}

/// COCO run lengths of a column-major bit sequence: background first (possibly 0), then alternating.
fn runs(bits: impl Iterator<Item = bool>) -> Vec<u32> {
    let mut counts = Vec::new();
    let (mut prev, mut run) = (false, 0u32);
    for b in bits {
        if b != prev {
            counts.push(run);
            run = 0;
            prev = b;
        }
        run += 1;
    }
    counts.push(run);
    counts
}

impl Segmentation {
    /// The annotation's mask as one RLE, as pycocotools `COCO.annToRLE` makes it: polygons rasterised and
    /// merged, uncompressed counts taken as they are, compressed counts parsed. `height` and `width` are the
    /// image's; an RLE that says another size is an error rather than a silently misplaced mask.
    pub fn to_rle(&self, height: u32, width: u32) -> Result<Rle> {
        match self {
            Segmentation::Polygons(polys) => Ok(Rle::from_polygons(polys, height, width)),
            Segmentation::Rle(coco) => {
                let [h, w] = coco.size;
                if (h, w) != (height, width) {
                    bail!("rle of size {h}x{w} on a {height}x{width} image");
                }
                coco.to_rle()
            }
        }
    }
}

impl CocoRle {
    pub fn to_rle(&self) -> Result<Rle> {
        let [h, w] = self.size;
        match &self.counts {
            RleCounts::Uncompressed(counts) => Rle::from_counts(h, w, counts.clone()),
            RleCounts::Compressed(s) => Rle::from_compressed(s, h, w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_round_trip_with_negative_and_long_deltas() {
        let rle = Rle::from_counts(100, 1000, vec![0, 70000, 5, 1, 29994]).unwrap();
        let s = rle.to_compressed();
        assert_eq!(Rle::from_compressed(&s, 100, 1000).unwrap(), rle);
    }

    #[test]
    fn decode_is_column_major() {
        // 2x3 mask, runs down columns: col 0 = [0, 1], col 1 = [1, 0], col 2 = [0, 0]
        let rle = Rle::from_counts(2, 3, vec![1, 2, 3]).unwrap();
        let m = rle.decode();
        assert_eq!(m.data, vec![0, 1, 0, 1, 0, 0]);
        assert_eq!(Rle::encode(&m), rle);
        assert_eq!(rle.area(), 2);
    }

    #[test]
    fn bad_counts_are_rejected_with_the_numbers() {
        let err = Rle::from_counts(2, 2, vec![1, 2]).unwrap_err().to_string();
        assert!(err.contains("sum to 3") && err.contains("4 pixels"), "{err}");
        let err = Rle::from_compressed("0 1", 2, 2).unwrap_err().to_string();
        assert!(err.contains("not COCO's encoding"), "{err}");
        assert!(Rle::from_compressed("o", 2, 2).is_err(), "a number cut short must not decode");
    }
}

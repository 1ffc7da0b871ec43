//! COCO run-length encoding of binary masks, as pycocotools writes it (`{"size": [h, w], "counts": "..."}`),
//! so any COCO tool can read photoseg's masks.
//!
//! Runs are counted in column-major (Fortran) order, starting with a run of zeros (possibly empty); the
//! counts string is pycocotools' compressed form: each count, minus the count two before it from the
//! fourth on, in 5-bit groups with a continuation bit, offset by 48 into printable ASCII.
//!
//! A separate port of pycocotools serves the data readers; this encoder is kept small on purpose so the
//! query path does not depend on it (to be merged when both exist).
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// A mask in COCO compressed RLE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoRle {
    /// `[height, width]`, COCO's order.
    pub size: [usize; 2],
    pub counts: String,
}

/// Encodes a row-major mask (`mask[y * width + x]`, nonzero = object).
pub fn encode(mask: &[u8], width: usize, height: usize) -> Result<CocoRle> {
    if mask.len() != width * height {
        bail!("mask has {} pixels, expected {width} x {height}", mask.len());
    }
    let mut counts: Vec<i64> = Vec::new();
    let mut current = false;
    let mut run = 0i64;
    for x in 0..width {
        for y in 0..height {
            let on = mask[y * width + x] != 0;
            if on != current {
                counts.push(run);
                run = 0;
                current = on;
            }
            run += 1;
        }
    }
    counts.push(run);
    Ok(CocoRle { size: [height, width], counts: counts_to_string(&counts) })
}

/// Decodes to a row-major mask of 0 and 1.
pub fn decode(rle: &CocoRle) -> Result<Vec<u8>> {
    let [height, width] = rle.size;
    let counts = counts_from_string(&rle.counts)?;
    let mut mask = vec![0u8; width * height];
    let (mut at, mut value) = (0usize, 0u8);
    for c in counts {
        if c < 0 || at + c as usize > width * height {
            bail!("rle counts run past the {height} x {width} mask");
        }
        for i in at..at + c as usize {
            // Column-major index i -> row-major.
            mask[(i % height.max(1)) * width + i / height.max(1)] = value;
        }
        at += c as usize;
        value ^= 1;
    }
    if at != width * height {
        bail!("rle counts cover {at} pixels of a {height} x {width} mask");
    }
    Ok(mask)
}

/// Pixels of the object: the sum of the odd runs.
pub fn area(rle: &CocoRle) -> Result<usize> {
    Ok(counts_from_string(&rle.counts)?.iter().skip(1).step_by(2).map(|&c| c.max(0) as usize).sum())
}

/// pycocotools `rleToString`.
fn counts_to_string(counts: &[i64]) -> String {
    let mut out = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = if i > 2 { c - counts[i - 2] } else { c };
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            out.push((ch + 48) as char);
            if !more {
                break;
            }
        }
    }
    out
}

/// pycocotools `rleFrString`.
fn counts_from_string(s: &str) -> Result<Vec<i64>> {
    let bytes = s.as_bytes();
    let mut counts: Vec<i64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k) = (0i64, 0u32);
        loop {
            let Some(&b) = bytes.get(p) else { bail!("rle counts string ends inside a number") };
            if !(48..48 + 64).contains(&b) || k > 12 {
                bail!("rle counts string has an invalid character at {p}");
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
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        counts.push(x);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected strings from pycocotools 2.0 `mask.encode` on the same arrays.
    fn check(rows: &[&[u8]], counts: &str, want_area: usize) {
        let (h, w) = (rows.len(), rows[0].len());
        let mask: Vec<u8> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let rle = encode(&mask, w, h).unwrap();
        assert_eq!(rle.size, [h, w]);
        assert_eq!(rle.counts, counts, "{rows:?}");
        assert_eq!(decode(&rle).unwrap(), mask);
        assert_eq!(area(&rle).unwrap(), want_area);
    }

    #[test]
    fn small_masks_match_pycocotools() {
        check(&[&[0, 0], &[0, 0]], "4", 0);
        check(&[&[1, 1], &[1, 1]], "04", 4);
        check(&[&[0, 1, 1], &[0, 1, 0]], "231", 3);
        check(&[&[1, 0, 0, 1], &[1, 1, 0, 0], &[0, 1, 1, 1]], "022000OO", 7);
    }

    fn rect(h: usize, w: usize, ys: std::ops::Range<usize>, xs: std::ops::Range<usize>) -> Vec<u8> {
        let mut m = vec![0u8; h * w];
        for y in ys {
            for x in xs.clone() {
                m[y * w + x] = 1;
            }
        }
        m
    }

    #[test]
    fn long_runs_and_negative_deltas_match_pycocotools() {
        let m = rect(40, 50, 5..30, 10..45);
        let rle = encode(&m, 50, 40).unwrap();
        assert_eq!(rle.counts, format!("e<i0?0{}S6", "0".repeat(66)));
        assert_eq!(decode(&rle).unwrap(), m);
        assert_eq!(area(&rle).unwrap(), 875);

        let mut m = rect(300, 400, 100..250, 3..7);
        m[299 * 400 + 399] = 1;
        let rle = encode(&m, 400, 300).unwrap();
        assert_eq!(rle.counts, "Xo0f4f400000WQc3[K");
        assert_eq!(decode(&rle).unwrap(), m);
        assert_eq!(area(&rle).unwrap(), 601);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(encode(&[0, 1, 0], 2, 2).is_err());
        let bad = |counts: &str| decode(&CocoRle { size: [2, 2], counts: counts.into() }).is_err();
        assert!(bad("5"), "runs past the mask");
        assert!(bad("3"), "runs short of the mask");
        assert!(bad(" "), "invalid character");
        assert!(bad("\u{7f}"), "invalid character");
    }
}

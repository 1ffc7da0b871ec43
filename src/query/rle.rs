//! COCO run-length encoding of binary masks, as pycocotools writes it (`{"size": [h, w], "counts": "..."}`),
//! so any COCO tool can read photoseg's masks. The encoding itself is [`crate::data::coco_mask::Rle`]
//! (a port of pycocotools, tested against it); this is the query's JSON shape around it.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::coco_mask::Rle;
use crate::data::Mask;

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
    let binary: Vec<u8> = mask.iter().map(|&v| u8::from(v != 0)).collect();
    let rle = Rle::encode(&Mask::from_data(width as u32, height as u32, binary)?);
    Ok(CocoRle { size: [height, width], counts: rle.to_compressed() })
}

fn parse(rle: &CocoRle) -> Result<Rle> {
    let [height, width] = rle.size;
    Rle::from_compressed(&rle.counts, height as u32, width as u32)
}

/// Decodes to a row-major mask of 0 and 1.
pub fn decode(rle: &CocoRle) -> Result<Vec<u8>> {
    Ok(parse(rle)?.decode().data)
}

/// Pixels of the object.
pub fn area(rle: &CocoRle) -> Result<usize> {
    Ok(parse(rle)?.area() as usize)
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

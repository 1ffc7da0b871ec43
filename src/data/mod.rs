//! Data sets photoseg trains and evaluates on, all turned into one shape: a [`Group`] is one expression and
//! a group of photos, each with its ground-truth mask or none (the photo does not contain the target).
//!
//! - [`refcoco`]: RefCOCO / RefCOCO+ / RefCOCOg (refer-toolkit pickles + COCO `instances.json`), regrouped
//!   into G-RefC groups as GRSer (ICCV 2023) describes; rules in `docs/datasets.md`.
//! - [`cosod`]: Co-SOD sets (CoCA, CoSal2015, CoSOD3k): a folder of images and one of masks per group.
//! - [`coco_mask`]: COCO run-length and polygon masks, bit-exact with pycocotools.
//! - [`mask`]: the decoded binary [`Mask`].
//! - [`format`]: which of these (or a `photoseg synth` set) a command's `--format` reads, and which split.
pub mod coco_mask;
pub mod cosod;
pub mod format;
pub mod mask;
pub mod refcoco;
mod sample;

use std::path::PathBuf;

use anyhow::Result;

pub use coco_mask::Rle;
pub use mask::Mask;

/// One expression and the photos it is asked about: GRSer's unit of training and evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub expression: String,
    pub photos: Vec<GroupPhoto>,
}

/// A photo of a group; `mask: None` marks a negative (the photo does not contain what the expression names).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPhoto {
    pub image: PathBuf,
    pub mask: Option<MaskSource>,
}

/// Where a positive's ground truth comes from. Kept undecoded until [`MaskSource::load`] so a data set of
/// thousands of groups stays small in memory (a COCO RLE is a few hundred bytes, a decoded mask 300 KB).
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSource {
    /// A grey or binary PNG; grey > 128 is foreground (the binarisation pysodmetrics applies).
    Png(PathBuf),
    /// A COCO run-length mask (RefCOCO family).
    Rle(Rle),
}

impl MaskSource {
    pub fn load(&self) -> Result<Mask> {
        match self {
            MaskSource::Png(path) => Mask::from_png(path),
            MaskSource::Rle(rle) => Ok(rle.decode()),
        }
    }
}

/// Lower case, one space between words, trimmed: "Man on  left" and "man on left" are one expression.
pub fn normalise_expression(s: &str) -> String {
    s.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

impl Group {
    pub fn positives(&self) -> usize {
        self.photos.iter().filter(|p| p.mask.is_some()).count()
    }

    pub fn negatives(&self) -> usize {
        self.photos.len() - self.positives()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_normalise_case_and_space() {
        assert_eq!(normalise_expression("  Man on\tleft  "), "man on left");
        assert_eq!(normalise_expression(""), "");
    }
}

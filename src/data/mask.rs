//! A decoded binary mask, row-major like the images it covers.
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A binary mask: `data[y * width + x]` is 1 for foreground, 0 for background.
#[derive(Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Mask {
    /// An all-background mask.
    pub fn new(width: u32, height: u32) -> Mask {
        Mask { width, height, data: vec![0; width as usize * height as usize] }
    }

    /// Checks the size and that every value is 0 or 1, so the metrics can trust a mask built by hand.
    pub fn from_data(width: u32, height: u32, data: Vec<u8>) -> Result<Mask> {
        let n = width as usize * height as usize;
        if data.len() != n {
            bail!("mask data has {} values, but a {width}x{height} mask has {n}", data.len());
        }
        if let Some(v) = data.iter().find(|&&v| v > 1) {
            bail!("mask data holds {v}: a binary mask holds only 0 and 1");
        }
        Ok(Mask { width, height, data })
    }

    /// Reads a ground-truth PNG (grey, RGB or palette): grey > 128 is foreground, as pysodmetrics binarises
    /// ground truth, so anti-aliased edges of 0/255 masks land where the reference puts them.
    pub fn from_png(path: &Path) -> Result<Mask> {
        let img = image::open(path).with_context(|| format!("reading mask {}", path.display()))?.into_luma8();
        let (width, height) = img.dimensions();
        let data = img.into_raw().into_iter().map(|v| u8::from(v > 128)).collect();
        Ok(Mask { width, height, data })
    }

    /// Foreground pixel count.
    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| u64::from(v)).sum()
    }

    pub fn get(&self, x: u32, y: u32) -> bool {
        self.data[y as usize * self.width as usize + x as usize] != 0
    }
}

// A derived Debug would print every pixel.
impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mask({}x{}, area {})", self.width, self.height, self.area())
    }
}

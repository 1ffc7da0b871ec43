//! Training data, streamed: the set holds photos by path and masks undecoded (a PNG path or a COCO
//! run-length mask of a few hundred bytes), and each step decodes only the photos it draws, resized to
//! the model's input and normalised, and their masks reduced to the decoder's output grid (1/4 of the
//! input). So a RefCOCO-sized set (142,000 expressions, 20,000 COCO photos; 41 GB decoded at 416 px)
//! costs its index only (docs/training.md has the measured figure).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use rand::Rng;
use rayon::prelude::*;

use crate::data::{Group, MaskSource};
use crate::model::preprocess::rgb_to_tensor;

/// One group ready for training.
#[derive(Debug, Clone)]
pub struct TrainGroup {
    pub expression: String,
    /// (index into `TrainSet::paths`, the mask, decoded by [`TrainSet::mask`]).
    pub positives: Vec<(usize, MaskSource)>,
    pub negatives: Vec<usize>,
}

#[derive(Debug)]
pub struct TrainSet {
    /// The pool: every photo of every group once.
    pub paths: Vec<PathBuf>,
    pub groups: Vec<TrainGroup>,
    pub image_size: usize,
    /// Dense attribute labels of each photo of the pool, when the data set has them
    /// ([`TrainSet::attach_attributes`]).
    pub attributes: Vec<Option<super::attributes::AttributeLabels>>,
}

/// The decoder's grid for an `s x s` input (Swin's patch embedding rounds up).
pub fn mask_grid(image_size: usize) -> usize {
    image_size.div_ceil(4)
}

/// A photo resized to `size x size` and normalised.
pub fn load_image(path: &Path, size: usize, device: &Device) -> Result<Tensor> {
    let img = crate::library::photo::load(path).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.reason()))?;
    let img = image::imageops::resize(&img, size as u32, size as u32, FilterType::Triangle);
    Ok(rgb_to_tensor(img.as_raw(), size, size, device)?)
}

/// A mask file (any 8-bit image, object > 127) reduced to `grid x grid` (area-weighted, then >= 0.5).
pub fn load_mask(path: &Path, grid: usize, device: &Device) -> Result<Tensor> {
    let m = image::open(path).with_context(|| format!("reading mask {}", path.display()))?.to_luma8();
    grid_mask(&m, grid, device)
}

/// A mask of either source reduced to `grid x grid` as [`load_mask`] does (a run-length mask as the
/// 0 / 255 image it decodes to).
pub fn mask_on_grid(source: &MaskSource, grid: usize, device: &Device) -> Result<Tensor> {
    match source {
        MaskSource::Png(path) => load_mask(path, grid, device),
        MaskSource::Rle(rle) => {
            let m = rle.decode();
            let grey: Vec<u8> = m.data.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
            let img =
                image::GrayImage::from_raw(m.width, m.height, grey).context("a decoded mask of the wrong size")?;
            grid_mask(&img, grid, device)
        }
    }
}

fn grid_mask(m: &image::GrayImage, grid: usize, device: &Device) -> Result<Tensor> {
    let m = image::imageops::resize(m, grid as u32, grid as u32, FilterType::Triangle);
    let v: Vec<u32> = m.as_raw().iter().map(|&p| u32::from(p >= 128)).collect();
    Ok(Tensor::from_vec(v, (grid, grid), device)?)
}

impl TrainSet {
    /// Indexes `groups` (photos shared between groups enter the pool once); nothing is read or
    /// decoded. Groups without a positive are skipped: training needs 1:1 positives and negatives.
    pub fn new(groups: Vec<Group>, image_size: usize) -> Result<Self> {
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut out = Vec::new();
        for g in groups {
            let (mut positives, mut negatives) = (Vec::new(), Vec::new());
            for p in g.photos {
                let i = *index.entry(p.image).or_insert_with_key(|path| {
                    paths.push(path.clone());
                    paths.len() - 1
                });
                match p.mask {
                    Some(m) => positives.push((i, m)),
                    None => negatives.push(i),
                }
            }
            if !positives.is_empty() {
                out.push(TrainGroup { expression: g.expression, positives, negatives });
            }
        }
        if out.is_empty() {
            bail!("no group with a positive photo: nothing to train on");
        }
        let attributes = vec![None; paths.len()];
        Ok(Self { paths, groups: out, image_size, attributes })
    }

    /// Photos in the pool.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The pool's photo `i`, decoded: `[3, S, S]` on the CPU.
    pub fn image(&self, i: usize) -> Result<Tensor> {
        load_image(&self.paths[i], self.image_size, &Device::Cpu)
    }

    /// The pool's photos `ids`, decoded in parallel: `[n, 3, S, S]` on the CPU.
    pub fn images(&self, ids: &[usize]) -> Result<Tensor> {
        let photos = ids.par_iter().map(|&i| self.image(i)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&photos, 0)?)
    }

    /// The mask of `group`'s positive `slot` on the decoder's grid: `[h4, w4]` u32 0 / 1.
    pub fn mask(&self, group: usize, slot: usize, device: &Device) -> Result<Tensor> {
        let (i, source) = &self.groups[group].positives[slot];
        mask_on_grid(source, mask_grid(self.image_size), device).with_context(|| {
            format!("the mask of {} in group {:?}", self.paths[*i].display(), self.groups[group].expression)
        })
    }

    /// Takes the labels of the photos `labels` has (keyed by path); returns how many of the pool have one.
    pub fn attach_attributes(&mut self, mut labels: HashMap<PathBuf, super::attributes::AttributeLabels>) -> usize {
        for (slot, path) in self.attributes.iter_mut().zip(&self.paths) {
            *slot = labels.remove(path);
        }
        self.attributes.iter().filter(|a| a.is_some()).count()
    }

    /// A photo from another group that is not a positive of `group`'s expression.
    pub fn random_negative_for(&self, group: usize, rng: &mut impl Rng) -> usize {
        let expr = &self.groups[group].expression;
        let positive: std::collections::HashSet<usize> = self
            .groups
            .iter()
            .filter(|g| &g.expression == expr)
            .flat_map(|g| g.positives.iter().map(|p| p.0))
            .collect();
        loop {
            let i = rng.random_range(0..self.paths.len());
            if !positive.contains(&i) || positive.len() >= self.paths.len() {
                return i;
            }
        }
    }
}

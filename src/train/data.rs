//! Training data in memory: every photo resized once to the model's input and normalised, every mask
//! reduced to the decoder's output grid (1/4 of the input), shared by all the groups that use them.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use rand::Rng;

use crate::model::preprocess::rgb_to_tensor;

/// A group as a data-set reader gives it: an expression and photos, each with its mask file or `None`
/// (a negative).
#[derive(Debug, Clone)]
pub struct SourceGroup {
    pub expression: String,
    pub photos: Vec<(PathBuf, Option<PathBuf>)>,
}

/// One group ready for training.
#[derive(Debug, Clone)]
pub struct TrainGroup {
    pub expression: String,
    /// (index into `TrainSet::images`, mask `[h4, w4]` u32 0/1).
    pub positives: Vec<(usize, Tensor)>,
    pub negatives: Vec<usize>,
}

#[derive(Debug)]
pub struct TrainSet {
    /// `[3, S, S]` normalised photos.
    pub images: Vec<Tensor>,
    pub groups: Vec<TrainGroup>,
    pub image_size: usize,
    /// The file of each of `images`.
    pub paths: Vec<PathBuf>,
    /// Dense attribute labels of each of `images`, when the data set has them
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
    let m = image::imageops::resize(&m, grid as u32, grid as u32, FilterType::Triangle);
    let v: Vec<u32> = m.as_raw().iter().map(|&p| u32::from(p >= 128)).collect();
    Ok(Tensor::from_vec(v, (grid, grid), device)?)
}

impl TrainSet {
    /// Loads `groups` (photos shared between groups are loaded once). Groups without a positive are
    /// skipped: training needs 1:1 positives and negatives. `progress(done, total)` after each photo.
    pub fn load(
        groups: &[SourceGroup],
        image_size: usize,
        device: &Device,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut paths: Vec<PathBuf> = Vec::new();
        for g in groups {
            for (p, _) in &g.photos {
                if !index.contains_key(p) {
                    index.insert(p.clone(), paths.len());
                    paths.push(p.clone());
                }
            }
        }
        let mut images = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            images.push(load_image(p, image_size, device)?);
            progress(i + 1, paths.len());
        }
        let grid = mask_grid(image_size);
        let mut out = Vec::new();
        for g in groups {
            let mut positives = Vec::new();
            let mut negatives = Vec::new();
            for (p, mask) in &g.photos {
                let i = index[p];
                match mask {
                    Some(m) => positives.push((i, load_mask(m, grid, device)?)),
                    None => negatives.push(i),
                }
            }
            if !positives.is_empty() {
                out.push(TrainGroup { expression: g.expression.clone(), positives, negatives });
            }
        }
        if out.is_empty() {
            bail!("no group with a positive photo: nothing to train on");
        }
        let attributes = vec![None; paths.len()];
        Ok(Self { images, groups: out, image_size, paths, attributes })
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
            let i = rng.random_range(0..self.images.len());
            if !positive.contains(&i) || positive.len() >= self.images.len() {
                return i;
            }
        }
    }
}

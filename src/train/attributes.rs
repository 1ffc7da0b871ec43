//! Dense attribute supervision for the synthetic world (not in the paper; a recipe stage's `attributes`,
//! weight 0 gives its objective). The referring loss supervises one object in half the photos of a group;
//! the synthetic scenes say the colour, shape and size of *every* object at every pixel. Small 1x1 heads
//! read those attributes back from V (per 1/16 cell, the share of each class: V is what TQM compares with
//! the expression) and the colour from stage 1's lateral map (per 1/4 cell: the decoder's edges). Colour
//! and shape are supervised apart, never as a pair, so the features stay compositional: the held-out split
//! names colour-shape pairs training never shows.
//!
//! Shape and size are asked only where an object is (weighted by its share of the cell): "given an
//! object here, which shape is it". Shape is asked twice: from V, and from stage 2's lateral map per 1/8
//! cell, where a small object still covers several cells (V without these heads read colour at 90 % per
//! cell but shape at 33 %, chance 17 %, and shape is what the hard negatives turn on).
//!
//! The heads are training-only weights under `aux.` (query time never reads them).
use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use crate::model::dense::DenseTrunk;
use crate::model::neck::VisualFeatures;
use crate::synth::scene::{self, NONE};
use crate::synth::{Color, Shape, Size, SynthDataset};

/// Background plus the seven colours.
pub const COLOR_CLASSES: usize = Color::ALL.len() + 1;
/// Background plus the six shapes.
pub const SHAPE_CLASSES: usize = Shape::ALL.len() + 1;
/// Background, small, large.
pub const SIZE_CLASSES: usize = Size::ALL.len() + 1;

/// Per-cell class labels of one photo on the decoder's grid (`[g, g]` u32 each, 0 = background).
#[derive(Debug, Clone)]
pub struct AttributeLabels {
    pub color: Tensor,
    pub shape: Tensor,
    pub size: Tensor,
}

/// The label (index into `objects`, or [`NONE`]) covering most of each `grid x grid` cell of an
/// `n x n` label map; ties go to the smaller label, so an object beats background at equal counts.
pub fn majority_labels(labels: &[u8], n: usize, grid: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(grid * grid);
    for gy in 0..grid {
        let (y0, y1) = (gy * n / grid, ((gy + 1) * n / grid).max(gy * n / grid + 1));
        for gx in 0..grid {
            let (x0, x1) = (gx * n / grid, ((gx + 1) * n / grid).max(gx * n / grid + 1));
            let mut counts: HashMap<u8, usize> = HashMap::new();
            for y in y0..y1.min(n) {
                for x in x0..x1.min(n) {
                    *counts.entry(labels[y * n + x]).or_default() += 1;
                }
            }
            let best = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map_or(NONE, |(l, _)| l);
            out.push(best);
        }
    }
    out
}

/// The attribute labels of every photo of `split`, keyed by photo path, on a `grid x grid` grid.
pub fn synth_labels(ds: &SynthDataset, split: &str, grid: usize) -> Result<HashMap<PathBuf, AttributeLabels>> {
    let size = ds.manifest().image_size;
    // The photo as the model sees it: stretched to a square of 4 cells a grid cell.
    let n = 4 * grid;
    let mut out = HashMap::new();
    for album in ds.manifest().splits.get(split).cloned().unwrap_or_default() {
        let dir = ds.album_dir(split, &album);
        let file = ds.album(split, &album)?;
        for (photo, s) in &file.scenes {
            let objects = &s.objects;
            let cells = majority_labels(&s.square_label_map(size, n as u32), n, grid);
            let class = |f: &dyn Fn(&scene::Object) -> u32| -> Vec<u32> {
                cells.iter().map(|&l| if l == NONE { 0 } else { f(&objects[l as usize]) + 1 }).collect()
            };
            let t = |v: Vec<u32>| Tensor::from_vec(v, (grid, grid), &Device::Cpu);
            let labels = AttributeLabels {
                color: t(class(&|o| Color::ALL.iter().position(|&c| c == o.color).unwrap_or(0) as u32))?,
                shape: t(class(&|o| Shape::ALL.iter().position(|&c| c == o.shape).unwrap_or(0) as u32))?,
                size: t(class(&|o| Size::ALL.iter().position(|&c| c == o.size).unwrap_or(0) as u32))?,
            };
            out.insert(dir.join(photo), labels);
        }
    }
    Ok(out)
}

/// The training-only heads.
#[derive(Debug)]
pub struct AttributeHeads {
    /// V -> colour, shape and size logits per 1/16 cell.
    coarse: Conv2d,
    /// Stage 1's lateral -> colour logits per 1/4 cell.
    fine: Conv2d,
    /// Stage 2's lateral -> shape logits per 1/8 cell (the six shapes, no background).
    mid: Conv2d,
}

/// One-hot `[N, C, h, w]` (f32) of u32 labels `[N, h, w]`.
fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor> {
    let ids = Tensor::arange(0u32, classes as u32, labels.device())?.reshape((1, classes, 1, 1))?;
    Ok(labels.unsqueeze(1)?.broadcast_eq(&ids)?.to_dtype(DType::F32)?)
}

/// Cross entropy against soft targets: `logits`, `target` `[N, C, h, w]` (target rows sum to 1).
fn soft_ce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    Ok((target * logp)?.sum(1)?.neg()?.mean_all()?)
}

/// Cross entropy of `logits` `[N, classes - 1, h, w]` (no background class) against the share of each
/// class of `labels` `[N, H, W]` in each `f x f` block, over object pixels only: each cell counts by its
/// object share, so an empty cell asks nothing.
fn object_ce(logits: &Tensor, labels: &Tensor, classes: usize, f: usize) -> Result<Tensor> {
    let share = one_hot(labels, classes)?.avg_pool2d(f)?;
    let object = (1.0 - share.narrow(1, 0, 1)?)?; // [N, 1, h, w]
    let target = share.narrow(1, 1, classes - 1)?.broadcast_div(&object.clamp(1e-6, 1.0)?)?;
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let per_cell = (target * logp)?.sum_keepdim(1)?.neg()?; // [N, 1, h, w]
    let weighted = (per_cell * &object)?.sum_all()?;
    Ok((weighted / (object.sum_all()?.to_scalar::<f32>()? as f64 + 1e-6))?)
}

impl AttributeHeads {
    pub fn new(c_v: usize, lateral: usize, vb: VarBuilder) -> Result<Self> {
        let c = Default::default();
        Ok(Self {
            coarse: candle_nn::conv2d(c_v, COLOR_CLASSES + SHAPE_CLASSES + SIZE_CLASSES, 1, c, vb.pp("coarse"))?,
            fine: candle_nn::conv2d(lateral, COLOR_CLASSES, 1, c, vb.pp("fine"))?,
            mid: candle_nn::conv2d(lateral, SHAPE_CLASSES - 1, 1, c, vb.pp("mid"))?,
        })
    }

    /// Colour logits per 1/4 cell, `[N, COLOR_CLASSES, h4, w4]`.
    pub fn fine_logits(&self, feats: &VisualFeatures) -> Result<Tensor> {
        Ok(self.fine.forward(&feats.lat0)?)
    }

    /// Colour, shape and size logits per 1/16 cell, `[N, COLOR_CLASSES + SHAPE_CLASSES + SIZE_CLASSES, h, w]`.
    pub fn coarse_logits(&self, feats: &VisualFeatures) -> Result<Tensor> {
        Ok(self.coarse.forward(&feats.v)?)
    }

    /// Shape logits per 1/8 cell (the six shapes, no background), `[N, SHAPE_CLASSES - 1, h8, w8]`.
    pub fn mid_logits(&self, feats: &VisualFeatures) -> Result<Tensor> {
        Ok(self.mid.forward(&feats.lat1)?)
    }

    /// The attribute loss of a batch: features of N photos and their labels (N of them).
    pub fn loss(&self, feats: &VisualFeatures, labels: &[&AttributeLabels]) -> Result<Tensor> {
        let dev = feats.v.device();
        let stack = |f: fn(&AttributeLabels) -> &Tensor| -> Result<Tensor> {
            Ok(Tensor::stack(&labels.iter().map(|l| f(l)).collect::<Vec<_>>(), 0)?.to_device(dev)?)
        };
        let (color, shape, size) = (stack(|l| &l.color)?, stack(|l| &l.shape)?, stack(|l| &l.size)?);
        // Fine: colour per 1/4 cell.
        let fine = self.fine_logits(feats)?; // [N, 8, h4, w4]
        let (n, c, h4, w4) = fine.dims4()?;
        let flat = fine.permute((0, 2, 3, 1))?.reshape((n * h4 * w4, c))?;
        let fine_loss = candle_nn::loss::cross_entropy(&flat, &color.flatten_all()?)?;
        // Coarse: the share of each class in each 1/16 cell, from V.
        let coarse = self.coarse_logits(feats)?; // [N, 8 + 7 + 3, h, w]
        let (_, _, h, w) = coarse.dims4()?;
        if h4 % h != 0 || h4 / h != w4 / w {
            anyhow::bail!("a {h4} x {w4} label grid does not pool evenly to V's {h} x {w}");
        }
        let f = h4 / h;
        // Colour with background: what is where.
        let color_share = one_hot(&color, COLOR_CLASSES)?.avg_pool2d(f)?;
        let mut coarse_loss = soft_ce(&coarse.narrow(1, 0, COLOR_CLASSES)?, &color_share)?;
        // Shape and size given that an object is there: over all cells, background would outweigh every
        // object ~9:1 and the heads learn "background" plus colour (measured: shape stayed at chance,
        // 17-21 %, after 500 steps). Each cell counts by its object share.
        let mut start = COLOR_CLASSES;
        for (labels, classes) in [(&shape, SHAPE_CLASSES), (&size, SIZE_CLASSES)] {
            let logits = coarse.narrow(1, start + 1, classes - 1)?;
            coarse_loss = (coarse_loss + object_ce(&logits, labels, classes, f)?)?;
            start += classes;
        }
        // Shape again from stage 2, per 1/8 cell.
        let mid = self.mid_logits(feats)?;
        let (_, _, h8, w8) = mid.dims4()?;
        if h4 % h8 != 0 || h4 / h8 != w4 / w8 {
            anyhow::bail!("a {h4} x {w4} label grid does not pool evenly to stage 2's {h8} x {w8}");
        }
        let mid_loss = object_ce(&mid, &shape, SHAPE_CLASSES, h4 / h8)?;
        Ok((fine_loss + coarse_loss + mid_loss)?)
    }
}

/// Weight of a background pixel against an object pixel in [`DenseDecoder::loss`]: objects cover a few
/// percent of a photo, and at equal weight the classes settle on "background" first.
const BACKGROUND_WEIGHT: f64 = 0.2;

/// Per-pixel cross entropy of `logits` `[N, C, h, w]` against u32 `labels` `[N, h, w]` (0 = background,
/// weighted [`BACKGROUND_WEIGHT`]).
fn weighted_ce(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let classes = logits.dim(1)?;
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let nll = (one_hot(labels, classes)?.to_dtype(logp.dtype())? * logp)?.sum(1)?.neg()?; // [N, h, w]
    let object = labels.ne(0u32)?.to_dtype(nll.dtype())?;
    let weight = ((object * (1.0 - BACKGROUND_WEIGHT))? + BACKGROUND_WEIGHT)?;
    let total = weight.sum_all()?;
    Ok((nll * &weight)?.sum_all()?.broadcast_div(&total)?)
}

/// The features stage's training-only read-out (`aux.dense.`): a 1 x 1 classifier of colour, shape and
/// size for every 1/4 cell over the dense trunk ([`DenseTrunk`]), on the batch's statistics. The trunk
/// is the model's own when it has a referent head (the head then reads what this stage taught it);
/// otherwise the decoder keeps a training-only one under `aux.dense.`.
///
/// Why: the referring loss asks the backbone about shape only where V's coarse cells hold an object, a
/// cell or two for a small one. Dense labels at 1/4, on photos turned by the eight symmetries of the
/// square ([`super::augment::dihedral`]), give every object dozens of supervised cells in every
/// orientation. Reading the stage outputs themselves (not the neck's narrow projections of them) with
/// batch statistics is what let a from-scratch backbone learn shape about as fast per photo as the
/// PyTorch reference (docs/model.md, "Learning parity").
#[derive(Debug)]
pub struct DenseDecoder {
    own: Option<DenseTrunk>,
    classifier: Conv2d,
}

impl DenseDecoder {
    /// `dims`: channels of Swin's stages 1, 2 and 3; `own_trunk`: keep a training-only trunk (for a
    /// model without one).
    pub fn new(dims: [usize; 3], own_trunk: bool, vb: VarBuilder) -> Result<Self> {
        let own = if own_trunk { Some(DenseTrunk::new(dims, vb.clone())?) } else { None };
        Ok(Self {
            own,
            classifier: candle_nn::conv2d(
                DenseTrunk::WIDTHS[1],
                COLOR_CLASSES + SHAPE_CLASSES + SIZE_CLASSES,
                1,
                Default::default(),
                vb.pp("classifier"),
            )?,
        })
    }

    fn trunk<'a>(&'a self, model: Option<&'a DenseTrunk>) -> Result<&'a DenseTrunk> {
        model.or(self.own.as_ref()).ok_or_else(|| anyhow::anyhow!("the dense decoder has no trunk to read"))
    }

    /// Colour, shape and size logits per 1/4 cell, `[N, COLOR_CLASSES + SHAPE_CLASSES + SIZE_CLASSES,
    /// h4, w4]`, from Swin's stage outputs (NCHW, as [`crate::model::swin::Swin::forward_stages`])
    /// through `model`'s trunk (or the decoder's own), on the batch's statistics.
    pub fn forward(&self, model: Option<&DenseTrunk>, stages: &[Tensor]) -> Result<Tensor> {
        Ok(crate::model::ops::conv2d(&self.classifier, &self.trunk(model)?.forward(stages, true)?)?)
    }

    /// Colour + shape + size / 2 cross entropies per 1/4 cell (labels `[N, h4, w4]` each, on the
    /// decoder's grid), background weighted [`BACKGROUND_WEIGHT`].
    pub fn loss(
        &self,
        model: Option<&DenseTrunk>,
        stages: &[Tensor],
        color: &Tensor,
        shape: &Tensor,
        size: &Tensor,
    ) -> Result<Tensor> {
        let [color_loss, shape_loss, size_loss] = self.loss_terms(model, stages, color, shape, size)?;
        Ok(((color_loss + shape_loss)? + (size_loss * 0.5)?)?)
    }

    /// The colour, shape and size cross entropies of [`Self::loss`], each on its own.
    pub fn loss_terms(
        &self,
        model: Option<&DenseTrunk>,
        stages: &[Tensor],
        color: &Tensor,
        shape: &Tensor,
        size: &Tensor,
    ) -> Result<[Tensor; 3]> {
        let logits = self.forward(model, stages)?;
        Ok([
            weighted_ce(&logits.narrow(1, 0, COLOR_CLASSES)?, color)?,
            weighted_ce(&logits.narrow(1, COLOR_CLASSES, SHAPE_CLASSES)?, shape)?,
            weighted_ce(&logits.narrow(1, COLOR_CLASSES + SHAPE_CLASSES, SIZE_CLASSES)?, size)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_picks_the_label_covering_most_of_each_cell() {
        // 4 x 4 map, 2 x 2 grid: cell (0,0) three 1s and a NONE; (0,1) all NONE; (1,0) two 2s, two 3s (tie
        // -> 2); (1,1) one 4, three NONE.
        let x = NONE;
        let labels = [1, 1, x, x, 1, x, x, x, 2, 3, x, 4, 2, 3, x, x];
        assert_eq!(majority_labels(&labels, 4, 2), vec![1, x, 2, x]);
    }

    #[test]
    fn soft_cross_entropy_is_lowest_for_the_target_distribution() -> Result<()> {
        let dev = Device::Cpu;
        let target = Tensor::new(&[0.75f32, 0.25, 0.0], &dev)?.reshape((1, 3, 1, 1))?;
        let right = (target.clamp(1e-6, 1.0)?.log()?).contiguous()?;
        let wrong = Tensor::new(&[0f32, 0.0, 5.0], &dev)?.reshape((1, 3, 1, 1))?;
        let (r, w) = (soft_ce(&right, &target)?.to_scalar::<f32>()?, soft_ce(&wrong, &target)?.to_scalar::<f32>()?);
        let entropy = -(0.75f32 * 0.75f32.ln() + 0.25 * 0.25f32.ln());
        assert!((r - entropy).abs() < 1e-4, "{r} vs entropy {entropy}");
        assert!(w > r + 3.0, "{w}");
        Ok(())
    }
}

//! Running a model over evaluation groups: each group is one album-sized group for the head, every photo
//! gets a decision, positives a mask at the photo's own resolution, scored by [`super::SegMetrics`] (and
//! [`super::SodMetrics`] on the photos that have a ground truth, with the object probability as saliency).
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::Serialize;

use crate::data::{Group, Mask};
use crate::model::grser::{Grser, Pairs};
use crate::model::preprocess::rgb_to_tensor;

use super::{SegMetrics, SegScores, SodMetrics, SodScores};

/// What `photoseg eval --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub groups: usize,
    pub photos: usize,
    pub largest_group: usize,
    pub miou_positives: Option<f64>,
    pub miou_all: f64,
    /// mIoU of the masks of every true positive, decoded whatever the decision said: the segmentation
    /// alone, apart from the decision (a diagnostic; `miou_positives` is the product's figure).
    pub miou_segmentation: Option<f64>,
    pub oiou: f64,
    pub accuracy_positives: Option<f64>,
    pub accuracy_negatives: Option<f64>,
    pub mae: f64,
    pub max_f: f64,
    pub s_measure: f64,
    pub mean_e: f64,
    pub seconds: f64,
}

impl EvalReport {
    fn new(seg: SegScores, sod: SodScores, forced: (f64, usize), groups: usize, largest: usize, seconds: f64) -> Self {
        Self {
            groups,
            photos: seg.images,
            largest_group: largest,
            miou_positives: seg.miou_positives,
            miou_all: seg.miou,
            miou_segmentation: (forced.1 > 0).then(|| forced.0 / forced.1 as f64),
            oiou: seg.oiou,
            accuracy_positives: seg.accuracy_positives,
            accuracy_negatives: seg.accuracy_negatives,
            mae: sod.mae,
            max_f: sod.max_f,
            s_measure: sod.s_measure,
            mean_e: sod.mean_e,
            seconds,
        }
    }
}

/// Evaluates `model` on `groups`; `progress(done, total)` after each group.
pub fn evaluate(model: &Grser, groups: &[Group], mut progress: impl FnMut(usize, usize)) -> Result<EvalReport> {
    let start = Instant::now();
    let size = model.cfg.image_size;
    let mut seg = SegMetrics::new();
    let mut sod = SodMetrics::new();
    let mut largest = 0;
    let mut forced = (0f64, 0usize);
    for (gi, g) in groups.iter().enumerate() {
        largest = largest.max(g.photos.len());
        let mut tensors = Vec::with_capacity(g.photos.len());
        let mut sizes = Vec::with_capacity(g.photos.len());
        let mut photos = Vec::with_capacity(g.photos.len());
        for p in &g.photos {
            let img = crate::library::photo::load(&p.image)
                .map_err(|e| anyhow::anyhow!("{}: {}", p.image.display(), e.reason()))?;
            sizes.push((img.width() as usize, img.height() as usize));
            let small = image::imageops::resize(&img, size as u32, size as u32, image::imageops::FilterType::Triangle);
            tensors.push(rgb_to_tensor(small.as_raw(), size, size, &model.device)?);
            photos.push(img);
        }
        // Masks as photoseg query makes them: the grid upsampled under the photo's guidance.
        let probability = |logits: &Tensor, i: usize| -> Result<Vec<f32>> {
            let (gh, gw) = logits.dims2()?;
            let (w, h) = sizes[i];
            let l: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            Ok(crate::model::upsample::guided_probability(&l, gh, gw, photos[i].as_raw(), w, h))
        };
        // Featurize in chunks so big albums stay within memory, then answer the album as one group.
        let mut parts = Vec::new();
        for chunk in tensors.chunks(16) {
            parts.push(model.featurize(&Tensor::stack(chunk, 0)?)?);
        }
        let feats = crate::model::neck::VisualFeatures::cat(&parts)?;
        let answers = model.answer(&feats, &g.expression, Pairs::TopK)?;
        // Every true positive's mask, whatever the decision: the segmentation on its own.
        let truth: Vec<usize> = (0..g.photos.len()).filter(|&i| g.photos[i].mask.is_some()).collect();
        if !truth.is_empty() {
            let text = model.encode_expression(&g.expression)?;
            let tri = model.head.triphasic(&feats, &text.l, &text.anti, Pairs::TopK)?;
            let logits = model.head.decode(&tri, &feats, &truth)?;
            let fg = (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)?;
            for (j, &i) in truth.iter().enumerate() {
                let (w, h) = sizes[i];
                let prob = probability(&fg.get(j)?, i)?;
                let pred = Mask::from_data(w as u32, h as u32, prob.iter().map(|&p| u8::from(p > 0.5)).collect())?;
                let gt = g.photos[i].mask.as_ref().expect("a true positive").load()?;
                forced.0 += crate::eval::metrics::iou(&pred, &gt)?;
                forced.1 += 1;
            }
        }
        for (i, ((p, a), &(w, h))) in g.photos.iter().zip(&answers).zip(&sizes).enumerate() {
            let gt = match &p.mask {
                Some(m) => Some(m.load().with_context(|| format!("ground truth of {}", p.image.display()))?),
                None => None,
            };
            let (pred, prob) = match &a.mask_logits {
                Some(logits) => {
                    let prob = probability(logits, i)?;
                    (prob.iter().map(|&x| u8::from(x > 0.5)).collect(), prob)
                }
                None => (vec![0u8; w * h], vec![0f32; w * h]),
            };
            let pred = Mask::from_data(w as u32, h as u32, pred)?;
            seg.add(&pred, gt.as_ref(), a.positive)?;
            if let Some(gt) = &gt {
                sod.add(prob.as_slice(), gt)?;
            }
        }
        progress(gi + 1, groups.len());
    }
    Ok(EvalReport::new(seg.finish(), sod.finish(), forced, groups.len(), largest, start.elapsed().as_secs_f64()))
}

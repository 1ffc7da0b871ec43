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
    /// Area under the ROC curve of the decision's score (d_neg - d_pos) between the photos that hold
    /// the referent and those that do not: how well the decision can separate them at any setting.
    pub decision_auc: Option<f64>,
    /// The decision setting (the referent head's threshold, or the TQM head's margin m) that maximises
    /// the mean of the accuracies on positives and on negatives over these groups: what
    /// `photoseg eval --calibrate` writes into the model's config.json.
    pub balanced_setting: Option<f64>,
    pub seconds: f64,
    /// Every photo's decision, in the order of the groups (`photoseg eval --decisions`).
    #[serde(skip)]
    pub decisions: Vec<PhotoDecision>,
}

/// One photo's answer for its group's expression: what `photoseg eval --decisions` writes, so the errors
/// behind the figures can be read one by one.
#[derive(Debug, Clone)]
pub struct PhotoDecision {
    pub photo: std::path::PathBuf,
    pub expression: String,
    /// The photo holds the referent.
    pub holds: bool,
    pub accepted: bool,
    /// The decision's score, d_neg - d_pos: higher is more likely to hold the referent.
    pub score: f32,
    /// IoU of the answered mask (empty when rejected) with the ground truth, for photos that hold it.
    pub iou: Option<f64>,
}

impl EvalReport {
    fn new(
        seg: SegScores,
        sod: SodScores,
        forced: (f64, usize),
        calibration: (Option<f64>, Option<f64>),
        groups: usize,
        largest: usize,
        seconds: f64,
    ) -> Self {
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
            decision_auc: calibration.0,
            balanced_setting: calibration.1,
            seconds,
            decisions: Vec::new(),
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
    // (d_neg - d_pos, holds the referent) of every photo.
    let mut decisions: Vec<(f32, bool)> = Vec::new();
    let mut per_photo = Vec::new();
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
        let text = model.encode_expression(&g.expression)?;
        let answers = model.answer_with_text(&feats, &text, Pairs::TopK)?;
        // Every true positive's mask, whatever the decision: the segmentation on its own.
        let truth: Vec<usize> = (0..g.photos.len()).filter(|&i| g.photos[i].mask.is_some()).collect();
        if !truth.is_empty() {
            let fg = model.masks_of(&feats, &text, &truth)?;
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
            decisions.push((a.d_neg - a.d_pos, gt.is_some()));
            per_photo.push(PhotoDecision {
                photo: p.image.clone(),
                expression: g.expression.clone(),
                holds: gt.is_some(),
                accepted: a.positive,
                score: a.d_neg - a.d_pos,
                iou: gt.as_ref().map(|gt| crate::eval::metrics::iou(&pred, gt)).transpose()?,
            });
            if let Some(gt) = &gt {
                sod.add(prob.as_slice(), gt)?;
            }
        }
        progress(gi + 1, groups.len());
    }
    // The setting that gives the best cut: the margin itself, or the threshold moved by the cut.
    let (auc, cut) = balanced_cut(&decisions);
    let setting = cut.map(|c| match &model.cfg.referent {
        Some(r) => r.threshold + c,
        None => c,
    });
    let mut report = EvalReport::new(
        seg.finish(),
        sod.finish(),
        forced,
        (auc, setting),
        groups.len(),
        largest,
        start.elapsed().as_secs_f64(),
    );
    report.decisions = per_photo;
    Ok(report)
}

/// ROC AUC of `scores` (higher = more likely to hold the referent) and the cut between two
/// consecutive scores that maximises the mean of the true positive and true negative rates (a photo is
/// positive above the cut). None where one class is missing.
pub fn balanced_cut(scores: &[(f32, bool)]) -> (Option<f64>, Option<f64>) {
    let pos = scores.iter().filter(|s| s.1).count();
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return (None, None);
    }
    let mut sorted: Vec<(f32, bool)> = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // AUC from ranks (ties share their mean rank).
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    let auc = (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64;
    // Cut below everything, then after each run of equal scores.
    let (mut below_pos, mut below_neg) = (0usize, 0usize);
    let mut best = (0.5, sorted[0].0 as f64 - 1.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            below_pos += usize::from(sorted[j].1);
            below_neg += usize::from(!sorted[j].1);
            j += 1;
        }
        let balanced = ((pos - below_pos) as f64 / pos as f64 + below_neg as f64 / neg as f64) / 2.0;
        let cut = match sorted.get(j) {
            Some(next) => (sorted[i].0 as f64 + next.0 as f64) / 2.0,
            None => sorted[i].0 as f64 + 1.0,
        };
        if balanced > best.0 {
            best = (balanced, cut);
        }
        i = j;
    }
    (Some(auc), Some(best.1))
}

#[cfg(test)]
mod tests {
    use super::balanced_cut;

    #[test]
    fn the_balanced_cut_separates_what_can_be_separated_and_the_auc_counts_ties_half() {
        // Perfectly separable: AUC 1, the cut between the highest negative and the lowest positive.
        let (auc, cut) = balanced_cut(&[(0.1, false), (0.3, false), (0.7, true), (0.9, true)]);
        assert_eq!(auc, Some(1.0));
        assert_eq!(cut, Some(0.5));
        // One tie across the classes: counted half in the AUC (3.5 of 4 pairs).
        let (auc, _) = balanced_cut(&[(0.1, false), (0.5, false), (0.5, true), (0.9, true)]);
        assert_eq!(auc, Some(0.875));
        // Reversed scores: AUC 0, and the best cut accepts everything rather than invert the decision.
        let (auc, cut) = balanced_cut(&[(0.9, false), (0.1, true)]);
        assert_eq!(auc, Some(0.0));
        assert!(cut.unwrap() < 0.1, "{cut:?}");
        // One class only: nothing to calibrate.
        assert_eq!(balanced_cut(&[(0.2, true), (0.4, true)]), (None, None));
    }
}

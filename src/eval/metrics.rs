//! Scores GRSer reports: segmentation (IoU, mIoU, overall IoU), how well positives and negatives are told
//! apart, and the Co-SOD saliency metrics (MAE, max F-measure, S-measure, mean E-measure).
//!
//! The saliency metrics are a line-by-line port of PyPI's `pysodmetrics` 1.6.2 (`py_sod_metrics/
//! sod_metrics.py`: `MAE`, `Fmeasure`, `Smeasure`, `Emeasure`; `utils.py`: `prepare_data`), the code
//! Co-SOD papers evaluate with, so photoseg's numbers sit beside theirs: same input normalisation, same
//! 256 thresholds, same data-set aggregation (curves averaged over images, then max or mean), same
//! `EPS`, and the same NaN where the reference yields one. Everything is computed in f64, as numpy does.
use anyhow::{bail, Result};

use crate::data::Mask;

/// numpy's `np.spacing(1)`, pysodmetrics' `EPS` (the MATLAB originals' `eps`).
const EPS: f64 = f64::EPSILON;
/// F-measure's beta^2 (precision weighted over recall), as pysodmetrics and the Co-SOD papers use.
const BETA2: f64 = 0.3;
/// S-measure's balance between the object and the region terms.
const ALPHA: f64 = 0.5;
/// Thresholds 255, 254, ..., 0 on the prediction scaled to 0-255.
const THRESHOLDS: usize = 256;

/// Intersection over union of two binary masks of one size; 1 when both are empty (a correct "not here").
pub fn iou(pred: &Mask, gt: &Mask) -> Result<f64> {
    let (i, u) = intersection_union(pred, Some(gt))?;
    Ok(if u == 0 { 1.0 } else { i as f64 / u as f64 })
}

fn intersection_union(pred: &Mask, gt: Option<&Mask>) -> Result<(u64, u64)> {
    let Some(gt) = gt else { return Ok((0, pred.area())) };
    same_size(pred.width, pred.height, gt)?;
    let (mut i, mut u) = (0u64, 0u64);
    for (&p, &g) in pred.data.iter().zip(&gt.data) {
        i += u64::from(p & g);
        u += u64::from(p | g);
    }
    Ok((i, u))
}

fn same_size(width: u32, height: u32, gt: &Mask) -> Result<()> {
    if (width, height) != (gt.width, gt.height) {
        bail!("prediction is {width}x{height} but the ground truth is {}x{}", gt.width, gt.height);
    }
    Ok(())
}

/// Accumulates segmentation and decision scores over the photos of an evaluation.
#[derive(Clone, Debug, Default)]
pub struct SegMetrics {
    images: usize,
    iou_sum: f64,
    positives: usize,
    positive_iou_sum: f64,
    intersection: u64,
    union: u64,
    positives_found: usize,
    negatives: usize,
    negatives_rejected: usize,
}

/// What [`SegMetrics`] reports. Accuracies and `miou_positives` are `None` when there was nothing to
/// average.
#[derive(Clone, Debug, PartialEq)]
pub struct SegScores {
    pub images: usize,
    pub positives: usize,
    pub negatives: usize,
    /// Mean per-photo IoU over all photos; a negative scores 1 with an empty prediction, else 0.
    pub miou: f64,
    /// Mean IoU over the photos that contain the target (the plain RES mIoU).
    pub miou_positives: Option<f64>,
    /// Overall (cumulative) IoU: all intersections over all unions; 1 when every mask was empty.
    pub oiou: f64,
    /// Fraction of positives the model called positive.
    pub accuracy_positives: Option<f64>,
    /// Fraction of negatives the model called negative.
    pub accuracy_negatives: Option<f64>,
}

impl SegMetrics {
    pub fn new() -> SegMetrics {
        SegMetrics::default()
    }

    /// One photo: the predicted mask (empty where the model said "not here"), the ground truth (`None` for
    /// a negative, as [`crate::data::GroupPhoto`] marks it) and the model's positive/negative decision.
    pub fn add(&mut self, pred: &Mask, gt: Option<&Mask>, decided_positive: bool) -> Result<()> {
        let (i, u) = intersection_union(pred, gt)?;
        let iou = if u == 0 { 1.0 } else { i as f64 / u as f64 };
        self.images += 1;
        self.iou_sum += iou;
        self.intersection += i;
        self.union += u;
        if gt.is_some() {
            self.positives += 1;
            self.positive_iou_sum += iou;
            self.positives_found += usize::from(decided_positive);
        } else {
            self.negatives += 1;
            self.negatives_rejected += usize::from(!decided_positive);
        }
        Ok(())
    }

    pub fn finish(&self) -> SegScores {
        let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        SegScores {
            images: self.images,
            positives: self.positives,
            negatives: self.negatives,
            miou: if self.images == 0 { f64::NAN } else { self.iou_sum / self.images as f64 },
            miou_positives: (self.positives > 0).then(|| self.positive_iou_sum / self.positives as f64),
            oiou: if self.union == 0 { 1.0 } else { self.intersection as f64 / self.union as f64 },
            accuracy_positives: ratio(self.positives_found, self.positives),
            accuracy_negatives: ratio(self.negatives_rejected, self.negatives),
        }
    }
}

/// A saliency prediction, row-major like [`Mask`].
#[derive(Clone, Copy, Debug)]
pub enum SaliencyMap<'a> {
    /// An 8-bit grey map. Normalised as pysodmetrics does by default (`normalize=True`, MATLAB's
    /// `mapminmax(im2double(x))`): divided by 255, then stretched to [0, 1] unless it is constant.
    Grey(&'a [u8]),
    /// A probability map in [0, 1], used as it is (pysodmetrics' `normalize=False`); widened to f64.
    Prob(&'a [f32]),
}

impl<'a> From<&'a [u8]> for SaliencyMap<'a> {
    fn from(v: &'a [u8]) -> Self {
        SaliencyMap::Grey(v)
    }
}

impl<'a> From<&'a [f32]> for SaliencyMap<'a> {
    fn from(v: &'a [f32]) -> Self {
        SaliencyMap::Prob(v)
    }
}

/// Accumulates the Co-SOD metrics over the images of a data set.
#[derive(Clone, Debug)]
pub struct SodMetrics {
    maes: Vec<f64>,
    sms: Vec<f64>,
    f_sum: Vec<f64>,
    e_sum: Vec<f64>,
}

/// The data-set scores. `f_curve` and `e_curve` are the per-threshold means over images, index 0 for
/// threshold 255 down to index 255 for threshold 0 (pysodmetrics' order). With no images every number is
/// NaN.
#[derive(Clone, Debug, PartialEq)]
pub struct SodScores {
    pub images: usize,
    pub mae: f64,
    /// S-measure (alpha = 0.5). NaN when an image's foreground centroid lies in its last row or column,
    /// as in pysodmetrics (an empty quadrant's mean).
    pub s_measure: f64,
    /// Maximum over thresholds of the mean F-measure curve (beta^2 = 0.3).
    pub max_f: f64,
    pub mean_f: f64,
    /// E-measure divides by (pixels - 1), as the MATLAB original: a perfect map of N pixels scores
    /// N / (N - 1), a hair above 1.
    pub max_e: f64,
    /// Mean over thresholds of the mean E-measure curve.
    pub mean_e: f64,
    pub f_curve: Vec<f64>,
    pub e_curve: Vec<f64>,
}

impl Default for SodMetrics {
    fn default() -> Self {
        SodMetrics::new()
    }
}

impl SodMetrics {
    pub fn new() -> SodMetrics {
        SodMetrics { maes: Vec::new(), sms: Vec::new(), f_sum: vec![0.0; THRESHOLDS], e_sum: vec![0.0; THRESHOLDS] }
    }

    /// One image: a grey (`&[u8]`) or probability (`&[f32]`) map and its binary ground truth, same size.
    pub fn add<'a>(&mut self, pred: impl Into<SaliencyMap<'a>>, gt: &Mask) -> Result<()> {
        let pred = normalise(pred.into(), gt)?;
        let (h, w) = (gt.height as usize, gt.width as usize);
        let gt: Vec<bool> = gt.data.iter().map(|&v| v != 0).collect();
        self.maes.push(mean_of(pred.iter().zip(&gt).map(|(&p, &g)| (p - f64::from(u8::from(g))).abs()), pred.len()));
        self.sms.push(s_measure(&pred, &gt, h, w));
        let (fg_hist, bg_hist) = histograms(&pred, &gt);
        let (f, e) = (f_curve(&fg_hist, &bg_hist, &gt), e_curve(&fg_hist, &bg_hist, &gt));
        self.f_sum.iter_mut().zip(&f).for_each(|(s, v)| *s += v);
        self.e_sum.iter_mut().zip(&e).for_each(|(s, v)| *s += v);
        Ok(())
    }

    pub fn finish(&self) -> SodScores {
        let n = self.maes.len();
        let f_curve: Vec<f64> = self.f_sum.iter().map(|s| s / n as f64).collect();
        let e_curve: Vec<f64> = self.e_sum.iter().map(|s| s / n as f64).collect();
        SodScores {
            images: n,
            mae: mean_of(self.maes.iter().copied(), n),
            s_measure: mean_of(self.sms.iter().copied(), n),
            max_f: nan_max(&f_curve),
            mean_f: mean_of(f_curve.iter().copied(), THRESHOLDS),
            max_e: nan_max(&e_curve),
            mean_e: mean_of(e_curve.iter().copied(), THRESHOLDS),
            f_curve,
            e_curve,
        }
    }
}

/// `validate_and_normalize_input`: the prediction as f64 in [0, 1].
fn normalise(pred: SaliencyMap<'_>, gt: &Mask) -> Result<Vec<f64>> {
    let n = gt.width as usize * gt.height as usize;
    let len = match pred {
        SaliencyMap::Grey(p) => p.len(),
        SaliencyMap::Prob(p) => p.len(),
    };
    if len != n {
        bail!("prediction has {len} values but the {}x{} ground truth has {n}", gt.width, gt.height);
    }
    match pred {
        SaliencyMap::Grey(p) => {
            let mut v: Vec<f64> = p.iter().map(|&x| f64::from(x) / 255.0).collect();
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            if hi != lo {
                v.iter_mut().for_each(|x| *x = (*x - lo) / (hi - lo));
            }
            Ok(v)
        }
        SaliencyMap::Prob(p) => {
            if let Some(bad) = p.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                bail!("probability map holds {bad}: values must lie in [0, 1]");
            }
            Ok(p.iter().map(|&x| f64::from(x)).collect())
        }
    }
}

fn mean_of(values: impl Iterator<Item = f64>, n: usize) -> f64 {
    values.sum::<f64>() / n as f64
}

/// numpy's max: NaN if any value is NaN.
fn nan_max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, |m, x| if m.is_nan() || x.is_nan() { f64::NAN } else { m.max(x) })
}

/// Histograms of `(pred * 255).astype(uint8)` (truncation) over ground-truth foreground and background.
fn histograms(pred: &[f64], gt: &[bool]) -> ([u64; 256], [u64; 256]) {
    let (mut fg, mut bg) = ([0u64; 256], [0u64; 256]);
    for (&p, &g) in pred.iter().zip(gt) {
        let bin = (p * 255.0) as u8 as usize;
        if g {
            fg[bin] += 1;
        } else {
            bg[bin] += 1;
        }
    }
    (fg, bg)
}

/// Pixels at or above each threshold 255, 254, ..., 0 (`np.cumsum(np.flip(hist))`).
fn at_or_above(hist: &[u64; 256]) -> [u64; 256] {
    let mut out = [0u64; 256];
    let mut acc = 0;
    for k in 0..256 {
        acc += hist[255 - k];
        out[k] = acc;
    }
    out
}

/// `Fmeasure.cal_pr`'s F-measure per threshold.
fn f_curve(fg_hist: &[u64; 256], bg_hist: &[u64; 256], gt: &[bool]) -> Vec<f64> {
    let tps = at_or_above(fg_hist);
    let fps = at_or_above(bg_hist);
    let t = gt.iter().filter(|&&g| g).count().max(1) as f64;
    (0..THRESHOLDS)
        .map(|k| {
            let ps = match tps[k] + fps[k] {
                0 => 1,
                p => p,
            };
            let precision = tps[k] as f64 / ps as f64;
            let recall = tps[k] as f64 / t;
            let numerator = (1.0 + BETA2) * precision * recall;
            let denominator = if numerator == 0.0 { 1.0 } else { BETA2 * precision + recall };
            numerator / denominator
        })
        .collect()
}

/// `Emeasure.cal_em_with_cumsumhistogram`: the enhanced-alignment measure per threshold.
fn e_curve(fg_hist: &[u64; 256], bg_hist: &[u64; 256], gt: &[bool]) -> Vec<f64> {
    let fg_fg = at_or_above(fg_hist);
    let fg_bg = at_or_above(bg_hist);
    let size = gt.len() as u64;
    let gt_fg = gt.iter().filter(|&&g| g).count() as u64;
    let denom = (size - 1) as f64 + EPS;
    (0..THRESHOLDS)
        .map(|k| {
            let pred_fg = fg_fg[k] + fg_bg[k];
            let pred_bg = size - pred_fg;
            let sum = if gt_fg == 0 {
                pred_bg as f64
            } else if gt_fg == size {
                pred_fg as f64
            } else {
                let bg_fg = gt_fg - fg_fg[k];
                let bg_bg = pred_bg - bg_fg;
                let mean_pred = pred_fg as f64 / size as f64;
                let mean_gt = gt_fg as f64 / size as f64;
                let (pred_fg_v, pred_bg_v) = (1.0 - mean_pred, 0.0 - mean_pred);
                let (gt_fg_v, gt_bg_v) = (1.0 - mean_gt, 0.0 - mean_gt);
                let part = |numel: u64, a: f64, b: f64| {
                    let align = 2.0 * (a * b) / (a * a + b * b + EPS);
                    let enhanced = (align + 1.0) * (align + 1.0) / 4.0;
                    enhanced * numel as f64
                };
                part(fg_fg[k], pred_fg_v, gt_fg_v)
                    + part(fg_bg[k], pred_fg_v, gt_bg_v)
                    + part(bg_fg, pred_bg_v, gt_fg_v)
                    + part(bg_bg, pred_bg_v, gt_bg_v)
            };
            sum / denom
        })
        .collect()
}

/// `Smeasure.cal_sm`: structural similarity of the object and of four regions around the centroid.
fn s_measure(pred: &[f64], gt: &[bool], h: usize, w: usize) -> f64 {
    let fg = gt.iter().filter(|&&g| g).count();
    let y = fg as f64 / gt.len() as f64;
    if y == 0.0 {
        1.0 - mean_of(pred.iter().copied(), pred.len())
    } else if y == 1.0 {
        mean_of(pred.iter().copied(), pred.len())
    } else {
        let score = object_score(pred, gt, y) * ALPHA + region_score(pred, gt, h, w) * (1.0 - ALPHA);
        // np.maximum keeps NaN
        if score.is_nan() {
            score
        } else {
            score.max(0.0)
        }
    }
}

fn s_object(x: &[f64]) -> f64 {
    let mean = mean_of(x.iter().copied(), x.len());
    let std = if x.len() > 1 {
        (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    2.0 * mean / (mean * mean + 1.0 + std + EPS)
}

fn object_score(pred: &[f64], gt: &[bool], gt_mean: f64) -> f64 {
    let fg: Vec<f64> = pred.iter().zip(gt).filter(|(_, &g)| g).map(|(&p, _)| p).collect();
    let bg: Vec<f64> = pred.iter().zip(gt).filter(|(_, &g)| !g).map(|(&p, _)| 1.0 - p).collect();
    s_object(&fg) * gt_mean + s_object(&bg) * (1.0 - gt_mean)
}

fn region_score(pred: &[f64], gt: &[bool], h: usize, w: usize) -> f64 {
    let area = (h * w) as f64;
    // Foreground centroid, rounded half to even as numpy's round does, plus one (MATLAB's 1-based split).
    let (mut sy, mut sx, mut n) = (0u64, 0u64, 0u64);
    for (i, _) in gt.iter().enumerate().filter(|(_, &g)| g) {
        sy += (i / w) as u64;
        sx += (i % w) as u64;
        n += 1;
    }
    let cy = (sy as f64 / n as f64).round_ties_even() as usize + 1;
    let cx = (sx as f64 / n as f64).round_ties_even() as usize + 1;
    let w_lt = (cx * cy) as f64 / area;
    let w_rt = (cy * (w - cx)) as f64 / area;
    let w_lb = ((h - cy) * cx) as f64 / area;
    let w_rb = 1.0 - w_lt - w_rt - w_lb;
    let block = |y0: usize, y1: usize, x0: usize, x1: usize| {
        let mut p = Vec::with_capacity((y1 - y0) * (x1 - x0));
        let mut g = Vec::with_capacity(p.capacity());
        for y in y0..y1 {
            p.extend_from_slice(&pred[y * w + x0..y * w + x1]);
            g.extend(gt[y * w + x0..y * w + x1].iter().map(|&v| f64::from(u8::from(v))));
        }
        ssim(&p, &g)
    };
    block(0, cy, 0, cx) * w_lt + block(0, cy, cx, w) * w_rt + block(cy, h, 0, cx) * w_lb + block(cy, h, cx, w) * w_rb
}

/// `Smeasure.ssim`. An empty block gives NaN (numpy's mean of nothing), as in the reference.
fn ssim(pred: &[f64], gt: &[f64]) -> f64 {
    let n = pred.len();
    let x = mean_of(pred.iter().copied(), n);
    let y = mean_of(gt.iter().copied(), n);
    let d = (n as f64 - 1.0) + EPS;
    let sigma_x = pred.iter().map(|p| (p - x) * (p - x)).sum::<f64>() / d;
    let sigma_y = gt.iter().map(|g| (g - y) * (g - y)).sum::<f64>() / d;
    let sigma_xy = pred.iter().zip(gt).map(|(p, g)| (p - x) * (g - y)).sum::<f64>() / d;
    let alpha = 4.0 * x * y * sigma_xy;
    let beta = (x * x + y * y) * (sigma_x + sigma_y);
    if alpha != 0.0 {
        alpha / (beta + EPS)
    } else if beta == 0.0 {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_hand_made_masks() {
        let a = Mask::from_data(3, 1, vec![1, 1, 0]).unwrap();
        let b = Mask::from_data(3, 1, vec![0, 1, 1]).unwrap();
        assert_eq!(iou(&a, &b).unwrap(), 1.0 / 3.0);
        assert_eq!(iou(&Mask::new(3, 1), &Mask::new(3, 1)).unwrap(), 1.0);
        let err = iou(&a, &Mask::new(1, 3)).unwrap_err().to_string();
        assert!(err.contains("3x1") && err.contains("1x3"), "{err}");
    }

    #[test]
    fn a_perfect_binary_prediction_scores_perfectly() {
        let gt = Mask::from_data(4, 2, vec![0, 1, 1, 0, 0, 1, 1, 0]).unwrap();
        let pred: Vec<u8> = gt.data.iter().map(|&v| v * 255).collect();
        let mut m = SodMetrics::new();
        m.add(pred.as_slice(), &gt).unwrap();
        let s = m.finish();
        assert_eq!(s.mae, 0.0);
        assert_eq!(s.max_f, 1.0);
        assert!((s.s_measure - 1.0).abs() < 1e-12, "{}", s.s_measure);
        // E-measure divides by (pixels - 1) as the MATLAB original does: 8 / 7 here, not 1
        assert!((s.max_e - 8.0 / 7.0).abs() < 1e-12, "{}", s.max_e);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let gt = Mask::new(2, 2);
        let mut m = SodMetrics::new();
        let err = m.add([0u8; 3].as_slice(), &gt).unwrap_err().to_string();
        assert!(err.contains("3 values") && err.contains("2x2"), "{err}");
        let err = m.add([0.0f32, 0.5, 1.5, 0.0].as_slice(), &gt).unwrap_err().to_string();
        assert!(err.contains("1.5") && err.contains("[0, 1]"), "{err}");
        assert!(m.add([0.0f32, f32::NAN, 0.0, 0.0].as_slice(), &gt).is_err(), "NaN is not a probability");
        assert_eq!(m.finish().images, 0);
    }
}

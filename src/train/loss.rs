//! The paper's training objective (docs/model.md, "The method"), for one group:
//!
//! CE(Y_hat, Y) on positives + lambda * CE(Y_hat_anti, 1 - Y) on positives (mirror training: the head run
//! with L_anti in place of L must find the background) + (t / T) * triplet margin loss on all photos.
//!
//! The mirror term is applied to positives only: a negative has no object, so "everything but the object"
//! would be the whole photo, a target the decoder is never asked for at query time (the paper is silent).
use candle_core::{DType, Result, Tensor};

use crate::model::ops::softplus;

/// Pixel-wise two-class cross entropy: `logits` `[M, 2, h, w]`, `target` `[M, h, w]` (u32, 0 or 1).
pub fn pixel_ce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (m, c, h, w) = logits.dims4()?;
    let flat = logits.permute((0, 2, 3, 1))?.reshape((m * h * w, c))?;
    candle_nn::loss::cross_entropy(&flat, &target.flatten_all()?)
}

/// Soft Dice loss on the object class, averaged over images: `logits` `[M, 2, h, w]`, `target` `[M, h, w]`.
/// Not in the paper: added (weight `dice`, 0 restores the paper's objective) because the synthetic
/// world's objects cover a few percent of a photo, and plain CE then lingers on "all background".
pub fn dice(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(&(logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)?)?;
    let y = target.to_dtype(p.dtype())?;
    let inter = (&p * &y)?.sum((1, 2))?;
    let denom = (p.sum((1, 2))? + y.sum((1, 2))?)?;
    let score = ((inter * 2.0)? + 1.0)?.div(&(denom + 1.0)?)?;
    (1.0 - score)?.mean_all()
}

/// Triplet margin loss of the paper: `max(d_pos - d_neg + m, 0)` for positives, `max(d_neg - d_pos + m, 0)`
/// for negatives, averaged over the group. `positive`: `[N]` of 1.0 / 0.0.
pub fn triplet(d_pos: &Tensor, d_neg: &Tensor, positive: &Tensor, margin: f64) -> Result<Tensor> {
    let diff = (d_pos - d_neg)?; // < 0 is good for a positive
    let sign = ((positive * 2.0)? - 1.0)?; // +1 positive, -1 negative
    (diff * sign)?.affine(1.0, margin)?.relu()?.mean_all()
}

/// Keeps L' and L'_anti at least 2m apart: `max(2m - ||L' - L'_anti||, 0)`. Not in the paper. Since
/// |d_pos - d_neg| <= ||L' - L'_anti||, the decision's margin m is out of reach while the two are closer
/// than m, and a BERT trained from scratch starts with "x" and "<no> x" nearly equal (docs/model.md).
pub fn separation(l_proj: &Tensor, anti_proj: &Tensor, margin: f64) -> Result<Tensor> {
    let dist = (l_proj - anti_proj)?.sqr()?.sum_all()?.sqrt()?;
    dist.affine(-1.0, 2.0 * margin)?.relu()
}

/// Gain and offset that turn a language-map cosine into a logit for [`language_map`]: cos 1 -> 0.99,
/// cos 0 -> 0.007. Fixed, so the loss asks the cosine itself to be high on the object and low elsewhere.
pub const LANGUAGE_MAP_GAIN: f64 = 10.0;
pub const LANGUAGE_MAP_OFFSET: f64 = -5.0;

/// Deep supervision of the language map M_l (not in the paper): binary cross entropy between
/// sigmoid(10 M_l - 5) and the share of each 1/16 cell that is the referred object (zero everywhere on a
/// negative). Without it L' and V only learn to agree through the decoder, which at first ignores the one
/// M_l channel beside V's many: a saddle the built-in model never left (docs/builtin-model.md).
/// `map`: `[N, h, w]` cosines; `target`: `[N, h, w]` in [0, 1].
pub fn language_map(map: &Tensor, target: &Tensor) -> Result<Tensor> {
    let x = map.affine(LANGUAGE_MAP_GAIN, LANGUAGE_MAP_OFFSET)?;
    // softplus(x) - y x.
    (softplus(&x)? - (target.to_dtype(x.dtype())? * &x)?)?.mean_all()
}

/// The share of object in each `f x f` cell of `masks` (`[M, h4, w4]`, u32 0/1) -> `[M, h4 / f, w4 / f]`.
pub fn pooled_mask(masks: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, h4, w4) = masks.dims3()?;
    if h4 % h != 0 || w4 % w != 0 || h4 / h != w4 / w {
        candle_core::bail!("a {h4} x {w4} mask does not pool evenly to the {h} x {w} language map");
    }
    masks.to_dtype(DType::F32)?.unsqueeze(1)?.avg_pool2d(h4 / h)?.squeeze(1)
}

/// The parts of one group's loss, kept apart for logging.
#[derive(Debug)]
pub struct GroupLoss {
    pub ce: Tensor,
    pub dice: Tensor,
    /// CE of negatives against an all-background mask (0 when `neg_ce` is 0).
    pub neg_ce: Tensor,
    pub mirror: Tensor,
    pub triplet: Tensor,
    /// [`separation`] of L' and L'_anti (0 when its weight is 0).
    pub separation: Tensor,
    /// [`language_map`] over the whole group (0 when its weight is 0).
    pub language: Tensor,
}

impl GroupLoss {
    /// `ce + dice * dice + neg_ce * neg_ce + lambda * mirror + progress * triplet + separation * separation
    /// + language_map * language`, with the weights of
    /// `cfg` and progress = t / T in [0, 1] (or 1 without the ramp).
    pub fn total(&self, cfg: &super::TrainConfig, progress: f64) -> Result<Tensor> {
        let seg = ((&self.ce + (&self.dice * cfg.dice)?)? + (&self.neg_ce * cfg.neg_ce)?)?;
        let text = ((&self.separation * cfg.separation)? + (&self.language * cfg.language_map)?)?;
        ((seg + (&self.mirror * cfg.lambda_mirror)?)? + (&self.triplet * progress)?)? + text
    }
}

/// `1 - Y` for a u32 0/1 mask.
pub fn invert(mask: &Tensor) -> Result<Tensor> {
    (mask.ones_like()? - mask)?.to_dtype(DType::U32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_referent_loss_has_finite_gradients_at_confident_logits() -> Result<()> {
        let dev = Device::Cpu;
        let logits = candle_core::Var::new(&[[[-200f32, -90.0], [95.0, 300.0]]], &dev)?;
        let target = Tensor::new(&[[[0u32, 0], [1, 1]]], &dev)?;
        let score = logits.as_tensor().flatten_from(1)?.max(1)?;
        let parts = referent(logits.as_tensor(), &score, &target, &Tensor::new(&[1f32], &dev)?)?;
        assert!(parts.total.to_scalar::<f32>()?.is_finite());
        let grads = parts.total.backward()?;
        let g = grads.get(logits.as_tensor()).expect("a gradient").flatten_all()?.to_vec1::<f32>()?;
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        Ok(())
    }

    #[test]
    fn triplet_is_zero_when_decisions_clear_the_margin() -> Result<()> {
        let dev = Device::Cpu;
        let d_pos = Tensor::new(&[0.5f32, 4.0], &dev)?;
        let d_neg = Tensor::new(&[2.0f32, 1.0], &dev)?;
        let pos = Tensor::new(&[1f32, 0.0], &dev)?;
        assert_eq!(triplet(&d_pos, &d_neg, &pos, 1.0)?.to_scalar::<f32>()?, 0.0);
        // Swap the labels: both violate by 1.5 + 1 and 3 + 1.
        let neg = Tensor::new(&[0f32, 1.0], &dev)?;
        let l = triplet(&d_pos, &d_neg, &neg, 1.0)?.to_scalar::<f32>()?;
        assert!((l - (2.5 + 4.0) / 2.0).abs() < 1e-6, "{l}");
        Ok(())
    }

    #[test]
    fn dice_is_low_for_the_right_mask_and_high_for_its_complement() -> Result<()> {
        let dev = Device::Cpu;
        let target = Tensor::new(&[[[0u32, 1], [0, 0]]], &dev)?;
        let fg = ((target.to_dtype(DType::F32)? * 20.0)? - 10.0)?;
        let logits = Tensor::stack(&[fg.zeros_like()?, fg], 1)?;
        assert!(dice(&logits, &target)?.to_scalar::<f32>()? < 0.01);
        assert!(dice(&logits, &invert(&target)?)?.to_scalar::<f32>()? > 0.7);
        Ok(())
    }

    #[test]
    fn language_map_loss_prefers_the_map_that_matches_the_object() -> Result<()> {
        let dev = Device::Cpu;
        let target = Tensor::new(&[[[0f32, 1.0], [0.25, 0.0]]], &dev)?;
        let right = Tensor::new(&[[[-0.5f32, 1.0], [0.3, -0.5]]], &dev)?;
        let wrong = Tensor::new(&[[[1f32, -0.5], [-0.5, 1.0]]], &dev)?;
        let (r, w) =
            (language_map(&right, &target)?.to_scalar::<f32>()?, language_map(&wrong, &target)?.to_scalar::<f32>()?);
        assert!(r < 0.3 && w > 3.0, "right {r}, wrong {w}");
        // Same value as the textbook binary cross entropy.
        let x = 10.0 * 0.3f32 - 5.0;
        let p = 1.0 / (1.0 + (-x).exp());
        let bce = -(0.25 * p.ln() + 0.75 * (1.0 - p).ln());
        let one = language_map(&Tensor::new(&[[[0.3f32]]], &dev)?, &Tensor::new(&[[[0.25f32]]], &dev)?)?;
        assert!((one.to_scalar::<f32>()? - bce).abs() < 1e-5);
        // Pooling: a 4 x 4 mask with one full 2 x 2 cell and one half cell.
        let m = Tensor::new(&[[[1u32, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]]], &dev)?;
        assert_eq!(pooled_mask(&m, 2, 2)?.to_vec3::<f32>()?, vec![vec![vec![1.0, 0.0], vec![0.0, 0.5]]]);
        assert!(pooled_mask(&m, 3, 3).is_err());
        Ok(())
    }

    #[test]
    fn pixel_ce_of_a_confident_right_answer_is_small() -> Result<()> {
        let dev = Device::Cpu;
        let target = Tensor::new(&[[[0u32, 1], [1, 0]]], &dev)?; // [1, 2, 2]
        let fg = ((target.to_dtype(DType::F32)? * 20.0)? - 10.0)?;
        let logits = Tensor::stack(&[fg.neg()?, fg], 1)?; // [1, 2, 2, 2]
        assert!(pixel_ce(&logits, &target)?.to_scalar::<f32>()? < 1e-3);
        let wrong = pixel_ce(&logits, &invert(&target)?)?.to_scalar::<f32>()?;
        assert!(wrong > 10.0, "{wrong}");
        Ok(())
    }
}

/// Weight of an object cell against a background cell in [`referent`]'s per-cell term: the referent
/// covers a few percent of a photo.
const REFERENT_POS_WEIGHT: f64 = 3.0;
/// Weight of [`referent`]'s decision term.
const REFERENT_DECISION_WEIGHT: f64 = 0.5;

/// The referent head's objective, terms of one step (the total and its parts, for the log).
#[derive(Debug)]
pub struct ReferentLoss {
    pub total: Tensor,
    pub cells: f32,
    pub dice: f32,
    pub decision: f32,
}

/// The referent head's objective over N photos (docs/model.md, "The referent head"): per-cell binary
/// cross entropy (object cells weighted [`REFERENT_POS_WEIGHT`]; a negative's target is all
/// background), soft Dice on the positives, and binary cross entropy of each photo's score (what the
/// decision reads, `Referent::peaks`) against whether it holds the referent.
/// `logits`, `target` (0 / 1): `[N, h, w]`; `score`, `positive` (1.0 / 0.0): `[N]`.
pub fn referent(logits: &Tensor, score: &Tensor, target: &Tensor, positive: &Tensor) -> Result<ReferentLoss> {
    let y = target.to_dtype(logits.dtype())?;
    let cell = ((&y * REFERENT_POS_WEIGHT)?.mul(&softplus(&logits.neg()?)?)? + (1.0 - &y)?.mul(&softplus(logits)?)?)?;
    let cells = cell.mean_all()?;
    // sigmoid as exp(-softplus(-x)): 1 / (1 + exp(-x)) overflows to 1 / inf below x = -88 in f32, and
    // its gradient is then inf * 0 = NaN: one confident background cell would poison every weight.
    let p = softplus(&logits.neg()?)?.neg()?.exp()?;
    let inter = (&p * &y)?.sum((1, 2))?;
    let denom = (p.sum((1, 2))? + y.sum((1, 2))?)?;
    let per_photo = (1.0 - ((inter * 2.0)? + 1.0)?.div(&(denom + 1.0)?)?)?;
    let n_pos = positive.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1.0);
    let dice = ((per_photo * positive)?.sum_all()? / n_pos)?;
    let decision = ((positive * softplus(&score.neg()?)?)? + (1.0 - positive)?.mul(&softplus(score)?)?)?.mean_all()?;
    let total = ((&cells + &dice)? + (&decision * REFERENT_DECISION_WEIGHT)?)?;
    let value = |t: &Tensor| -> Result<f32> { t.to_dtype(DType::F32)?.to_scalar() };
    Ok(ReferentLoss { cells: value(&cells)?, dice: value(&dice)?, decision: value(&decision)?, total })
}

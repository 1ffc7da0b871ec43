//! The paper's training objective (GRSER.md, "Training"), for one group:
//!
//! CE(Y_hat, Y) on positives + lambda * CE(Y_hat_anti, 1 - Y) on positives (mirror training: the head run
//! with L_anti in place of L must find the background) + (t / T) * triplet margin loss on all photos.
//!
//! The mirror term is applied to positives only: a negative has no object, so "everything but the object"
//! would be the whole photo, a target the decoder is never asked for at query time (the paper is silent).
use candle_core::{DType, Result, Tensor};

/// Pixel-wise two-class cross entropy: `logits` `[M, 2, h, w]`, `target` `[M, h, w]` (u32, 0 or 1).
pub fn pixel_ce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (m, c, h, w) = logits.dims4()?;
    let flat = logits.permute((0, 2, 3, 1))?.reshape((m * h * w, c))?;
    candle_nn::loss::cross_entropy(&flat, &target.flatten_all()?)
}

/// Soft Dice loss on the object class, averaged over images: `logits` `[M, 2, h, w]`, `target` `[M, h, w]`.
/// Not in the paper: added (weight `--dice`, 0 restores the paper's objective) because the synthetic
/// world's objects cover a few percent of a photo, and plain CE then lingers on "all background".
pub fn dice(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(&(logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)?)?;
    let y = target.to_dtype(p.dtype())?;
    let inter = (&p * &y)?.sum((1, 2))?;
    let denom = (p.sum((1, 2))? + y.sum((1, 2))?)?;
    let score = ((inter * 2.0)? + 1.0)?.div(&(denom + 1.0)?)?;
    (1.0 - score)?.mean_all()
}

/// Triplet margin loss of GRSER.md: `max(d_pos - d_neg + m, 0)` for positives, `max(d_neg - d_pos + m, 0)`
/// for negatives, averaged over the group. `positive`: `[N]` of 1.0 / 0.0.
pub fn triplet(d_pos: &Tensor, d_neg: &Tensor, positive: &Tensor, margin: f64) -> Result<Tensor> {
    let diff = (d_pos - d_neg)?; // < 0 is good for a positive
    let sign = ((positive * 2.0)? - 1.0)?; // +1 positive, -1 negative
    (diff * sign)?.affine(1.0, margin)?.relu()?.mean_all()
}

/// The parts of one group's loss, kept apart for logging.
#[derive(Debug)]
pub struct GroupLoss {
    pub ce: Tensor,
    pub dice: Tensor,
    pub mirror: Tensor,
    pub triplet: Tensor,
}

impl GroupLoss {
    /// `ce + dice_weight * dice + lambda * mirror + progress * triplet`, progress = t / T in [0, 1].
    pub fn total(&self, lambda: f64, dice_weight: f64, progress: f64) -> Result<Tensor> {
        let seg = (&self.ce + (&self.dice * dice_weight)?)?;
        (seg + (&self.mirror * lambda)?)? + (&self.triplet * progress)?
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

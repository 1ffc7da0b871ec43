//! Training-only image augmentation (not in the paper, which trains without any).
//!
//! [`grayscale`] serves the grayscale shape loss (`photoseg train --gray-shape`): the held-out split
//! names colour-shape pairs no training photo shows, and the features learnt to read shape through
//! colour (shape per 1/16 cell 63 % on seen pairs, 40 % on held-out ones: docs/builtin-model.md). Asking
//! the same heads for shape on a colourless copy rewards shape detectors that do not need colour. It
//! creates no held-out pair: a gray copy has no colour at all.
use anyhow::Result;
use candle_core::{Tensor, D};

use crate::model::preprocess::{IMAGENET_MEAN, IMAGENET_STD};

/// ITU-R BT.601 luma weights.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Grayscale copies of normalised images `[N, 3, H, W]` (as [`crate::model::preprocess`] makes them):
/// each pixel's luma, in all three channels, normalised again.
pub fn grayscale(images: &Tensor) -> Result<Tensor> {
    let n = images.dim(0)?;
    desaturate(images, &vec![1.0; n])
}

/// Partly desaturated copies: photo i moved `amount[i]` of the way (0 = as it is, 1 = gray) towards its
/// luma. Colours fade towards gray but never turn into another named colour, so no held-out pair
/// appears either.
pub fn desaturate(images: &Tensor, amount: &[f32]) -> Result<Tensor> {
    let dev = images.device();
    anyhow::ensure!(amount.len() == images.dim(0)?, "{} amounts for {} photos", amount.len(), images.dim(0)?);
    let a = Tensor::new(amount, dev)?.reshape((amount.len(), 1, 1, 1))?;
    let shape = (1, 3, 1, 1);
    let mean = Tensor::new(&IMAGENET_MEAN, dev)?.reshape(shape)?;
    let std = Tensor::new(&IMAGENET_STD, dev)?.reshape(shape)?;
    let luma = Tensor::new(&LUMA, dev)?.reshape(shape)?;
    let rgb = images.broadcast_mul(&std)?.broadcast_add(&mean)?;
    let y = rgb.broadcast_mul(&luma)?.sum_keepdim(D::Minus(3))?; // [N, 1, H, W]
    let mixed = rgb.broadcast_mul(&(1.0 - &a)?)?.broadcast_add(&y.broadcast_mul(&a)?)?; // [N, 3, H, W]
    Ok(mixed.broadcast_sub(&mean)?.broadcast_div(&std)?)
}

/// One of the eight symmetries of the square (`code` in 0..8: bit 0 transposes, bit 1 flips rows, bit 2
/// flips columns) applied to the last two dimensions of `x` (`[.., H, W]`, H = W). Attribute learning
/// only: a shape's name does not change when the photo is turned, and turned copies show the network
/// every shape in every orientation and every place.
pub fn dihedral(x: &Tensor, code: u8) -> Result<Tensor> {
    let rank = x.rank();
    anyhow::ensure!(rank >= 2, "a symmetry of the square needs two spatial dimensions");
    let (h, w) = (rank - 2, rank - 1);
    let mut y = if code & 1 != 0 { x.transpose(h, w)?.contiguous()? } else { x.clone() };
    for (bit, dim) in [(2u8, h), (4u8, w)] {
        if code & bit != 0 {
            let n = y.dim(dim)?;
            let rev: Vec<u32> = (0..n as u32).rev().collect();
            y = y.index_select(&Tensor::new(rev.as_slice(), y.device())?, dim)?;
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preprocess::rgb_to_tensor;
    use candle_core::Device;

    #[test]
    fn a_gray_copy_has_the_luma_of_each_pixel_in_every_channel() -> Result<()> {
        // Pure red, green, blue and a gray pixel: luma 76.2, 149.7, 29.1 and 100 (of 255).
        let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 100, 100, 100];
        let x = rgb_to_tensor(&rgb, 4, 1, &Device::Cpu)?.unsqueeze(0)?;
        let g = grayscale(&x)?;
        assert_eq!(g.dims(), &[1, 3, 1, 4]);
        let want = [0.299f32 * 255.0, 0.587 * 255.0, 0.114 * 255.0, 100.0];
        let vals = g.squeeze(0)?.to_vec3::<f32>()?;
        for (c, plane) in vals.iter().enumerate() {
            for (i, &v) in plane[0].iter().enumerate() {
                let back = (v * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0;
                assert!((back - want[i]).abs() < 0.01, "channel {c} pixel {i}: {back} vs {}", want[i]);
            }
        }
        // Half way: the mean of the colour and its luma; none of the way: the photo itself.
        let half = desaturate(&x, &[0.5])?.squeeze(0)?.to_vec3::<f32>()?;
        let none = desaturate(&x, &[0.0])?.squeeze(0)?.to_vec3::<f32>()?;
        for c in 0..3 {
            for i in 0..4 {
                let mid = (vals[c][0][i] + x.squeeze(0)?.to_vec3::<f32>()?[c][0][i]) / 2.0;
                assert!((half[c][0][i] - mid).abs() < 1e-4, "half way, channel {c} pixel {i}");
            }
        }
        assert!((&x.squeeze(0)? - Tensor::new(none, &Device::Cpu)?)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // A gray pixel stays as it was.
        let orig = x.squeeze(0)?.to_vec3::<f32>()?;
        for c in 0..3 {
            assert!((vals[c][0][3] - orig[c][0][3]).abs() < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn the_eight_symmetries_are_distinct_and_move_pixels_as_rotations_and_mirrors() -> Result<()> {
        // 0 1 2 / 3 4 5 / 6 7 8: code 1 transposes, 2 flips rows, 4 flips columns.
        let x = Tensor::arange(0u32, 9, &candle_core::Device::Cpu)?.reshape((3, 3))?;
        let mut all: Vec<Vec<Vec<u32>>> = Vec::new();
        for code in 0..8 {
            all.push(dihedral(&x, code)?.to_vec2()?);
        }
        assert_eq!(all[0], x.to_vec2::<u32>()?);
        assert_eq!(all[1], vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5, 8]]);
        assert_eq!(all[2], vec![vec![6, 7, 8], vec![3, 4, 5], vec![0, 1, 2]]);
        assert_eq!(all[4], vec![vec![2, 1, 0], vec![5, 4, 3], vec![8, 7, 6]]);
        // Transpose then flip rows: a quarter turn anticlockwise.
        assert_eq!(all[3], vec![vec![2, 5, 8], vec![1, 4, 7], vec![0, 3, 6]]);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 8);
        // Batched photos turn the same way in their last two dimensions.
        let batch = x.unsqueeze(0)?.broadcast_as((2, 3, 3))?.contiguous()?;
        assert_eq!(dihedral(&batch, 3)?.get(1)?.to_vec2::<u32>()?, all[3]);
        Ok(())
    }
}

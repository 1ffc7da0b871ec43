//! Training-only image augmentation (not in the paper, which trains without any): the symmetries of
//! the square the features stage turns its photos by.
use anyhow::Result;
use candle_core::Tensor;

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

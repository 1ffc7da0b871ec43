//! The dense trunk: a small U-Net over Swin's first three stages that gives every 1/4 cell of a photo
//! a feature vector saying what is there (docs/model.md, "The referent head").
//!
//! Why: Swin's 1/16 map is 8 x 8 cells at 128 px, where a small object is about one cell wide; a mask
//! read from it cannot be sharp and "red" cannot be bound to "circle" at the object itself. The trunk
//! brings stage 3's context down to stage 1's resolution, and the features stage teaches it the colour,
//! shape and size of every object at every 1/4 cell ([`crate::train::attributes::DenseDecoder`]).
//!
//! Each level is a 3 x 3 convolution, BatchNorm and ReLU. The BatchNorm uses the batch's statistics
//! while the features stage trains the trunk, and fixed statistics of the training photos everywhere
//! else, so a photo's features never depend on which photos are indexed with it.
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, VarBuilder};

use super::decoder::up_to;
use super::ops::BatchNorm2d;

/// A 3 x 3 convolution, BatchNorm and ReLU.
#[derive(Debug)]
struct NormConv {
    conv: Conv2d,
    norm: BatchNorm2d,
}

impl NormConv {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = candle_nn::Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Self {
            conv: candle_nn::conv2d(c_in, c_out, 3, cfg, vb.pp("conv"))?,
            norm: BatchNorm2d::new(c_out, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let y = super::ops::conv2d(&self.conv, x)?;
        let y = if training { self.norm.forward_train(&y)?.0 } else { self.norm.forward_eval(&y)? };
        y.relu()
    }
}

/// Stage 3 (1/16) upsampled and concatenated with stage 2 (1/8) through `d3`, then the same with stage 1
/// (1/4) through `d2`: `[N, WIDTHS[1], h4, w4]`.
#[derive(Debug)]
pub struct DenseTrunk {
    d3: NormConv,
    d2: NormConv,
}

impl DenseTrunk {
    /// Width at 1/8 and at 1/4 (the dense map's channels).
    pub const WIDTHS: [usize; 2] = [64, 48];

    /// `dims`: channels of Swin's stages 1, 2 and 3.
    pub fn new(dims: [usize; 3], vb: VarBuilder) -> Result<Self> {
        let [w8, w4] = Self::WIDTHS;
        Ok(Self {
            d3: NormConv::new(dims[2] + dims[1], w8, vb.pp("d3"))?,
            d2: NormConv::new(w8 + dims[0], w4, vb.pp("d2"))?,
        })
    }

    /// Channels of the dense map.
    pub fn channels(&self) -> usize {
        Self::WIDTHS[1]
    }

    fn input3(stages: &[Tensor]) -> Result<Tensor> {
        let (_, _, h8, w8) = stages[1].dims4()?;
        Tensor::cat(&[&up_to(&stages[2], h8, w8)?, &stages[1]], 1)
    }

    fn input2(x8: &Tensor, stages: &[Tensor]) -> Result<Tensor> {
        let (_, _, h4, w4) = stages[0].dims4()?;
        Tensor::cat(&[&up_to(x8, h4, w4)?, &stages[0]], 1)
    }

    /// The dense map from Swin's stage outputs (NCHW, as [`super::swin::Swin::forward_stages`]):
    /// `training` normalises with the batch's statistics, otherwise with the fixed ones.
    pub fn forward(&self, stages: &[Tensor], training: bool) -> Result<Tensor> {
        let x = self.d3.forward(&Self::input3(stages)?, training)?;
        self.d2.forward(&Self::input2(&x, stages)?, training)
    }

    /// The convolution outputs that BatchNorm `layer` (0 = `d3`, 1 = `d2`) normalises, with the layers
    /// before it on their fixed statistics: what [`crate::train`] measures the statistics of.
    pub fn pre_norm(&self, stages: &[Tensor], layer: usize) -> Result<Tensor> {
        let x3 = Self::input3(stages)?;
        if layer == 0 {
            return self.d3.conv.forward(&x3);
        }
        let x = self.d3.forward(&x3, false)?;
        self.d2.conv.forward(&Self::input2(&x, stages)?)
    }

    /// Names of the running statistics of BatchNorm `layer`, under the trunk's prefix.
    pub fn stat_names(layer: usize) -> [String; 2] {
        let l = ["d3", "d2"][layer];
        [format!("{l}.norm.running_mean"), format!("{l}.norm.running_var")]
    }
}

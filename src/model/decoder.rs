//! Mask decoder: a LAVT-style top-down path from the triphasic feature z_n (1/16) through the lateral
//! maps of Swin's stages 4, 2 and 1 to two-class logits (background, object) at 1/4 of the input.
//!
//! Choices the paper leaves open (docs/model.md): conv 3x3 + GroupNorm + ReLU blocks (GroupNorm rather
//! than LAVT's BatchNorm: groups of 8 photos are too small a batch for batch statistics), and nearest 2x
//! upsampling between levels (candle's bilinear upsampling has no backward; the 3x3 convolution after
//! each upsampling smooths the blocks).
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};

#[derive(Debug)]
struct ConvBlock {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvBlock {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let groups = [8, 4, 2, 1].into_iter().find(|g| c_out % g == 0).unwrap_or(1);
        Ok(Self {
            conv: candle_nn::conv2d(c_in, c_out, 3, cfg, vb.pp("conv"))?,
            norm: candle_nn::group_norm(groups, c_out, 1e-5, vb.pp("norm"))?,
        })
    }
}

impl Module for ConvBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?)?.relu()
    }
}

/// Nearest 2x upsampling cropped to `(h, w)` (Swin's sizes round up, so 2x can overshoot by one).
pub fn up_to(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, xh, xw) = x.dims4()?;
    let fh = h.div_ceil(xh);
    let fw = w.div_ceil(xw);
    let up = x.upsample_nearest2d(xh * fh, xw * fw)?;
    up.narrow(2, 0, h)?.narrow(3, 0, w)
}

/// The top-down decoder.
#[derive(Debug)]
pub struct Decoder {
    fuse3: ConvBlock,
    fuse1: ConvBlock,
    fuse0: ConvBlock,
    classifier: Conv2d,
}

impl Decoder {
    /// `c_z`: channels of z (C_v + K); `lateral`: channels of the lateral maps; `dim`: decoder width.
    pub fn new(c_z: usize, lateral: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fuse3: ConvBlock::new(c_z + lateral, dim, vb.pp("fuse3"))?,
            fuse1: ConvBlock::new(dim + lateral, dim, vb.pp("fuse1"))?,
            fuse0: ConvBlock::new(dim + lateral, dim, vb.pp("fuse0"))?,
            classifier: candle_nn::conv2d(dim, 2, 1, Default::default(), vb.pp("classifier"))?,
        })
    }

    /// z `[N, C_z, h16, w16]` and the laterals -> logits `[N, 2, h4, w4]`.
    pub fn forward(&self, z: &Tensor, lat0: &Tensor, lat1: &Tensor, lat3: &Tensor) -> Result<Tensor> {
        let (_, _, h16, w16) = z.dims4()?;
        let x = self.fuse3.forward(&Tensor::cat(&[z, &up_to(lat3, h16, w16)?], 1)?)?;
        let (_, _, h8, w8) = lat1.dims4()?;
        let (_, _, h4, w4) = lat0.dims4()?;
        let x = self.fuse1.forward(&Tensor::cat(&[&up_to(&x, h8, w8)?, lat1], 1)?)?;
        let x = self.fuse0.forward(&Tensor::cat(&[&up_to(&x, h4, w4)?, lat0], 1)?)?;
        self.classifier.forward(&x)
    }
}

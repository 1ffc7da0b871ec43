//! Pixels to Swin's input: ImageNet normalisation, as timm's and the paper's backbones were trained with.
//! Resizing and decoding belong to the caller (the library); this only turns RGB bytes into a tensor.
use candle_core::{bail, Device, Result, Tensor};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Interleaved RGB8 `[h * w * 3]` -> normalised `[3, h, w]`.
pub fn rgb_to_tensor(rgb: &[u8], width: usize, height: usize, device: &Device) -> Result<Tensor> {
    if rgb.len() != width * height * 3 {
        bail!("rgb buffer has {} bytes, expected {width} x {height} x 3", rgb.len());
    }
    let plane = width * height;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    Tensor::from_vec(out, (3, height, width), device)
}

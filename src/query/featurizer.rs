//! The library's [`Featurizer`] backed by GRSer: photo -> S x S -> Swin + neck -> encoded bytes.
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::Tensor;
use image::imageops::FilterType;
use image::RgbImage;

use super::model::LoadedModel;
use crate::library::indexer::Featurizer;
use crate::model::codec::FeatureCodec;
use crate::model::grser::Grser;
use crate::model::neck::VisualFeatures;
use crate::model::preprocess::rgb_to_tensor;

/// Featurizes photos with a loaded model and stores them with `codec`.
#[derive(Debug)]
pub struct ModelFeaturizer {
    grser: Arc<Grser>,
    codec: FeatureCodec,
    backbone: String,
    times: FeaturizeTimes,
}

/// Wall time of each step of [`ModelFeaturizer`]'s work, summed over its photos.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeaturizeTimes {
    /// Resizing to the model's input and converting to a tensor.
    pub resize: Duration,
    /// Swin and the neck.
    pub forward: Duration,
    /// Encoding the features with the codec.
    pub encode: Duration,
}

impl ModelFeaturizer {
    pub fn new(model: &LoadedModel, codec: FeatureCodec) -> Self {
        Self { grser: model.grser.clone(), codec, backbone: model.backbone_id(codec), times: FeaturizeTimes::default() }
    }

    /// Where the featurizer's time has gone so far.
    pub fn times(&self) -> FeaturizeTimes {
        self.times
    }
}

impl Featurizer for ModelFeaturizer {
    fn backbone_id(&self) -> String {
        self.backbone.clone()
    }

    fn featurize(&mut self, img: &RgbImage) -> Result<Vec<u8>> {
        let start = Instant::now();
        let x = model_input(&self.grser, img)?;
        let resized = Instant::now();
        let features = self.grser.featurize(&x)?;
        let forward = Instant::now();
        let bytes = crate::model::codec::encode(&features, self.codec)?;
        self.times.resize += resized - start;
        self.times.forward += forward - resized;
        self.times.encode += forward.elapsed();
        Ok(bytes)
    }
}

/// One upright photo's features (N = 1). The photo is resized, not cropped, to the model's square input
/// (docs/model.md: the 1/4 mask map then covers the whole photo); Triangle (bilinear) filtering is what
/// the training pipeline resizes with, and cheap on large photos.
pub fn featurize_image(grser: &Grser, img: &RgbImage) -> Result<VisualFeatures> {
    Ok(grser.featurize(&model_input(grser, img)?)?)
}

/// The photo as the model's `[1, 3, S, S]` input.
fn model_input(grser: &Grser, img: &RgbImage) -> Result<Tensor> {
    let s = grser.cfg.image_size as u32;
    let small = image::imageops::resize(img, s, s, FilterType::Triangle);
    Ok(rgb_to_tensor(small.as_raw(), s as usize, s as usize, &grser.device)?.unsqueeze(0)?)
}

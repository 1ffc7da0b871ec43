//! The library's [`Featurizer`] backed by GRSer: photo -> S x S -> Swin + neck -> encoded bytes.
use std::sync::Arc;

use anyhow::Result;
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
}

impl ModelFeaturizer {
    pub fn new(model: &LoadedModel, codec: FeatureCodec) -> Self {
        Self { grser: model.grser.clone(), codec, backbone: model.backbone_id(codec) }
    }
}

impl Featurizer for ModelFeaturizer {
    fn backbone_id(&self) -> String {
        self.backbone.clone()
    }

    fn featurize(&mut self, img: &RgbImage) -> Result<Vec<u8>> {
        Ok(crate::model::codec::encode(&featurize_image(&self.grser, img)?, self.codec)?)
    }
}

/// One upright photo's features (N = 1). The photo is resized, not cropped, to the model's square input
/// (docs/model.md: the 1/4 mask map then covers the whole photo); Triangle (bilinear) filtering is what
/// the training pipeline resizes with, and cheap on large photos.
pub fn featurize_image(grser: &Grser, img: &RgbImage) -> Result<VisualFeatures> {
    let s = grser.cfg.image_size as u32;
    let small = image::imageops::resize(img, s, s, FilterType::Triangle);
    let x = rgb_to_tensor(small.as_raw(), s as usize, s as usize, &grser.device)?.unsqueeze(0)?;
    Ok(grser.featurize(&x)?)
}

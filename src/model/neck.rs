//! The text-independent end of GRSer: what photoseg computes once per photo and caches.
//!
//! The paper's V_n is a C_v-channel map; we take it from Swin's third stage (1/16 of the input, the
//! resolution LAVT fuses language at; 512 channels in Swin-B, exactly the paper's C_v) through a 1x1
//! projection. The decoder also needs stages 1, 2 and 4; they go through 1x1 "lateral" projections to a
//! few channels *here*, before any language enters, so the cache stores small maps rather than Swin's
//! wide ones (see docs/model.md for the sizes).
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, VarBuilder};

/// Per-photo features: everything the query-time head reads. Batch dimension N (photos).
#[derive(Debug, Clone)]
pub struct VisualFeatures {
    /// V_n: `[N, C_v, H/16, W/16]`.
    pub v: Tensor,
    /// Lateral of stage 1: `[N, lateral, H/4, W/4]`.
    pub lat0: Tensor,
    /// Lateral of stage 2: `[N, lateral, H/8, W/8]`.
    pub lat1: Tensor,
    /// Lateral of stage 4: `[N, lateral, H/32, W/32]`.
    pub lat3: Tensor,
}

impl VisualFeatures {
    pub fn len(&self) -> usize {
        self.v.dim(0).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The photos at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Result<Self> {
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let ids = Tensor::new(ids.as_slice(), self.v.device())?;
        Ok(Self {
            v: self.v.index_select(&ids, 0)?,
            lat0: self.lat0.index_select(&ids, 0)?,
            lat1: self.lat1.index_select(&ids, 0)?,
            lat3: self.lat3.index_select(&ids, 0)?,
        })
    }

    /// Stack per-photo features (each with N = 1 or more) into one group.
    pub fn cat(parts: &[VisualFeatures]) -> Result<Self> {
        let pick = |f: fn(&VisualFeatures) -> &Tensor| -> Result<Tensor> {
            Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)
        };
        Ok(Self { v: pick(|p| &p.v)?, lat0: pick(|p| &p.lat0)?, lat1: pick(|p| &p.lat1)?, lat3: pick(|p| &p.lat3)? })
    }

    /// The lateral maps alone (what masks need besides the decision's z).
    pub fn laterals(&self) -> Laterals {
        Laterals { lat0: self.lat0.clone(), lat1: self.lat1.clone(), lat3: self.lat3.clone() }
    }
}

/// The lateral maps of some photos (what the decoder reads besides z).
#[derive(Debug, Clone)]
pub struct Laterals {
    /// `[M, lateral, H/4, W/4]`, `[M, lateral, H/8, W/8]`, `[M, lateral, H/32, W/32]`.
    pub lat0: Tensor,
    pub lat1: Tensor,
    pub lat3: Tensor,
}

/// 1x1 projections from Swin's four stages to [`VisualFeatures`].
#[derive(Debug)]
pub struct Neck {
    v: Conv2d,
    lat0: Conv2d,
    lat1: Conv2d,
    lat3: Conv2d,
}

impl Neck {
    pub fn new(stage_channels: &[usize], c_v: usize, lateral: usize, vb: VarBuilder) -> Result<Self> {
        if stage_channels.len() != 4 {
            candle_core::bail!("the neck needs 4 swin stages, the config has {}", stage_channels.len());
        }
        let c = Default::default();
        Ok(Self {
            v: candle_nn::conv2d(stage_channels[2], c_v, 1, c, vb.pp("v"))?,
            lat0: candle_nn::conv2d(stage_channels[0], lateral, 1, c, vb.pp("lat0"))?,
            lat1: candle_nn::conv2d(stage_channels[1], lateral, 1, c, vb.pp("lat1"))?,
            lat3: candle_nn::conv2d(stage_channels[3], lateral, 1, c, vb.pp("lat3"))?,
        })
    }

    /// `stages`: Swin's four NCHW outputs.
    pub fn forward(&self, stages: &[Tensor]) -> Result<VisualFeatures> {
        Ok(VisualFeatures {
            v: self.v.forward(&stages[2])?,
            lat0: self.lat0.forward(&stages[0])?,
            lat1: self.lat1.forward(&stages[1])?,
            lat3: self.lat3.forward(&stages[3])?,
        })
    }
}

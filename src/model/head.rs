//! The group-wise head (everything after the neck): TQM, the hierarchizer, the triphasic feature z_n,
//! the decision d_pos + m < d_neg and the mask decoder, for one album at a time. Its choices are
//! [`HeadConfig`]; docs/model.md says why each one.
use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::decoder::Decoder;
use super::hierarchizer;
use super::neck::{Laterals, VisualFeatures};
use super::ops::{linear, LayerNorm, Linear};
use super::tqm::{self, Tqm};
use super::triphasic;

fn default_margin() -> f64 {
    1.0
}

/// The head's choices (the paper's names): see docs/model.md for why each value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// C_v, the visual space TQM works in (paper: 512).
    pub c_v: usize,
    /// K: visual maps the decoder reads (= the training group size, paper N = 8).
    pub k: usize,
    /// Channels of each cached lateral map.
    pub lateral: usize,
    /// Decoder width.
    pub decoder_dim: usize,
    /// m of the decision rule d_pos + m < d_neg and of the triplet loss.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Which map the decision pools into e_n (models saved before the choice existed pool z_n itself).
    #[serde(default)]
    pub decision: DecisionInput,
    /// Standardise each channel of V over the photo's positions before TQM (false for models saved
    /// before it existed). A component shared by every position makes cos(V, L') nearly the same
    /// everywhere: the language map is flat and the decoder has nothing to learn from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub center_v: bool,
    /// Side of V's grid (image_size / 16) when a learnt position embedding is added to V before TQM
    /// (None: none, as models saved before it existed). Swin knows only relative positions, so without it
    /// no cosine with L' can tell "the star at the top" from the one at the bottom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_grid: Option<usize>,
}

/// What the decision vector e_n is pooled from (the paper leaves it open; docs/model.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionInput {
    /// [mean; max] of z_n itself. Global pooling of V loses where things are, so "red" and "circle"
    /// can only be matched as two separate facts about the photo; kept to load older models.
    #[default]
    PooledZ,
    /// [mean; max] of the triphasic maps alone (M_l and the K ordered M_v), without a LayerNorm: "does
    /// some place of this photo match the expression, and the group's prototypes of it". The maps are
    /// cosines, already on one scale; a LayerNorm over them would erase how high they are, which is the
    /// evidence, and V's pooled channels say what the photo holds, not whether the referent is there.
    Maps,
}

/// How the visual maps of a group are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairs {
    /// Maps only for the K best-ranked prototypes: O(N K H W), what photoseg runs on albums.
    TopK,
    /// All N x N maps, then the K best-ranked kept: the reference the top-K path is checked against.
    AllPairs,
}

/// The query-time head (everything after the neck).
#[derive(Debug)]
pub struct Head {
    tqm: Tqm,
    /// Normalises the pooled z_n before w_z: V's channels are two orders of magnitude larger than the
    /// maps' cosines, and unnormalised they drown the only channels that say whether the referent is there.
    /// None for `DecisionInput::Maps`, which pools only the maps.
    z_norm: Option<LayerNorm>,
    /// Pooled z_n -> the decision space (C_v), where it is compared with L' and L'_anti.
    w_z: Linear,
    decoder: Decoder,
    /// `[1, C_v, g, g]`, see [`HeadConfig::position_grid`].
    v_pos: Option<Tensor>,
    cfg: HeadConfig,
}

/// The triphasic feature and decision of every photo of a group.
#[derive(Debug)]
pub struct Triphasic {
    /// z_n = concat(V_n, M_l[n], ordered M_v[n, :K]): `[N, C_v + 1 + K, h, w]` (M_l is our addition,
    /// see docs/model.md).
    pub z: Tensor,
    /// d(z_n, L) and d(z_n, L_anti): `[N]` each.
    pub d_pos: Tensor,
    pub d_neg: Tensor,
    /// Prototype order chosen by the hierarchizer (indices into the group), best first.
    pub order: Vec<usize>,
    /// The language maps M_l: `[N, h, w]`.
    pub language_map: Tensor,
    /// L' and L'_anti, `[C_v]` each (the training loss keeps them apart).
    pub l_proj: Tensor,
    pub anti_proj: Tensor,
}

/// Each channel of `v` `[N, C, H, W]` minus its mean over H x W, divided by its standard deviation.
fn standardize_positions(v: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = v.dims4()?;
    let flat = v.reshape((n, c, h * w))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(D::Minus1)?)?;
    let std = (centred.sqr()?.mean_keepdim(D::Minus1)? + 1e-5)?.sqrt()?;
    centred.broadcast_div(&std)?.reshape((n, c, h, w))
}

/// The paper's decision: photo n holds the object when d_pos + m < d_neg.
pub fn is_positive(d_pos: f32, d_neg: f32, margin: f64) -> bool {
    (d_pos as f64) + margin < d_neg as f64
}

impl Head {
    pub fn new(cfg: &HeadConfig, c_l: usize, vb: VarBuilder) -> Result<Self> {
        let c_z = cfg.c_v + 1 + cfg.k;
        let pooled = match cfg.decision {
            DecisionInput::PooledZ => 2 * c_z,
            DecisionInput::Maps => 2 * (1 + cfg.k),
        };
        let z_norm = match cfg.decision {
            DecisionInput::Maps => None,
            _ => Some(LayerNorm::new(pooled, 1e-5, vb.pp("z_norm"))?),
        };
        Ok(Self {
            tqm: Tqm::new(c_l, cfg.c_v, vb.pp("tqm"))?,
            z_norm,
            w_z: linear(pooled, cfg.c_v, vb.pp("w_z"))?,
            decoder: Decoder::new(c_z, cfg.lateral, cfg.decoder_dim, vb.pp("decoder"))?,
            // Zero at the start: the model first learns what things are, then where "top" is.
            v_pos: match cfg.position_grid {
                Some(g) => Some(vb.get_with_hints((1, cfg.c_v, g, g), "v_pos", candle_nn::Init::Const(0.0))?),
                None => None,
            },
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &HeadConfig {
        &self.cfg
    }

    /// Replaces the decision's margin m (calibration; the weights do not depend on it).
    pub fn set_margin(&mut self, margin: f64) {
        self.cfg.margin = margin;
    }

    /// V as TQM reads it: standardised ([`HeadConfig::center_v`]) and with the position embedding added
    /// ([`HeadConfig::position_grid`]), when the model has them.
    fn prepare(&self, v: &Tensor) -> Result<Tensor> {
        let v = if self.cfg.center_v { standardize_positions(v)? } else { v.clone() };
        match &self.v_pos {
            Some(p) => {
                let (_, _, h, w) = v.dims4()?;
                let (_, _, ph, pw) = p.dims4()?;
                if (h, w) != (ph, pw) {
                    bail!("V is {h} x {w}, this model's position embedding is {ph} x {pw}: features of another input size");
                }
                v.broadcast_add(p)
            }
            None => Ok(v),
        }
    }

    /// [`Head::prepare`] on V's values in place (`[N, C_v, h, w]` as dims, NCHW), for the CPU decision.
    pub fn prepare_values(&self, v: &mut [f32], dims: [usize; 4]) -> Result<()> {
        if !self.cfg.center_v && self.v_pos.is_none() {
            return Ok(());
        }
        use rayon::prelude::*;
        let [n, c, h, w] = dims;
        let plane = h * w;
        if v.len() != n * c * plane || plane == 0 {
            bail!("V holds {} values, not {n} x {c} x {h} x {w}", v.len());
        }
        // One pass per channel plane instead of the tensor ops' copies: this runs on every photo of every
        // album a query reads. Same arithmetic as `prepare` (the tests compare them).
        let pos: Option<Vec<f32>> = match &self.v_pos {
            Some(p) => {
                let (_, pc, ph, pw) = p.dims4()?;
                if (h, w) != (ph, pw) || pc != c {
                    bail!("V is {h} x {w}, this model's position embedding is {ph} x {pw}: features of another input size");
                }
                Some(p.flatten_all()?.to_vec1()?)
            }
            None => None,
        };
        let center = self.cfg.center_v;
        v.par_chunks_mut(plane * c).for_each(|photo| {
            for (ch, x) in photo.chunks_exact_mut(plane).enumerate() {
                if center {
                    let mean = x.iter().sum::<f32>() / plane as f32;
                    let var = x.iter().map(|&a| (a - mean) * (a - mean)).sum::<f32>() / plane as f32;
                    let inv = 1.0 / (var + 1e-5).sqrt();
                    x.iter_mut().for_each(|a| *a = (*a - mean) * inv);
                }
                if let Some(pos) = &pos {
                    x.iter_mut().zip(&pos[ch * plane..(ch + 1) * plane]).for_each(|(a, p)| *a += p);
                }
            }
        });
        Ok(())
    }

    /// TQM, hierarchizer and decision for one group. `l`, `l_anti`: `[C_l]`.
    pub fn triphasic(&self, feats: &VisualFeatures, l: &Tensor, l_anti: &Tensor, pairs: Pairs) -> Result<Triphasic> {
        self.triphasic_v(&feats.v, l, l_anti, pairs)
    }

    /// [`Head::triphasic`] from V alone (`[N, C_v, h, w]`): the decision reads nothing else, so a query
    /// need not load the lateral maps of photos it rejects.
    pub fn triphasic_v(&self, v: &Tensor, l: &Tensor, l_anti: &Tensor, pairs: Pairs) -> Result<Triphasic> {
        let v = &self.prepare(v)?;
        let (n, c, _, _) = v.dims4()?;
        if c != self.cfg.c_v {
            bail!("features have {c} channels, the head expects C_v = {}", self.cfg.c_v);
        }
        if n == 0 {
            bail!("an empty group has nothing to segment");
        }
        let k = self.cfg.k;
        let l_proj = self.tqm.project_text(l)?;
        let anti_proj = self.tqm.project_text(l_anti)?;
        let (language_map, protos) = tqm::prototypes(v, &l_proj)?; // [N, h, w], [N, C]
        let order = hierarchizer::rank_prototypes(&protos.detach(), &l_proj.detach(), &anti_proj.detach())?;
        let keep: Vec<u32> = order.iter().take(k).map(|&i| i as u32).collect();
        let keep_t = Tensor::new(keep.as_slice(), v.device())?;
        let maps = match pairs {
            Pairs::TopK => tqm::visual_maps(v, &protos.index_select(&keep_t, 0)?)?,
            Pairs::AllPairs => tqm::visual_maps(v, &protos)?.index_select(&keep_t, 1)?,
        }; // [N, min(N, K), h, w]
           // A group smaller than K: the missing maps are zeros ("no other photo's opinion").
        let maps = if keep.len() < k { maps.pad_with_zeros(1, 0, k - keep.len())? } else { maps };
        // The language map rides along as one channel: the paper's z has only V and M_v, which leaves the
        // decoder to find the referent through prototypes alone (docs/model.md, "z_n").
        let maps = Tensor::cat(&[&language_map.unsqueeze(1)?, &maps], 1)?; // [N, 1 + K, h, w]
        let z = Tensor::cat(&[v, &maps], 1)?; // [N, C_v + 1 + K, h, w]
        let pooled_from = match self.cfg.decision {
            DecisionInput::Maps => z.narrow(1, c, 1 + k)?,
            DecisionInput::PooledZ => z.clone(),
        };
        let flat = pooled_from.flatten_from(2)?;
        let pooled = Tensor::cat(&[flat.mean(D::Minus1)?, flat.max(D::Minus1)?], 1)?; // [N, 2 C]
        let e = self.embed_pooled(&pooled)?; // [N, C_v]
        let dist = |x: &Tensor| -> Result<Tensor> { e.broadcast_sub(&x.unsqueeze(0)?)?.sqr()?.sum(1)?.sqrt() };
        Ok(Triphasic { d_pos: dist(&l_proj)?, d_neg: dist(&anti_proj)?, z, order, language_map, l_proj, anti_proj })
    }

    /// e_n from the pooled vector: w_z after the LayerNorm, when the head has one.
    fn embed_pooled(&self, pooled: &Tensor) -> Result<Tensor> {
        match &self.z_norm {
            Some(norm) => self.w_z.forward(&norm.forward(pooled)?),
            None => self.w_z.forward(pooled),
        }
    }

    /// The decision of [`Head::triphasic_v`] (`Pairs::TopK`) from V's values on the CPU (`v`: `[N, C_v, h, w]`
    /// as dims, NCHW values, already through [`Head::prepare_values`]), through the fused kernel [`triphasic::triphasic_pooled`]: d_pos, d_neg and the
    /// kernel's maps, from which [`Head::z_of`] builds z for the photos that need a mask.
    pub fn decide_pooled(
        &self,
        v: &[f32],
        dims: [usize; 4],
        l: &Tensor,
        l_anti: &Tensor,
    ) -> Result<(Vec<f32>, Vec<f32>, triphasic::PooledTriphasic)> {
        let [n, c, h, w] = dims;
        if c != self.cfg.c_v {
            bail!("features have {c} channels, the head expects C_v = {}", self.cfg.c_v);
        }
        if n == 0 {
            bail!("an empty group has nothing to segment");
        }
        let l_proj = self.tqm.project_text(l)?;
        let anti_proj = self.tqm.project_text(l_anti)?;
        let pooled = triphasic::triphasic_pooled(
            v,
            (n, c, h * w),
            self.cfg.k,
            &l_proj.to_vec1::<f32>()?,
            &anti_proj.to_vec1::<f32>()?,
        );
        let c_z = c + 1 + self.cfg.k;
        let flat = Tensor::from_slice(&pooled.pooled, (n, 2 * c_z), l_proj.device())?;
        let flat = match self.cfg.decision {
            // [mean; max] of the maps' channels alone.
            DecisionInput::Maps => {
                Tensor::cat(&[flat.narrow(1, c, 1 + self.cfg.k)?, flat.narrow(1, c_z + c, 1 + self.cfg.k)?], 1)?
            }
            DecisionInput::PooledZ => flat,
        };
        let e = self.embed_pooled(&flat)?; // [N, C_v]
        let dist =
            |x: &Tensor| -> Result<Vec<f32>> { e.broadcast_sub(&x.unsqueeze(0)?)?.sqr()?.sum(1)?.sqrt()?.to_vec1() };
        Ok((dist(&l_proj)?, dist(&anti_proj)?, pooled))
    }

    /// z `[M, C_v + 1 + K, h, w]` of the photos `idx` of a group decided by [`Head::decide_pooled`].
    pub fn z_of(
        &self,
        v: &[f32],
        dims: [usize; 4],
        pooled: &triphasic::PooledTriphasic,
        idx: &[usize],
    ) -> Result<Tensor> {
        let [_, c, h, w] = dims;
        let (hw, k) = (h * w, self.cfg.k);
        let mut z = Vec::with_capacity(idx.len() * (c + 1 + k) * hw);
        for &i in idx {
            z.extend_from_slice(&v[i * c * hw..(i + 1) * c * hw]);
            z.extend_from_slice(&pooled.language_map[i * hw..(i + 1) * hw]);
            z.extend_from_slice(&pooled.maps[i * k * hw..(i + 1) * k * hw]);
        }
        Tensor::from_vec(z, (idx.len(), c + 1 + k, h, w), &candle_core::Device::Cpu)
    }

    /// Mask logits `[M, 2, h4, w4]` for the photos `idx` of the group (decode only what is needed).
    pub fn decode(&self, tri: &Triphasic, feats: &VisualFeatures, idx: &[usize]) -> Result<Tensor> {
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let ids = Tensor::new(ids.as_slice(), tri.z.device())?;
        let sub = feats.select(idx)?;
        self.decoder.forward(&tri.z.index_select(&ids, 0)?, &sub.lat0, &sub.lat1, &sub.lat3)
    }

    /// Mask logits `[M, 2, h4, w4]` from the triphasic features `z` `[M, C_v + 1 + K, h, w]` of M photos
    /// and those photos' lateral maps (`lat`'s V is not read).
    pub fn decode_z(&self, z: &Tensor, lat: &Laterals) -> Result<Tensor> {
        self.decoder.forward(z, &lat.lat0, &lat.lat1, &lat.lat3)
    }

    /// Decoder over every photo of the group (training).
    pub fn decode_all(&self, tri: &Triphasic, feats: &VisualFeatures) -> Result<Tensor> {
        self.decoder.forward(&tri.z, &feats.lat0, &feats.lat1, &feats.lat3)
    }
}

//! GRSer put together: Swin -> neck (cached per photo) and, per query, BERT -> TQM -> hierarchizer ->
//! decision -> decoder, over one group (album) of any size.
//!
//! Weights live in one safetensors file with prefixes `swin.` (timm names), `text.` (Hugging Face
//! `BertModel` names), `neck.` and `head.`, and a `config.json` ([`Config`]) beside it.
use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::codec::FeatureCodec;
use super::dense::DenseTrunk;
pub use super::head::{is_positive, DecisionInput, Head, HeadConfig, Pairs, Triphasic};
use super::neck::{Laterals, Neck, VisualFeatures};
pub use super::referent::ReferentConfig;
use super::referent::{self, Referent};
use super::swin::{self, Swin};
use super::text::{self, TextEncoder};

/// Everything needed to rebuild a model from its weights (`config.json` beside `model.safetensors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub swin: swin::Config,
    pub bert: text::Config,
    pub head: HeadConfig,
    /// Side of the square the photos are resized to before Swin.
    pub image_size: usize,
    /// What the model knows, shown to users (e.g. "synthetic demo world").
    #[serde(default)]
    pub description: String,
    /// How photoseg caches this model's features: a codec name of [`crate::model::codec`] (`"f16"`,
    /// `"int8"`, `"lr8"`...); absent means f16. The model's author picks it, since what a codec costs
    /// in answers depends on the model's shape (docs/library.md: lr8 suits a paper-shaped model with
    /// 4 lateral channels, f16 the built-in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_codec: Option<String>,
    /// The referent head ([`super::referent`]): when set, photos are cached as its embedding E (over the
    /// dense trunk) and the referent head decides and makes masks; the neck and the TQM head are not
    /// used. None: the paper's path (neck, TQM, hierarchizer, decoder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referent: Option<ReferentConfig>,
}

impl Config {
    /// The codec [`Config::cache_codec`] names (f16 when absent); an unknown name is an error that lists
    /// the known ones.
    pub fn cache_codec(&self) -> Result<FeatureCodec> {
        match &self.cache_codec {
            None => Ok(FeatureCodec::F16),
            Some(name) => FeatureCodec::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = FeatureCodec::ALL.iter().map(|c| c.name()).collect();
                candle_core::Error::Msg(format!(
                    "the model's config.json names cache codec {name:?}; photoseg knows {}",
                    known.join(", ")
                ))
            }),
        }
    }

    /// The paper's configuration: Swin-B, bert-base-uncased, C_v = 512, K = 8, 416 px.
    pub fn paper() -> Self {
        Self {
            swin: swin::Config::swin_b(),
            bert: text::Config::bert_base_uncased(),
            head: HeadConfig {
                c_v: 512,
                k: 8,
                lateral: 32,
                decoder_dim: 256,
                margin: 1.0,
                decision: DecisionInput::PooledZ,
                center_v: false,
                position_grid: None,
            },
            image_size: 416,
            description: "GRSer (Swin-B, BERT-base) as in the paper".into(),
            cache_codec: None,
            referent: None,
        }
    }

    /// The built-in model's shape: small enough to train on a laptop CPU and to ship in the binary, sized
    /// for the synthetic world's 128 px photos (Swin windows of 4 tile its 32/16/8/4 maps exactly).
    pub fn builtin(vocab_size: usize) -> Self {
        Self {
            swin: swin::Config {
                patch_size: 4,
                in_chans: 3,
                embed_dim: 32,
                depths: vec![2, 2, 2, 2],
                num_heads: vec![1, 2, 4, 8],
                window_size: 4,
                mlp_ratio: 2.0,
                always_partition: false,
                layer_norm_eps: 1e-5,
                img_size: Some(128),
                conv_stem: None,
                stem_batch_norm: false,
            },
            bert: text::Config {
                hidden_size: 48,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                intermediate_size: 96,
                max_position_embeddings: 32,
                ..text::Config::tiny(vocab_size)
            },
            head: HeadConfig {
                c_v: 64,
                k: 8,
                lateral: 16,
                decoder_dim: 32,
                margin: 1.0,
                decision: DecisionInput::PooledZ,
                center_v: false,
                position_grid: None,
            },
            image_size: 128,
            description: "photoseg built-in demo model: trained only on the synthetic world of coloured shapes \
                          (photoseg synth); it knows nothing about real photos"
                .into(),
            cache_codec: None,
            referent: None,
        }
    }

    /// A tiny model for tests (random weights are fine for plumbing, never for answers).
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            swin: swin::Config::tiny(),
            bert: text::Config::tiny(vocab_size),
            head: HeadConfig {
                c_v: 32,
                k: 4,
                lateral: 8,
                decoder_dim: 16,
                margin: 1.0,
                decision: DecisionInput::PooledZ,
                center_v: false,
                position_grid: None,
            },
            image_size: 64,
            description: "tiny test model".into(),
            cache_codec: None,
            referent: None,
        }
    }
}

/// The answer for one photo of a group.
#[derive(Debug, Clone)]
pub struct PhotoAnswer {
    pub positive: bool,
    pub d_pos: f32,
    pub d_neg: f32,
    /// Object logit minus background logit `[h4, w4]`, for positives only.
    pub mask_logits: Option<Tensor>,
}

/// The whole network.
#[derive(Debug)]
pub struct Grser {
    pub swin: Swin,
    pub neck: Neck,
    pub text: TextEncoder,
    pub head: Head,
    /// The dense trunk, in models with a referent head (and trained by the features stage).
    pub dense: Option<DenseTrunk>,
    pub referent: Option<Referent>,
    pub cfg: Config,
    pub device: Device,
    /// The last expressions encoded, newest last ([`Grser::encode_expression`]).
    expressions: std::sync::Mutex<std::collections::VecDeque<(String, EncodedExpression)>>,
}

/// Expressions [`Grser::encode_expression`] keeps: the daemon answers the same text again and again (a
/// search box re-asks while a person types, a viewer asks for each photo's mask), and on a paper-shaped
/// model each encoding is a BERT-base forward.
pub const EXPRESSIONS_KEPT: usize = 64;

impl Grser {
    pub fn new(cfg: &Config, tokenizer: tokenizers::Tokenizer, vb: VarBuilder) -> Result<Self> {
        let device = vb.device().clone();
        let swin_cfg = swin::Config { img_size: cfg.swin.img_size.or(Some(cfg.image_size)), ..cfg.swin.clone() };
        let swin = Swin::new(&swin_cfg, vb.pp("swin"))?;
        let neck = Neck::new(&cfg.swin.stage_channels(), cfg.head.c_v, cfg.head.lateral, vb.pp("neck"))?;
        let bert = text::Bert::new(&cfg.bert, vb.pp("text"))?;
        let head = Head::new(&cfg.head, cfg.bert.hidden_size, vb.pp("head"))?;
        let (dense, referent) = match &cfg.referent {
            Some(r) => {
                let ch = cfg.swin.stage_channels();
                let trunk = DenseTrunk::new([ch[0], ch[1], ch[2]], vb.pp("dense"))?;
                let head = Referent::new(r, trunk.channels(), cfg.bert.hidden_size, vb.pp("referent"))?;
                (Some(trunk), Some(head))
            }
            None => (None, None),
        };
        Ok(Self {
            swin,
            neck,
            text: TextEncoder::new(bert, tokenizer, &device),
            head,
            dense,
            referent,
            cfg: cfg.clone(),
            device,
            expressions: Default::default(),
        })
    }

    /// m of the decision d_pos + m < d_neg: the TQM head's margin, 0 for a referent model (its d_pos and
    /// d_neg already hold the score and the threshold).
    pub fn decision_margin(&self) -> f64 {
        if self.referent.is_some() {
            0.0
        } else {
            self.head.config().margin
        }
    }

    /// The referent head's decision threshold, when the model has one.
    pub fn set_threshold(&mut self, threshold: f64) {
        if let (Some(r), Some(c)) = (self.referent.as_mut(), self.cfg.referent.as_mut()) {
            r.set_threshold(threshold);
            c.threshold = threshold;
        }
    }

    /// Replaces the decision's margin m in the head and the configuration ([`Head::set_margin`]).
    pub fn set_margin(&mut self, margin: f64) {
        self.head.set_margin(margin);
        self.cfg.head.margin = margin;
    }

    /// Photos `[N, 3, S, S]` (normalised, see [`super::preprocess`]) -> their cacheable features.
    pub fn featurize(&self, images: &Tensor) -> Result<VisualFeatures> {
        let stages = self.swin.forward_stages(images)?;
        match (&self.dense, &self.referent) {
            (Some(trunk), Some(r)) => referent_features(&r.embed(&trunk.forward(&stages, false)?)?),
            _ => self.neck.forward(&stages),
        }
    }

    /// One expression over one group: a decision for every photo, mask logits for the positives.
    pub fn answer(&self, feats: &VisualFeatures, expression: &str, pairs: Pairs) -> anyhow::Result<Vec<PhotoAnswer>> {
        self.answer_with_text(feats, &self.encode_expression(expression)?, pairs)
    }

    /// L and L_anti of `expression` (BERT, once per query): every album of a query reuses them.
    pub fn encode_expression(&self, expression: &str) -> anyhow::Result<EncodedExpression> {
        if self.text.bert.is_trained_now() {
            return self.encode_expression_uncached(expression);
        }
        let mut kept = self.expressions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = kept.iter().position(|(text, _)| text == expression) {
            let hit = kept.remove(i).expect("found above");
            kept.push_back(hit.clone());
            return Ok(hit.1);
        }
        drop(kept);
        let encoded = self.encode_expression_uncached(expression)?;
        let mut kept = self.expressions.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= EXPRESSIONS_KEPT {
            kept.pop_front();
        }
        kept.push_back((expression.to_string(), encoded.clone()));
        Ok(encoded)
    }

    /// How many encoded expressions are kept now (at most [`EXPRESSIONS_KEPT`]).
    pub fn expressions_kept(&self) -> usize {
        self.expressions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// [`Grser::encode_expression`] without the kept ones: the text encoder's forward.
    pub fn encode_expression_uncached(&self, expression: &str) -> anyhow::Result<EncodedExpression> {
        if let Some(r) = &self.referent {
            let batch = self.text.tokenize(&[expression])?;
            let hidden = self.text.bert.forward(&batch.ids, &batch.types, &batch.mask)?;
            let q = r.query(&hidden, &batch.mask)?.squeeze(0)?;
            return Ok(EncodedExpression { l: q.clone(), anti: q });
        }
        let (l, anti) = self.text.encode_with_anti(&[expression])?;
        Ok(EncodedExpression { l: l.squeeze(0)?, anti: anti.squeeze(0)? })
    }

    /// [`Grser::answer`] with the expression already encoded.
    pub fn answer_with_text(
        &self,
        feats: &VisualFeatures,
        text: &EncodedExpression,
        pairs: Pairs,
    ) -> anyhow::Result<Vec<PhotoAnswer>> {
        let decision = self.decide(&feats.v, text, pairs)?;
        let mut answers: Vec<PhotoAnswer> = (0..decision.d_pos.len())
            .map(|i| PhotoAnswer {
                positive: false,
                d_pos: decision.d_pos[i],
                d_neg: decision.d_neg[i],
                mask_logits: None,
            })
            .collect();
        if let Some(z) = &decision.z_positives {
            let fg = self.mask_logits(z, &feats.select(&decision.positives)?.laterals())?;
            for (j, &i) in decision.positives.iter().enumerate() {
                answers[i].positive = true;
                answers[i].mask_logits = Some(fg.get(j)?);
            }
        }
        Ok(answers)
    }

    /// The decision for every photo of a group from V alone (`[N, C_v, h, w]`); the triphasic features of
    /// the positives are kept for [`Grser::mask_logits`].
    pub fn decide(&self, v: &Tensor, text: &EncodedExpression, pairs: Pairs) -> Result<Decision> {
        if let Some(r) = &self.referent {
            return referent_decision(r, v, &text.l);
        }
        let tri = self.head.triphasic_v(v, &text.l, &text.anti, pairs)?;
        let d_pos: Vec<f32> = tri.d_pos.to_vec1()?;
        let d_neg: Vec<f32> = tri.d_neg.to_vec1()?;
        let margin = self.head.config().margin;
        let positives: Vec<usize> = (0..d_pos.len()).filter(|&i| is_positive(d_pos[i], d_neg[i], margin)).collect();
        let z_positives = if positives.is_empty() {
            None
        } else {
            let ids: Vec<u32> = positives.iter().map(|&i| i as u32).collect();
            Some(tri.z.index_select(&Tensor::new(ids.as_slice(), tri.z.device())?, 0)?)
        };
        Ok(Decision { d_pos, d_neg, positives, z_positives })
    }

    /// [`Grser::decide`] from V's values (`[N, C_v, h, w]` as dims), as decoded from the cache: on the CPU
    /// through the fused kernel (several times faster on large albums), elsewhere through tensors.
    pub fn decide_values(&self, mut v: Vec<f32>, dims: [usize; 4], text: &EncodedExpression) -> Result<Decision> {
        if !self.device.is_cpu() || self.referent.is_some() {
            let v = Tensor::from_vec(v, (dims[0], dims[1], dims[2], dims[3]), &self.device)?;
            return self.decide(&v, text, Pairs::TopK);
        }
        self.head.prepare_values(&mut v, dims)?;
        let (d_pos, d_neg, pooled) = self.head.decide_pooled(&v, dims, &text.l, &text.anti)?;
        let margin = self.head.config().margin;
        let positives: Vec<usize> = (0..d_pos.len()).filter(|&i| is_positive(d_pos[i], d_neg[i], margin)).collect();
        let z_positives =
            if positives.is_empty() { None } else { Some(self.head.z_of(&v, dims, &pooled, &positives)?) };
        Ok(Decision { d_pos, d_neg, positives, z_positives })
    }

    /// Mask logits `[M, h4, w4]` of the group's photos `idx`, whatever the decision says of them (to score
    /// the segmentation apart from the decision).
    pub fn masks_of(&self, feats: &VisualFeatures, text: &EncodedExpression, idx: &[usize]) -> Result<Tensor> {
        if self.referent.is_some() {
            return self.mask_logits(&referent::repeat(&text.l, idx.len())?, &feats.select(idx)?.laterals());
        }
        let tri = self.head.triphasic(feats, &text.l, &text.anti, Pairs::TopK)?;
        let logits = self.head.decode(&tri, feats, idx)?;
        (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)
    }

    /// Object-minus-background mask logits `[M, h4, w4]` for M photos from their triphasic features
    /// (`z`, `[M, C_z, h, w]`, rows of [`Decision::z_positives`]) and their lateral maps.
    pub fn mask_logits(&self, z: &Tensor, lat: &Laterals) -> Result<Tensor> {
        if let Some(r) = &self.referent {
            return r.logits(&lat.lat0, z);
        }
        let logits = self.head.decode_z(z, lat)?; // [M, 2, h4, w4]
        (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)
    }
}

/// What a referent model caches of E `[N, dim, h4, w4]`: E averaged to 1/8 as V (the decision reads
/// it), E itself as the first lateral (the masks read it), and no other lateral.
fn referent_features(e: &Tensor) -> Result<VisualFeatures> {
    let v = referent::pool(e)?;
    let (n, _, h8, w8) = v.dims4()?;
    let none = Tensor::zeros((n, 0, h8, w8), e.dtype(), e.device())?;
    Ok(VisualFeatures { v, lat0: e.clone(), lat1: none.clone(), lat3: none })
}

/// The referent head's decision over a group: each photo's peak score ([`Referent::scores`]) against
/// the threshold. `d_pos` is minus the score and `d_neg` minus the threshold, so
/// [`is_positive`] with a margin of 0 gives the same answer; z of a positive is the query itself.
fn referent_decision(r: &Referent, pooled: &Tensor, q: &Tensor) -> Result<Decision> {
    let scores: Vec<f32> = r.scores(pooled, q)?.to_vec1()?;
    let threshold = r.config().threshold as f32;
    let positives: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > threshold).collect();
    let z_positives = if positives.is_empty() { None } else { Some(referent::repeat(q, positives.len())?) };
    Ok(Decision {
        d_pos: scores.iter().map(|s| -s).collect(),
        d_neg: vec![-threshold; scores.len()],
        positives,
        z_positives,
    })
}

/// An expression's sentence features, `[C_l]` each: computed once per query. For a referent model,
/// `l` (and `anti`, the same) is the query `[dim + 1]` ([`Referent::query`]).
#[derive(Debug, Clone)]
pub struct EncodedExpression {
    pub l: Tensor,
    pub anti: Tensor,
}

/// The decision over one group, before any mask.
#[derive(Debug)]
pub struct Decision {
    /// d(e_n, L') and d(e_n, L'_anti) per photo.
    pub d_pos: Vec<f32>,
    pub d_neg: Vec<f32>,
    /// Indices of the positives, in group order.
    pub positives: Vec<usize>,
    /// Triphasic features of the positives `[M, C_v + 1 + K, h, w]` (row j is `positives[j]`; for a
    /// referent model the query, `[M, dim + 1]`); `None`
    /// when there is none.
    pub z_positives: Option<Tensor>,
}

/// Binary mask at the photo's own resolution from `[h4, w4]` logits: bilinear upsampling of the logits,
/// then > 0 (object more likely than background). Row-major, 1 = object.
pub fn mask_at(logits: &Tensor, height: usize, width: usize) -> Result<Vec<u8>> {
    let up = logits.unsqueeze(0)?.unsqueeze(0)?.upsample_bilinear2d(height, width, false)?;
    let v: Vec<f32> = up.flatten_all()?.to_vec1()?;
    Ok(v.into_iter().map(|x| u8::from(x > 0.0)).collect())
}

//! Swin Transformer (Liu et al., ICCV 2021), the visual encoder of GRSer.
//!
//! Weight names follow timm's `SwinTransformer` state dict (`patch_embed.proj`, `layers.{i}.downsample`
//! at the start of stage i > 0, `layers.{i}.blocks.{j}.attn.qkv`...), so timm's safetensors load with no
//! mapping; Microsoft's original `.pth` layout is renamed at the edge by [`crate::model::checkpoint`].
//! Behaviour follows timm 1.0 exactly (proven by the parity tests in `tests/it/parity_swin.rs`): windows shrink to
//! the feature map when the map is smaller (per dimension, with no shift there), maps that are not a
//! multiple of the window are zero-padded after the cyclic shift, and the shifted-window mask is built on
//! the padded map. Any input size works: an input that is not a multiple of the patch size is zero-padded
//! on the right and bottom.
//!
//! A relative-position table whose window differs from the one a stage runs with (a checkpoint trained
//! with window 7 run with window 12, or a stage whose window shrank at another input size) is resized
//! with timm's algorithm at run time ([`crate::model::relpos`]).
use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use super::grad_kernels;
use super::kernels;
use super::ops::{gelu_erf, linear, linear_no_bias, softmax_last_dim, BatchNorm2d, LayerNorm, Linear};
use super::profile::{time, Op};
use super::relpos;

fn default_eps() -> f64 {
    1e-5
}

fn default_patch() -> usize {
    4
}

fn default_in_chans() -> usize {
    3
}

/// Swin hyper-parameters, field names as in timm's model arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub mlp_ratio: f64,
    /// timm's `always_partition`: when false (timm's default) a stage whose map is smaller than the window
    /// uses a window the size of the map and no shift.
    #[serde(default)]
    pub always_partition: bool,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Input side the model is built for (timm's `img_size`). Only used to size relative-position tables
    /// when they are created from scratch; loaded tables keep their own size and are resized as needed.
    #[serde(default)]
    pub img_size: Option<usize>,
    /// A convolutional stem of this width in place of the 4 x 4 patch projection (not Swin's; the
    /// built-in model's choice, docs/model.md): two 3 x 3 stride-2 convolutions (width / 2, then width,
    /// GELU after each) and a 1 x 1 projection to `embed_dim`. Early convolutions give a from-scratch
    /// transformer local edges and corners at once (Xiao et al. 2021, "Early convolutions help
    /// transformers see better"); the synthetic world's negatives turn on shapes. `None`: timm's Swin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_stem: Option<usize>,
    /// BatchNorm after each convolution of the stem, before its GELU (needs `conv_stem`): batch
    /// statistics while training, running statistics when indexing. A recipe's `conv_stem` sets it with every
    /// convolutional stem: part of the from-scratch design that learns shape as fast per photo as the
    /// PyTorch reference (docs/model.md, "Learning parity"). Off in models made before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stem_batch_norm: bool,
}

impl Config {
    fn preset(embed_dim: usize, depths: [usize; 4], num_heads: [usize; 4], window_size: usize) -> Self {
        Self {
            patch_size: 4,
            in_chans: 3,
            embed_dim,
            depths: depths.to_vec(),
            num_heads: num_heads.to_vec(),
            window_size,
            mlp_ratio: 4.0,
            always_partition: false,
            layer_norm_eps: 1e-5,
            img_size: None,
            conv_stem: None,
            stem_batch_norm: false,
        }
    }

    /// Swin-T (`swin_tiny_patch4_window7_224`).
    pub fn swin_t() -> Self {
        Self::preset(96, [2, 2, 6, 2], [3, 6, 12, 24], 7)
    }

    /// Swin-S (`swin_small_patch4_window7_224`).
    pub fn swin_s() -> Self {
        Self::preset(96, [2, 2, 18, 2], [3, 6, 12, 24], 7)
    }

    /// Swin-B (`swin_base_patch4_window12_384`), the paper's backbone.
    pub fn swin_b() -> Self {
        Self::preset(128, [2, 2, 18, 2], [4, 8, 16, 32], 12)
    }

    /// Swin-L (`swin_large_patch4_window12_384`).
    pub fn swin_l() -> Self {
        Self::preset(192, [2, 2, 18, 2], [6, 12, 24, 48], 12)
    }

    /// A few-thousand-parameter Swin for tests.
    pub fn tiny() -> Self {
        Self { mlp_ratio: 2.0, ..Self::preset(24, [2, 2, 2, 2], [2, 2, 4, 4], 7) }
    }

    /// Channels of each stage's output: `embed_dim * 2^i`.
    pub fn stage_channels(&self) -> Vec<usize> {
        (0..self.depths.len()).map(|i| self.embed_dim << i).collect()
    }

    /// Spatial size of each stage's output for an input of `h x w` pixels.
    pub fn stage_sizes(&self, h: usize, w: usize) -> Vec<(usize, usize)> {
        let mut size = (h.div_ceil(self.patch_size), w.div_ceil(self.patch_size));
        let mut out = Vec::with_capacity(self.depths.len());
        for i in 0..self.depths.len() {
            if i > 0 {
                size = (size.0.div_ceil(2), size.1.div_ceil(2));
            }
            out.push(size);
        }
        out
    }
}

/// Window and shift a block runs with on an `h x w` map (timm's `_calc_window_shift`, per dimension).
fn window_and_shift(cfg: &Config, shifted: bool, h: usize, w: usize) -> ((usize, usize), (usize, usize)) {
    let win = cfg.window_size;
    let shift = if shifted { win / 2 } else { 0 };
    if cfg.always_partition {
        return ((win, win), (shift, shift));
    }
    let dim = |r: usize| if r <= win { (r, 0) } else { (win, shift) };
    let (wh, sh) = dim(h);
    let (ww, sw) = dim(w);
    ((wh, ww), (sh, sw))
}

/// Pairwise relative-position index of a `wh x ww` window (Microsoft's / timm's
/// `get_relative_position_index`), flattened to `[N * N]` with `N = wh * ww`.
fn relative_position_index(wh: usize, ww: usize) -> Vec<u32> {
    let n = wh * ww;
    let mut idx = Vec::with_capacity(n * n);
    for a in 0..n {
        let (ya, xa) = (a / ww, a % ww);
        for b in 0..n {
            let (yb, xb) = (b / ww, b % ww);
            let dy = ya + wh - 1 - yb;
            let dx = xa + ww - 1 - xb;
            idx.push((dy * (2 * ww - 1) + dx) as u32);
        }
    }
    idx
}

/// Shifted-window attention mask for a padded `hp x wp` map: `[nW, N, N]`, 0 within a region and -100
/// across regions. A literal port of timm's `get_attn_mask`, Python slice semantics included: with a
/// zero shift along one axis, `[-0:]` covers the whole axis, so that axis forms a single region.
fn shifted_window_mask(hp: usize, wp: usize, win: (usize, usize), shift: (usize, usize)) -> Vec<f32> {
    // Python's `a[start:stop]` for start/stop given as signed offsets (None = end).
    let range = |len: usize, start: isize, stop: Option<isize>| -> std::ops::Range<usize> {
        let at = |i: isize| if i < 0 { (len as isize + i).max(0) as usize } else { (i as usize).min(len) };
        let (a, b) = (at(start), stop.map_or(len, at));
        a..b.max(a)
    };
    let slices = |w: usize, s: usize| -> [(isize, Option<isize>); 3] {
        let (w, s) = (w as isize, s as isize);
        [(0, Some(-w)), (-w, Some(-s)), (-s, None)]
    };
    let mut label = vec![0usize; hp * wp];
    let mut cnt = 0;
    for (hs, he) in slices(win.0, shift.0) {
        for (ws, we) in slices(win.1, shift.1) {
            for y in range(hp, hs, he) {
                for x in range(wp, ws, we) {
                    label[y * wp + x] = cnt;
                }
            }
            cnt += 1;
        }
    }
    let (nh, nw) = (hp / win.0, wp / win.1);
    let n = win.0 * win.1;
    let mut mask = Vec::with_capacity(nh * nw * n * n);
    for wy in 0..nh {
        for wx in 0..nw {
            let labels: Vec<usize> =
                (0..n).map(|i| label[(wy * win.0 + i / win.1) * wp + wx * win.1 + i % win.1]).collect();
            for &a in &labels {
                for &b in &labels {
                    mask.push(if a == b { 0.0 } else { -100.0 });
                }
            }
        }
    }
    mask
}

/// Window multi-head self-attention with a learned relative position bias.
#[derive(Debug)]
struct WindowAttention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    scale: f64,
    /// `[(2*wh-1)*(2*ww-1), heads]`, for the window it was trained with.
    table: Tensor,
    table_window: (usize, usize),
    /// Bias `[1, heads, N, N]` per window size, built on first use.
    bias_cache: Mutex<HashMap<(usize, usize), Tensor>>,
}

impl WindowAttention {
    /// `window`: the window this block runs with at the configured size, used only to size a new table.
    fn new(dim: usize, num_heads: usize, window: (usize, usize), vb: VarBuilder) -> Result<Self> {
        let qkv = linear(dim, dim * 3, vb.pp("qkv"))?;
        let proj = linear(dim, dim, vb.pp("proj"))?;
        let name = "relative_position_bias_table";
        let table = if vb.contains_tensor(name) {
            vb.get_unchecked(name)?
        } else {
            let rows = (2 * window.0 - 1) * (2 * window.1 - 1);
            vb.get_with_hints((rows, num_heads), name, candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?
        };
        let (rows, heads) = table.dims2()?;
        if heads != num_heads {
            bail!("relative_position_bias_table {:?} has {heads} heads, config says {num_heads}", vb.prefix());
        }
        let side = (rows as f64).sqrt().round() as usize;
        if side * side != rows || side % 2 == 0 {
            bail!("relative_position_bias_table {:?} has {rows} rows: not a square window table", vb.prefix());
        }
        let w = side.div_ceil(2);
        Ok(Self {
            qkv,
            proj,
            num_heads,
            scale: ((dim / num_heads) as f64).powf(-0.5),
            table: table.to_dtype(vb.dtype())?,
            table_window: (w, w),
            bias_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Relative position bias `[1, heads, N, N]` for a `win` window.
    fn bias(&self, win: (usize, usize), device: &Device) -> Result<Tensor> {
        // While training, the table is a variable: rebuild each time so the gradient reaches it.
        if self.table.track_op() && win == self.table_window {
            return self.bias_from_table(&self.table, win, device);
        }
        let mut cache = self.bias_cache.lock().expect("bias cache poisoned");
        if let Some(b) = cache.get(&win) {
            return Ok(b.clone());
        }
        let table = if win == self.table_window {
            self.table.clone()
        } else {
            relpos::resize_table(&self.table, self.table_window, win)?
        };
        let b = self.bias_from_table(&table, win, device)?;
        cache.insert(win, b.clone());
        Ok(b)
    }

    fn bias_from_table(&self, table: &Tensor, win: (usize, usize), device: &Device) -> Result<Tensor> {
        let n = win.0 * win.1;
        let idx = Tensor::from_vec(relative_position_index(win.0, win.1), n * n, device)?;
        table
            .index_select(&idx, 0)? // [N*N, heads]
            .reshape((n, n, self.num_heads))?
            .permute((2, 0, 1))?
            .contiguous()?
            .unsqueeze(0) // [1, heads, N, N]
    }

    /// `x`: `[B*nW, N, C]`; `mask`: `[nW, N, N]` for shifted windows.
    fn forward(&self, x: &Tensor, win: (usize, usize), mask: Option<&Tensor>) -> Result<Tensor> {
        let (bw, n, c) = x.dims3()?;
        let hd = c / self.num_heads;
        let bias = self.bias(win, x.device())?;
        // Inference on the CPU: one fused kernel ([`kernels::window_attention`]).
        if !x.track_op() && !bias.track_op() && x.device().is_cpu() && x.dtype() == DType::F32 {
            let qkv = self.qkv_forward(x)?;
            let y = time(Op::Attention, || {
                kernels::window_attention(&qkv, self.num_heads, self.scale as f32, &bias, mask)
            })?;
            return self.proj.forward(&y);
        }
        let qkv = self.qkv_forward(x)?.reshape((bw, n, 3, self.num_heads, hd))?.permute((2, 0, 3, 1, 4))?; // [3, B*nW, heads, N, hd]
        let q = (qkv.get(0)?.contiguous()? * self.scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let attn = q.matmul(&k.t()?)?; // [B*nW, heads, N, N]
        let attn = if grad_kernels::applies(&[&attn, &bias]) {
            grad_kernels::bias_softmax(&attn, &bias, mask)?
        } else {
            let attn = attn.broadcast_add(&bias)?;
            let attn = match mask {
                Some(mask) => {
                    let nw = mask.dim(0)?;
                    attn.reshape((bw / nw, nw, self.num_heads, n, n))?
                        .broadcast_add(&mask.to_dtype(attn.dtype())?.unsqueeze(1)?.unsqueeze(0)?)?
                        .reshape((bw, self.num_heads, n, n))?
                }
                None => attn,
            };
            softmax_last_dim(&attn)?
        };
        let y = attn.matmul(&v)?; // [B*nW, heads, N, hd]
        let y = y.transpose(1, 2)?.reshape((bw, n, c))?;
        self.proj.forward(&y)
    }

    fn qkv_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.qkv.forward(x)
    }
}

#[derive(Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { fc1: linear(dim, hidden, vb.pp("fc1"))?, fc2: linear(hidden, dim, vb.pp("fc2"))? })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&gelu_erf(&self.fc1.forward(x)?)?)
    }
}

/// (padded height, padded width, window h, window w, shift h, shift w).
type MaskKey = (usize, usize, usize, usize, usize, usize);

/// One Swin block: (shifted) window attention and an MLP, each with a pre-norm residual.
#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    shifted: bool,
    cfg: Config,
    mask_cache: Mutex<HashMap<MaskKey, Tensor>>,
}

impl Block {
    /// `size`: the map this block sees at the configured input size (sizes a new relative-position table).
    fn new(
        cfg: &Config,
        dim: usize,
        heads: usize,
        shifted: bool,
        size: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        let hidden = (dim as f64 * cfg.mlp_ratio) as usize;
        let (window, _) = window_and_shift(cfg, shifted, size.0, size.1);
        Ok(Self {
            norm1: LayerNorm::new(dim, eps, vb.pp("norm1"))?,
            attn: WindowAttention::new(dim, heads, window, vb.pp("attn"))?,
            norm2: LayerNorm::new(dim, eps, vb.pp("norm2"))?,
            mlp: Mlp::new(dim, hidden, vb.pp("mlp"))?,
            shifted,
            cfg: cfg.clone(),
            mask_cache: Mutex::new(HashMap::new()),
        })
    }

    fn mask(&self, hp: usize, wp: usize, win: (usize, usize), shift: (usize, usize), dev: &Device) -> Result<Tensor> {
        let mut cache = self.mask_cache.lock().expect("mask cache poisoned");
        let key = (hp, wp, win.0, win.1, shift.0, shift.1);
        if let Some(m) = cache.get(&key) {
            return Ok(m.clone());
        }
        let n = win.0 * win.1;
        let nw = (hp / win.0) * (wp / win.1);
        let m = Tensor::from_vec(shifted_window_mask(hp, wp, win, shift), (nw, n, n), dev)?;
        cache.insert(key, m.clone());
        Ok(m)
    }

    /// Attention branch on a normalised `[B, H, W, C]` map.
    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (win, shift) = window_and_shift(&self.cfg, self.shifted, h, w);
        let (hp, wp) = (h.div_ceil(win.0) * win.0, w.div_ceil(win.1) * win.1);
        let windows = time(Op::Partition, || partition(x, win, shift))?;
        let mask = if shift != (0, 0) { Some(self.mask(hp, wp, win, shift, x.device())?) } else { None };
        let y = self.attn.forward(&windows, win, mask.as_ref())?;
        time(Op::Partition, || reverse_partition(&y, (b, h, w, c), win, shift))
    }
}

/// `[B, H, W, C]` -> windows `[B*nW, N, C]`: the cyclic shift first, then zero padding to a multiple of
/// the window (timm's order).
fn partition(x: &Tensor, win: (usize, usize), shift: (usize, usize)) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (hp, wp) = (h.div_ceil(win.0) * win.0, w.div_ceil(win.1) * win.1);
    let (nh, nw) = (hp / win.0, wp / win.1);
    let x = if shift != (0, 0) { x.roll(-(shift.0 as i32), 1)?.roll(-(shift.1 as i32), 2)? } else { x.clone() };
    let x = x.pad_with_zeros(1, 0, hp - h)?.pad_with_zeros(2, 0, wp - w)?;
    x.reshape((b, nh, win.0, nw, win.1, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((b * nh * nw, win.0 * win.1, c))
}

/// [`partition`] undone: windows back to `[B, H, W, C]` (`dims`), the padding cropped, the shift undone.
fn reverse_partition(
    y: &Tensor,
    dims: (usize, usize, usize, usize),
    win: (usize, usize),
    shift: (usize, usize),
) -> Result<Tensor> {
    let (b, h, w, c) = dims;
    let (hp, wp) = (h.div_ceil(win.0) * win.0, w.div_ceil(win.1) * win.1);
    let (nh, nw) = (hp / win.0, wp / win.1);
    let y = y.reshape((b, nh, nw, win.0, win.1, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((b, hp, wp, c))?;
    let y = if hp != h || wp != w { y.narrow(1, 0, h)?.narrow(2, 0, w)? } else { y };
    if shift != (0, 0) {
        y.roll(shift.0 as i32, 1)?.roll(shift.1 as i32, 2)
    } else {
        Ok(y)
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.attention(&self.norm1.forward(x)?)?;
        let x = time(Op::Residual, || x + a)?;
        let m = self.mlp.forward(&self.norm2.forward(&x)?)?;
        time(Op::Residual, || &x + m)
    }
}

/// 2x2 patch merging: concatenate each 2x2 neighbourhood (odd sizes zero-padded), norm, reduce to 2C.
#[derive(Debug)]
struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
}

impl PatchMerging {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm::new(4 * dim, eps, vb.pp("norm"))?,
            reduction: linear_no_bias(4 * dim, 2 * dim, vb.pp("reduction"))?,
        })
    }
}

impl Module for PatchMerging {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let x = x.pad_with_zeros(1, 0, h % 2)?.pad_with_zeros(2, 0, w % 2)?;
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        // [B, H/2, 2(h), W/2, 2(w), C] -> [B, H/2, W/2, 2(w), 2(h), C]: neighbours in Microsoft's x0..x3 order.
        let x = time(Op::Merge, || {
            x.reshape((b, h2, 2, w2, 2, c))?.permute((0, 1, 3, 4, 2, 5))?.reshape((b, h2, w2, 4 * c))
        })?;
        self.reduction.forward(&self.norm.forward(&x)?)
    }
}

#[derive(Debug)]
struct Stage {
    downsample: Option<PatchMerging>,
    blocks: Vec<Block>,
}

/// The Swin backbone; `forward` returns every stage's output, the decoder needs all of them.
#[derive(Debug)]
pub struct Swin {
    /// The convolutional stem ([`Config::conv_stem`]), before `patch_proj` (then 1 x 1).
    stem: Vec<Conv2d>,
    /// BatchNorm after each stem convolution ([`Config::stem_batch_norm`]); empty without it.
    stem_bn: Vec<BatchNorm2d>,
    /// Batch statistics (training) or running statistics (indexing) in `stem_bn`.
    training: std::sync::atomic::AtomicBool,
    /// The last training forward's per-channel batch mean and unbiased variance of each `stem_bn`, for
    /// the trainer to fold into the running statistics ([`Swin::take_batch_stats`]).
    batch_stats: std::sync::Mutex<Vec<(Tensor, Tensor)>>,
    patch_proj: Conv2d,
    patch_norm: LayerNorm,
    stages: Vec<Stage>,
    cfg: Config,
}

impl Swin {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.depths.len() != cfg.num_heads.len() || cfg.depths.is_empty() {
            bail!("swin config: {} depths but {} head counts", cfg.depths.len(), cfg.num_heads.len());
        }
        let (stem, patch_proj) = match cfg.conv_stem {
            None => {
                let conv_cfg = Conv2dConfig { stride: cfg.patch_size, ..Default::default() };
                (
                    Vec::new(),
                    candle_nn::conv2d(
                        cfg.in_chans,
                        cfg.embed_dim,
                        cfg.patch_size,
                        conv_cfg,
                        vb.pp("patch_embed.proj"),
                    )?,
                )
            }
            Some(width) => {
                if cfg.patch_size != 4 || width < 2 {
                    bail!("swin config: a convolutional stem needs patch_size 4 and a width of at least 2");
                }
                let s2 = Conv2dConfig { stride: 2, padding: 1, ..Default::default() };
                let vb_stem = vb.pp("patch_embed.stem");
                let stem = vec![
                    candle_nn::conv2d(cfg.in_chans, width / 2, 3, s2, vb_stem.pp(0))?,
                    candle_nn::conv2d(width / 2, width, 3, s2, vb_stem.pp(1))?,
                ];
                (stem, candle_nn::conv2d(width, cfg.embed_dim, 1, Default::default(), vb.pp("patch_embed.proj"))?)
            }
        };
        let stem_bn = if cfg.stem_batch_norm {
            let Some(width) = cfg.conv_stem else {
                bail!("swin config: stem_batch_norm needs a convolutional stem (conv_stem)");
            };
            let vb_bn = vb.pp("patch_embed.stem_bn");
            [width / 2, width]
                .iter()
                .enumerate()
                .map(|(i, &c)| BatchNorm2d::new(c, vb_bn.pp(i)))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let patch_norm = LayerNorm::new(cfg.embed_dim, cfg.layer_norm_eps, vb.pp("patch_embed.norm"))?;
        let mut stages = Vec::new();
        let side = cfg.img_size.unwrap_or((cfg.window_size * cfg.patch_size) << (cfg.depths.len() - 1));
        let sizes = cfg.stage_sizes(side, side);
        for (i, (&depth, &heads)) in cfg.depths.iter().zip(&cfg.num_heads).enumerate() {
            let vb = vb.pp("layers").pp(i);
            let dim = cfg.embed_dim << i;
            if dim % heads != 0 {
                bail!("swin config: stage {i} has {dim} channels, not divisible by {heads} heads");
            }
            let downsample =
                if i > 0 { Some(PatchMerging::new(dim / 2, cfg.layer_norm_eps, vb.pp("downsample"))?) } else { None };
            let blocks = (0..depth)
                .map(|j| Block::new(cfg, dim, heads, j % 2 == 1, sizes[i], vb.pp("blocks").pp(j)))
                .collect::<Result<Vec<_>>>()?;
            stages.push(Stage { downsample, blocks });
        }
        Ok(Self {
            stem,
            stem_bn,
            training: false.into(),
            batch_stats: Default::default(),
            patch_proj,
            patch_norm,
            stages,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Batch statistics in the stem's BatchNorm (training the backbone) or running ones (indexing, and
    /// training with the backbone frozen). Off by default.
    pub fn set_training(&self, training: bool) {
        self.training.store(training, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last training forward's (batch mean, unbiased batch variance) of each stem BatchNorm, in
    /// order; empty when there is none. The trainer folds them into `running_mean` / `running_var`.
    pub fn take_batch_stats(&self) -> Vec<(Tensor, Tensor)> {
        std::mem::take(&mut *self.batch_stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Patch embedding: `[B, 3, H, W]` -> `[B, H/4, W/4, C]` (NHWC, normalised).
    pub fn patch_embed(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.cfg.in_chans {
            bail!("swin expects {} input channels, got {c}", self.cfg.in_chans);
        }
        let p = self.cfg.patch_size;
        let x = x.pad_with_zeros(2, 0, h.div_ceil(p) * p - h)?.pad_with_zeros(3, 0, w.div_ceil(p) * p - w)?;
        let mut x = x;
        let training = self.training.load(std::sync::atomic::Ordering::Relaxed) && !self.stem_bn.is_empty();
        let mut stats = Vec::new();
        for (i, conv) in self.stem.iter().enumerate() {
            x = super::ops::conv2d(conv, &x)?;
            if let Some(bn) = self.stem_bn.get(i) {
                x = if training {
                    let (y, mean, var) = bn.forward_train(&x)?;
                    stats.push((mean, var));
                    y
                } else {
                    bn.forward_eval(&x)?
                };
            }
            x = gelu_erf(&x)?;
        }
        if training {
            *self.batch_stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
        }
        let x = time(Op::PatchEmbed, || super::ops::conv2d(&self.patch_proj, &x)?.permute((0, 2, 3, 1)))?; // [B, h, w, C]
        self.patch_norm.forward(&x)
    }

    /// `[B, 3, H, W]` -> each stage's output, NCHW `[B, C*2^i, H/2^(i+2), W/2^(i+2)]`, before any final norm.
    pub fn forward_stages(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.patch_embed(x)?;
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            if let Some(ds) = &stage.downsample {
                x = ds.forward(&x)?;
            }
            for block in &stage.blocks {
                x = block.forward(&x)?;
            }
            outs.push(time(Op::Output, || x.permute((0, 3, 1, 2))?.contiguous())?);
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_matches_hand_computed_2x2() {
        // For a 2x2 window the table is 3x3; token 0 vs token 3 is offset (-1,-1) -> (0,0) -> row 0.
        let idx = relative_position_index(2, 2);
        assert_eq!(idx.len(), 16);
        assert_eq!(idx[0], 4); // same token: centre of the 3x3 table
        assert_eq!(idx[3], 0); // (0,0) vs (1,1)
        assert_eq!(idx[3 * 4], 8); // (1,1) vs (0,0)
        assert_eq!(idx[1], 3); // (0,0) vs (0,1): dx = -1
    }

    #[test]
    fn conv_stem_keeps_every_stage_size_and_names_its_weights() -> Result<()> {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let base =
            Config { embed_dim: 8, depths: vec![1, 1], num_heads: vec![1, 2], window_size: 4, ..Config::swin_t() };
        let scratch = || VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
        let plain = Swin::new(&base, scratch())?;
        let stem = Swin::new(&Config { conv_stem: Some(6), ..base.clone() }, vb)?;
        // Odd sizes: the stem's stride-2 convolutions (padding 1) round up as the 4 x 4 patches do.
        let x = Tensor::randn(0f32, 1.0, (1, 3, 30, 26), &Device::Cpu)?;
        let dims = |s: &Swin| -> Result<Vec<Vec<usize>>> {
            Ok(s.forward_stages(&x)?.iter().map(|t| t.dims().to_vec()).collect())
        };
        assert_eq!(dims(&stem)?, dims(&plain)?);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["patch_embed.stem.0.weight"].dims(), &[3, 3, 3, 3]);
        assert_eq!(data["patch_embed.stem.1.weight"].dims(), &[6, 3, 3, 3]);
        assert_eq!(data["patch_embed.proj.weight"].dims(), &[8, 6, 1, 1]);
        assert!(Swin::new(
            &Config { conv_stem: Some(6), patch_size: 2, ..base },
            VarBuilder::zeros(DType::F32, &Device::Cpu)
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn window_shrinks_per_dimension_like_timm() {
        let cfg = Config::tiny();
        assert_eq!(window_and_shift(&cfg, true, 25, 29), ((7, 7), (3, 3)));
        assert_eq!(window_and_shift(&cfg, true, 7, 8), ((7, 7), (0, 3)));
        assert_eq!(window_and_shift(&cfg, true, 4, 4), ((4, 4), (0, 0)));
        let always = Config { always_partition: true, ..cfg };
        assert_eq!(window_and_shift(&always, true, 4, 4), ((7, 7), (3, 3)));
    }

    #[test]
    fn shift_mask_separates_the_wrapped_regions() {
        // 4x4 map, 2x2 windows, shift 1: the last window mixes 4 regions.
        let m = shifted_window_mask(4, 4, (2, 2), (1, 1));
        assert_eq!(m.len(), 4 * 4 * 4);
        assert!(m[..16].iter().all(|&v| v == 0.0), "first window lies in one region");
        let last = &m[48..];
        assert_eq!(last.iter().filter(|&&v| v == 0.0).count(), 4, "last window: each token only sees itself");
    }

    #[test]
    fn zero_shift_axis_is_one_region() {
        // Shift only along x: windows split left/right only, never top/bottom.
        let m = shifted_window_mask(4, 4, (2, 2), (0, 1));
        // Second window (top-right): tokens (0,0),(0,1),(1,0),(1,1) of the window; columns 2 and 3 differ.
        let w = &m[16..32];
        assert_eq!(w[2], 0.0, "same column, different row: same region");
        assert_eq!(w[1], -100.0, "different column across the shift seam");
    }

    #[test]
    fn stage_sizes_round_up() {
        assert_eq!(Config::tiny().stage_sizes(100, 116), vec![(25, 29), (13, 15), (7, 8), (4, 4)]);
        assert_eq!(Config::swin_b().stage_sizes(416, 416), vec![(104, 104), (52, 52), (26, 26), (13, 13)]);
    }
}

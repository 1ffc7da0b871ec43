//! Normalisation and softmax that keep their gradients.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` are the fast path for inference but have no
//! backward: a training graph through them silently stops its gradients there. Each function here looks
//! at whether any input tracks gradients (`Tensor::track_op`) and takes the fused kernel only when none
//! does, so one model definition serves both inference and training.
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::few_rows;
use super::grad_kernels;
use super::profile::{time, Op};

/// A linear layer. For inference (weights that are not variables) it keeps the weight transposed and
/// contiguous, `[in, out]`: gemm is about twice as fast on that layout as on candle-nn's transposed view
/// (benches/model.rs). Inputs of any rank run as one `[rows, in]` product: candle-nn's `Linear` on
/// `[B, N, C]` would run B small products against a broadcast weight.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Trainable: candle-nn's layer, gradients reach `weight` and `bias`.
    Train(candle_nn::Linear),
    Infer {
        wt: Tensor,
        bias: Option<Tensor>,
    },
    /// Inference on few rows a call (a sentence's tokens): the weight packed once for
    /// [`few_rows::Packed`], which reads it in order instead of gemm's copy of it on every call.
    FewRows(few_rows::Packed),
}

impl Linear {
    pub fn from_candle(l: candle_nn::Linear) -> Result<Self> {
        if l.weight().is_variable() {
            return Ok(Self::Train(l));
        }
        Ok(Self::Infer { wt: l.weight().t()?.contiguous()?, bias: l.bias().cloned() })
    }

    /// As [`Self::from_candle`], for a layer whose inputs have few rows (BERT on one expression): its
    /// inference form is [`Self::FewRows`] where the weight is on the CPU.
    pub fn from_candle_few_rows(l: candle_nn::Linear) -> Result<Self> {
        if l.weight().is_variable() || !few_rows::Packed::applies(l.weight()) {
            return Self::from_candle(l);
        }
        Ok(Self::FewRows(few_rows::Packed::new(l.weight(), l.bias())?))
    }
}

/// How a fresh linear layer's weight starts: normal with standard deviation 0.02, as timm initialises
/// Swin and Hugging Face initialises BERT (their checkpoints load over it). candle-nn's default is
/// Kaiming for ReLU, sqrt(2 / fan_in): 0.25 for a 32-wide layer, which saturates the attention softmax
/// of a small transformer trained from scratch and slowed the built-in model's learning (docs/model.md).
const WEIGHT_INIT: candle_nn::Init = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };

/// A linear layer with bias (timm / BERT initialisation, see [`WEIGHT_INIT`]; bias zero).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::from_candle(candle_linear(in_dim, out_dim, vb)?)
}

/// candle-nn's layer with bias, its weight and bias drawn as [`linear`] says.
fn candle_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<candle_nn::Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", WEIGHT_INIT)?;
    let b = vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?;
    Ok(candle_nn::Linear::new(w, Some(b)))
}

/// A linear layer with bias whose inputs have few rows ([`Linear::from_candle_few_rows`]).
pub fn linear_few_rows(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::from_candle_few_rows(candle_linear(in_dim, out_dim, vb)?)
}

/// A linear layer without bias (initialised as [`linear`]).
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", WEIGHT_INIT)?;
    Linear::from_candle(candle_nn::Linear::new(w, None))
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let c = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, c))?;
        let y = match self {
            Self::Train(l) if grad_kernels::applies(&[&x2, l.weight()]) => {
                let y = x2.matmul(&l.weight().t()?)?;
                match l.bias() {
                    Some(b) => grad_kernels::bias_add(&y, b)?,
                    None => y,
                }
            }
            Self::Train(l) => l.forward(&x2)?,
            Self::Infer { wt, bias } => {
                let y = time(Op::Gemm, || x2.matmul(wt))?;
                match bias {
                    Some(b) => time(Op::Bias, || y.broadcast_add(b))?,
                    None => y,
                }
            }
            Self::FewRows(packed) => time(Op::Gemm, || packed.forward(&x2))?,
        };
        let mut out = dims[..dims.len() - 1].to_vec();
        out.push(y.dim(1)?);
        y.reshape(out)
    }
}

/// A candle-nn convolution's forward: im2col + gemm ([`grad_kernels::conv2d`]) while training on the
/// CPU, candle's own otherwise.
pub fn conv2d(conv: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    let cfg = conv.config();
    if cfg.groups == 1 && cfg.dilation == 1 && grad_kernels::applies(&[x, conv.weight()]) {
        return grad_kernels::conv2d(x, conv.weight(), conv.bias(), cfg.stride, cfg.padding);
    }
    conv.forward(x)
}

/// `log(1 + exp(x))`, written `max(x, 0) + log(1 + exp(-|x|))` so it is stable for any x.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

/// Exact-erf GELU: the fast CPU kernel at inference, the fused one with its backward while training on the
/// CPU, candle's differentiable op otherwise.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        time(Op::Gelu, || super::kernels::gelu_erf(x))
    } else if grad_kernels::applies(&[x]) {
        grad_kernels::gelu_erf(x)
    } else {
        x.gelu_erf()
    }
}

/// LayerNorm over the last dimension, PyTorch's `nn.LayerNorm` (weight and bias, biased variance).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        // Identity at initialisation when trained from scratch (VarBuilder's default would be all zeros).
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn from_tensors(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if grad_kernels::applies(&[x, &self.weight, &self.bias]) {
            return grad_kernels::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        if x.track_op() || self.weight.track_op() || self.bias.track_op() {
            return layer_norm_composite(x, &self.weight, &self.bias, self.eps);
        }
        // Inference: the same kernel as training's (no gradient is recorded for untracked inputs).
        if [x, &self.weight, &self.bias].iter().all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32) {
            return time(Op::LayerNorm, || grad_kernels::layer_norm(x, &self.weight, &self.bias, self.eps));
        }
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
    }
}

/// LayerNorm from elementary ops, all of which have a backward.
pub fn layer_norm_composite(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Softmax over the last dimension: fused kernel for inference, composite (differentiable) for training.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_composite_layer_norm_agree() -> Result<()> {
        let dev = Device::Cpu;
        // 16 channels (whole lanes) and 100 (a tail), offset from zero as activations are.
        for c in [16, 100] {
            let x = (Tensor::randn(0f32, 2.0, (3, 5, c), &dev)? + 3.0)?;
            let w = Tensor::randn(1f32, 0.1, c, &dev)?;
            let b = Tensor::randn(0f32, 0.1, c, &dev)?;
            let fused = LayerNorm::from_tensors(w.clone(), b.clone(), 1e-5).forward(&x)?;
            let slow = layer_norm_composite(&x, &w, &b, 1e-5)?;
            let diff = (fused - slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{c} channels: fused vs composite layer norm differ by {diff}");
        }
        Ok(())
    }

    #[test]
    fn layer_norm_and_softmax_pass_gradients_when_training() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 8), &dev)?)?;
        let w = Var::from_tensor(&Tensor::ones(8, candle_core::DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(8, candle_core::DType::F32, &dev)?)?;
        let ln = LayerNorm::from_tensors(w.as_tensor().clone(), b.as_tensor().clone(), 1e-5);
        let y = softmax_last_dim(&ln.forward(x.as_tensor())?)?;
        // Weight the outputs unevenly so the gradient is not trivially zero.
        let coeff = Tensor::arange(0f32, 32.0, &dev)?.reshape((4, 8))?;
        let loss = (y * coeff)?.sum_all()?;
        let grads = loss.backward()?;
        for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
            let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0, "zero gradient for {name}");
        }
        Ok(())
    }

    #[test]
    fn fused_and_composite_softmax_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 7, 9), &dev)?;
        let fused = softmax_last_dim(&x)?;
        let slow = candle_nn::ops::softmax(&x, D::Minus1)?;
        let diff = (fused - slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "softmax paths differ by {diff}");
        Ok(())
    }
}

/// BatchNorm2d over NCHW maps (PyTorch's: eps 1e-5, biased variance to normalise, unbiased
/// variance kept for the running statistics).
#[derive(Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm2d {
    const EPS: f64 = 1e-5;

    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        use candle_nn::Init::Const;
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Const(1.0))?,
            bias: vb.get_with_hints(c, "bias", Const(0.0))?,
            running_mean: vb.get_with_hints(c, "running_mean", Const(0.0))?,
            running_var: vb.get_with_hints(c, "running_var", Const(1.0))?,
        })
    }

    fn affine(&self, normed: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        normed.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }

    /// Normalised with this batch's statistics; also returns them (detached: mean, unbiased variance).
    pub fn forward_train(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (n, c, h, w) = x.dims4()?;
        let count = (n * h * w) as f64;
        if grad_kernels::applies(&[x, &self.weight, &self.bias]) {
            let (y, mean, var) = grad_kernels::batch_norm(x, &self.weight, &self.bias, Self::EPS)?;
            return Ok((y, mean, (var * (count / (count - 1.0).max(1.0)))?));
        }
        let over = |t: &Tensor| -> Result<Tensor> { t.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3) };
        let mean = over(x)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = over(&centred.sqr()?)?;
        let y = self.affine(&centred.broadcast_div(&(&var + Self::EPS)?.sqrt()?)?)?;
        let unbiased = (var.detach().reshape(c)? * (count / (count - 1.0).max(1.0)))?;
        Ok((y, mean.detach().reshape(c)?, unbiased))
    }

    /// Normalised with the running statistics (no gradient reaches them).
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.running_mean.dim(0)?;
        let mean = self.running_mean.detach().reshape((1, c, 1, 1))?.to_dtype(x.dtype())?;
        let std = (self.running_var.detach().reshape((1, c, 1, 1))?.to_dtype(x.dtype())? + Self::EPS)?.sqrt()?;
        self.affine(&x.broadcast_sub(&mean)?.broadcast_div(&std)?)
    }
}

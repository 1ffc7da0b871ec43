//! Linear layers for inputs of few rows (a sentence's 20 tokens), f32 CPU inference only.
//!
//! With few rows the weight is read once and used a few times, so the product is bound by reading the
//! weight, and gemm's per-call packing of it (a copy of the whole weight on every call) costs more than
//! the arithmetic. Here the weight is packed once, when the model loads, into strips of [`STRIP`]
//! output columns, each strip one contiguous `[in, STRIP]` block that streams from memory in order.
//! A task multiplies a block of input rows against one strip with the accumulators in registers (6
//! rows by 64 columns with AVX-512, 3 by 32 with AVX2), the bias as their starting value.
//! The strip is used in chunks that stay in L1 while every block of rows passes over them.
use std::sync::Arc;

use candle_core::{bail, CpuStorage, DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

use super::isa::Isa;

/// Output columns a strip: four AVX-512 registers, eight AVX2 ones.
const STRIP: usize = 64;

/// A strip's rows a chunk: 32 KB, which stays in L1 while every block of input rows uses it.
const KC: usize = 128;

/// A linear layer's weight and bias packed for [`Packed::forward`].
#[derive(Clone)]
pub struct Packed {
    /// `strips` blocks of `[k, STRIP]`, output column `j` in block `j / STRIP`, zero past `n`.
    strips: Arc<Vec<f32>>,
    /// The bias, zero-padded to whole strips (zeros without one).
    bias: Arc<Vec<f32>>,
    k: usize,
    n: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed {{ in: {}, out: {} }}", self.k, self.n)
    }
}

impl Packed {
    /// Whether a weight can be packed: f32 on the CPU (the product's output is f32, so a model of
    /// another type keeps gemm).
    pub fn applies(weight: &Tensor) -> bool {
        weight.device().is_cpu() && weight.dtype() == DType::F32
    }

    /// From a `[out, in]` weight (PyTorch's layout) and an optional `[out]` bias.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        if bias.is_some_and(|b| b.dims() != [n]) {
            bail!("linear: weight {:?} and bias {:?} do not match", weight.dims(), bias.map(|b| b.dims()));
        }
        let w: Vec<f32> = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let strips = n.div_ceil(STRIP);
        let mut packed = vec![0f32; strips * k * STRIP];
        for (s, block) in packed.chunks_exact_mut(k * STRIP).enumerate() {
            for c in 0..STRIP.min(n - s * STRIP) {
                let row = &w[(s * STRIP + c) * k..(s * STRIP + c + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    block[kk * STRIP + c] = v;
                }
            }
        }
        let mut padded = vec![0f32; strips * STRIP];
        if let Some(b) = bias {
            padded[..n].copy_from_slice(&b.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(Self { strips: Arc::new(packed), bias: Arc::new(padded), k, n })
    }

    /// `x [m, in] · weightᵀ + bias` -> `[m, out]`, with this CPU's widest kernel.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(Isa::get(), x)
    }

    /// [`Self::forward`] with a given instruction set; an error if this CPU lacks it.
    pub fn forward_with(&self, isa: Isa, x: &Tensor) -> Result<Tensor> {
        if !isa.runs_here() {
            bail!("linear: this CPU cannot run {isa:?} code");
        }
        let (m, k) = x.dims2()?;
        if k != self.k {
            bail!("linear: input {:?} for a weight of {} inputs", x.dims(), self.k);
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(xs)) = &*storage else { bail!("linear: input not on the CPU") };
        let xs = &xs[layout.start_offset()..layout.start_offset() + m * k];
        // Row blocks of equal size: 20 rows run as 5 + 5 + 5 + 5, not 6 + 6 + 6 + 2.
        let max_rows = match isa {
            Isa::Avx512 => 6,
            Isa::Avx2 => 3,
            Isa::Plain => 4,
        };
        let per_block = m.div_ceil(m.div_ceil(max_rows).max(1)).max(1);
        // Each block of rows interleaved, `[k, rows]`: the kernel's broadcasts then read one line for 16
        // of them, where the rows in place are `k` floats apart (12 KB for BERT's 3072: the same L1 set).
        let mut xt = vec![0f32; m * k];
        for (i0, (src, dst)) in
            (0..m).step_by(per_block).zip(xs.chunks(per_block * k).zip(xt.chunks_mut(per_block * k)))
        {
            let rows = per_block.min(m - i0);
            for (r, row) in src.chunks_exact(k).enumerate() {
                for (kk, &v) in row.iter().enumerate() {
                    dst[kk * rows + r] = v;
                }
            }
        }
        drop(storage);
        let strips: Vec<Vec<f32>> = self
            .strips
            .par_chunks_exact(k * STRIP)
            .zip(self.bias.par_chunks_exact(STRIP))
            .map(|(w, bias)| {
                let mut out: Vec<f32> = bias.iter().copied().cycle().take(m * STRIP).collect();
                // The strip in chunks of KC of its rows, each used by every row block while it is in
                // L1: the strip streams from memory once however many rows there are.
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    let w = &w[k0 * STRIP..(k0 + kc) * STRIP];
                    for (i0, out_rows) in (0..m).step_by(per_block).zip(out.chunks_mut(per_block * STRIP)) {
                        let rows = per_block.min(m - i0);
                        block(isa, rows, &xt[i0 * k + k0 * rows..], kc, w, out_rows);
                    }
                }
                out
            })
            .collect();
        let mut y = vec![0f32; m * self.n];
        for (s, strip) in strips.iter().enumerate() {
            let width = STRIP.min(self.n - s * STRIP);
            for (row, out) in y.chunks_exact_mut(self.n).zip(strip.chunks_exact(STRIP)) {
                row[s * STRIP..s * STRIP + width].copy_from_slice(&out[..width]);
            }
        }
        Tensor::from_vec(y, (m, self.n), &Device::Cpu)
    }
}

/// `out [rows, STRIP] += xᵀ · w [kc, STRIP]`, `x` interleaved `[kc, rows]`.
fn block(isa: Isa, rows: usize, x: &[f32], kc: usize, w: &[f32], out: &mut [f32]) {
    assert!(x.len() >= kc * rows && w.len() >= kc * STRIP && out.len() >= rows * STRIP);
    /// Calls `$f::<rows>` for a row count known only at run time.
    macro_rules! rows {
        ($f:ident, $($r:literal)*) => {
            match rows {
                // SAFETY: the assert above bounds the kernel's reads and writes; `isa` is this CPU's.
                $($r => unsafe { $f::<$r>(x, kc, w, out) },)*
                _ => unreachable!("{rows} rows in a block"),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => rows!(block_avx512, 1 2 3 4 5 6),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => rows!(block_avx2, 1 2 3),
        _ => block_plain(rows, x, kc, w, out),
    }
}

fn block_plain(rows: usize, x: &[f32], kc: usize, w: &[f32], out: &mut [f32]) {
    for (r, o) in out.chunks_exact_mut(STRIP).take(rows).enumerate() {
        for (xk, wk) in x.chunks_exact(rows).take(kc).zip(w.chunks_exact(STRIP)) {
            let xv = xk[r];
            o.iter_mut().zip(wk).for_each(|(o, &wv)| *o += xv * wv);
        }
    }
}

/// [`block_plain`] for `R` rows, `W` columns at a time, the accumulators in registers once compiled for
/// a wide instruction set (4R AVX-512 registers for W = 64, 4R AVX2 ones for W = 32), with fused
/// multiply-adds.
///
/// # Safety
/// `x`, `w` and `out` must hold `kc * R`, `kc * STRIP` and `R * STRIP` floats (checked by [`block`]);
/// it must be called only from a function compiled with FMA (`mul_add` is a slow library call
/// otherwise).
#[inline(always)]
unsafe fn block_fma<const R: usize, const W: usize>(x: &[f32], kc: usize, w: &[f32], out: &mut [f32]) {
    for c0 in (0..STRIP).step_by(W) {
        let mut acc = [[0f32; W]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&out[r * STRIP + c0..r * STRIP + c0 + W]);
        }
        for (xk, wk) in x.chunks_exact(R).zip(w.chunks_exact(STRIP)).take(kc) {
            let wk: &[f32; W] = wk[c0..c0 + W].try_into().expect("W columns");
            for (a, &xv) in acc.iter_mut().zip(xk) {
                for (s, &wv) in a.iter_mut().zip(wk) {
                    *s = xv.mul_add(wv, *s);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * STRIP + c0..r * STRIP + c0 + W].copy_from_slice(a);
        }
    }
}

/// [`block_fma`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F; the slices as for [`block_fma`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn block_avx512<const R: usize>(x: &[f32], kc: usize, w: &[f32], out: &mut [f32]) {
    block_fma::<R, 64>(x, kc, w, out)
}

/// [`block_fma`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the slices as for [`block_fma`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const R: usize>(x: &[f32], kc: usize, w: &[f32], out: &mut [f32]) {
    block_fma::<R, 32>(x, kc, w, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set, row counts of one to several blocks with a tail, outputs of one to three
    /// strips with a partial one, inputs of less and more than a chunk, with and without a bias: the
    /// same product as candle's matmul.
    #[test]
    fn matches_matmul_on_every_instruction_set() -> Result<()> {
        let dev = Device::Cpu;
        for (k, n) in [(48, 33), (96, 64), (7, 5), (300, 130)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            for bias in [None, Some(&b)] {
                let packed = Packed::new(&w, bias)?;
                for m in [1, 2, 3, 5, 12, 13, 20, 31] {
                    let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
                    let want = x.matmul(&w.t()?)?;
                    let want = match bias {
                        Some(b) => want.broadcast_add(b)?,
                        None => want,
                    };
                    for isa in Isa::available() {
                        let got = packed.forward_with(isa, &x)?;
                        let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                        assert!(d < 1e-4, "{isa:?}, {m} x {k} -> {n}, bias {}: off by {d}", bias.is_some());
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_a_mismatched_input() -> Result<()> {
        let packed = Packed::new(&Tensor::zeros((4, 8), DType::F32, &Device::Cpu)?, None)?;
        assert!(packed.forward(&Tensor::zeros((2, 7), DType::F32, &Device::Cpu)?).is_err());
        Ok(())
    }
}

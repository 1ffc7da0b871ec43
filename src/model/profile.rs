//! Where an inference forward pass spends its time, by kind of operation: the per-op breakdown that
//! `cargo bench --bench model` prints beside PyTorch's profiler. Off unless [`enable`]d; then each
//! instrumented operation adds its wall time to its [`Op`]'s total. candle's CPU ops run eagerly (their
//! own threads join before they return), so the time of a call is the time of the work. Per thread: the
//! thread that enables it is the one whose forward is timed.
use std::cell::{Cell, RefCell};
use std::time::Instant;

/// A kind of operation, named as the breakdown prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Matrix products of the linear layers (qkv, proj, MLP, patch-merging reduction).
    Gemm,
    /// The linear layers' bias added after the product.
    Bias,
    /// Window attention: q · kᵀ, the relative-position bias and shift mask, softmax and · v, in one
    /// kernel.
    Attention,
    /// Cyclic shift, padding, window partition and its reverse (copies).
    Partition,
    LayerNorm,
    Gelu,
    /// The 2 x 2 neighbourhood rearrangement before patch merging's norm (a copy).
    Merge,
    /// The two residual additions of every block.
    Residual,
    /// The patch-embedding convolution(s).
    PatchEmbed,
    /// Each stage's output turned to NCHW (a copy).
    Output,
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::Gemm,
        Op::Bias,
        Op::Attention,
        Op::Partition,
        Op::LayerNorm,
        Op::Gelu,
        Op::Merge,
        Op::Residual,
        Op::PatchEmbed,
        Op::Output,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Gemm => "linear gemm",
            Op::Bias => "linear bias add",
            Op::Attention => "window attention",
            Op::Partition => "window partition, roll, pad",
            Op::LayerNorm => "layer norm",
            Op::Gelu => "gelu",
            Op::Merge => "patch merging rearrange",
            Op::Residual => "residual adds",
            Op::PatchEmbed => "patch embedding",
            Op::Output => "stage outputs to NCHW",
        }
    }
}

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static TOTALS: RefCell<[f64; Op::ALL.len()]> = const { RefCell::new([0.0; Op::ALL.len()]) };
}

/// Starts timing this thread's operations, every total at zero.
pub fn enable() {
    TOTALS.with_borrow_mut(|t| *t = [0.0; Op::ALL.len()]);
    ENABLED.set(true);
}

/// Stops timing and returns each operation's seconds since [`enable`].
pub fn disable() -> Vec<(Op, f64)> {
    ENABLED.set(false);
    let totals = TOTALS.with_borrow(|t| *t);
    Op::ALL.iter().zip(totals).map(|(&op, s)| (op, s)).collect()
}

/// Runs `f`, adding its wall time to `op` while timing is on (one thread-local load when it is off).
#[inline]
pub fn time<T>(op: Op, f: impl FnOnce() -> T) -> T {
    if !ENABLED.get() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let seconds = start.elapsed().as_secs_f64();
    TOTALS.with_borrow_mut(|t| t[op as usize] += seconds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_only_while_enabled() {
        let spin = || std::thread::sleep(std::time::Duration::from_millis(5));
        time(Op::Gelu, spin);
        enable();
        time(Op::Gelu, spin);
        let totals = disable();
        time(Op::Gelu, spin);
        let gelu = totals.iter().find(|(op, _)| *op == Op::Gelu).unwrap().1;
        assert!((0.004..0.5).contains(&gelu), "gelu timed {gelu} s for one 5 ms call");
        assert!(totals.iter().filter(|(op, _)| *op != Op::Gelu).all(|(_, s)| *s == 0.0));
    }
}

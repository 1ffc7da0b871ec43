//! The few-rows product (`model::few_rows`) beside candle's matmul (gemm) on one shape, in GFLOP/s:
//! `cargo run --release --example few_rows_probe -- ROWS IN OUT REPEATS` (BERT-base's shapes at 20
//! tokens: `20 768 3072 300`, `20 3072 768 300`, `20 768 768 1000`). Threads: `RAYON_NUM_THREADS`.
use candle_core::{Device, Tensor};
use photoseg::model::{few_rows::Packed, isa::Isa};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let [m, k, n, reps] = args[..] else {
        eprintln!("usage: few_rows_probe ROWS IN OUT REPEATS");
        std::process::exit(2);
    };
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
    let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
    let gflops = |seconds: f64| 2.0 * (m * k * n) as f64 / seconds / 1e9;
    let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> candle_core::Result<f64> {
        f()?;
        let start = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        Ok(start.elapsed().as_secs_f64() / reps as f64)
    };
    let packed = Packed::new(&w, None)?;
    for isa in Isa::available() {
        let t = time(&|| packed.forward_with(isa, &x))?;
        println!("few rows, {isa:?}: {m} x {k} x {n} in {:.1} us = {:.1} GFLOP/s", t * 1e6, gflops(t));
    }
    // gemm on the layout `ops::Linear::Infer` keeps: the weight transposed and contiguous.
    let wt = w.t()?.contiguous()?;
    let t = time(&|| x.matmul(&wt))?;
    println!("gemm: {m} x {k} x {n} in {:.1} us = {:.1} GFLOP/s", t * 1e6, gflops(t));
    Ok(())
}

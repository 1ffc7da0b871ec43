//! Times the primitive ops of a Swin-T stage-0 block at 416 px (window 13): `cargo run --example op_profile`.
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

fn t<F: FnMut() -> Tensor>(name: &str, mut f: F) {
    f();
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    println!("{name:40} {:8.2} ms", v[3]);
}

fn main() {
    let d = Device::Cpu;
    let x2 = Tensor::randn(0f32, 1.0, (10816, 96), &d).unwrap();
    let x3 = x2.reshape((64, 169, 96)).unwrap();
    let w = Tensor::randn(0f32, 0.1, (384, 96), &d).unwrap();
    let b = Tensor::randn(0f32, 0.1, 384, &d).unwrap();
    let lin = candle_nn::Linear::new(w.clone(), Some(b));
    t("linear 10816x96->384 (2d)", || lin.forward(&x2).unwrap());
    t("linear 64x169x96->384 (3d)", || lin.forward(&x3).unwrap());
    t("matmul 10816x96 @ 96x384 (contig rhs)", || x2.matmul(&w.t().unwrap().contiguous().unwrap()).unwrap());
    let q = Tensor::randn(0f32, 1.0, (192, 169, 32), &d).unwrap();
    let k = Tensor::randn(0f32, 1.0, (192, 169, 32), &d).unwrap();
    t("q @ k^T 192x169x32x169", || q.matmul(&k.t().unwrap()).unwrap());
    let a = Tensor::randn(0f32, 1.0, (64, 3, 169, 169), &d).unwrap();
    let v = Tensor::randn(0f32, 1.0, (64, 3, 169, 32), &d).unwrap();
    t("attn @ v", || a.matmul(&v).unwrap());
    t("softmax_last_dim 64x3x169x169", || candle_nn::ops::softmax_last_dim(&a).unwrap());
    let bias = Tensor::randn(0f32, 1.0, (1, 3, 169, 169), &d).unwrap();
    t("broadcast_add bias", || a.broadcast_add(&bias).unwrap());
    let h = Tensor::randn(0f32, 1.0, (10816, 384), &d).unwrap();
    t("gelu_erf 10816x384", || h.gelu_erf().unwrap());
    t("gelu (tanh) 10816x384", || h.gelu().unwrap());
    let x4 = x2.reshape((1, 104, 104, 96)).unwrap();
    t("roll dim1", || x4.roll(-6, 1).unwrap());
    t("partition permute+contig", || {
        x4.reshape((1, 8, 13, 8, 13, 96)).unwrap().permute((0, 1, 3, 2, 4, 5)).unwrap().contiguous().unwrap()
    });
    t("add residual", || (&x2 + &x2).unwrap());
    let g = Tensor::ones(96, candle_core::DType::F32, &d).unwrap();
    t("layer_norm 10816x96", || candle_nn::ops::layer_norm(&x2, &g, &g, 1e-5).unwrap());
}

//! Times one Swin forward at 416 x 416 (for `perf record`): `cargo run --example swin_profile -- [t|b] [iters]`.
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::swin;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("t");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let base = if which == "b" { swin::Config::swin_b() } else { swin::Config::swin_t() };
    let cfg = swin::Config { window_size: 13, img_size: Some(416), ..base };
    let vm = VarMap::new();
    let model = swin::Swin::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    // Plain tensors, as at inference (a VarMap's variables would take the training paths).
    let tensors = vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    let model2 = swin::Swin::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap();
    drop(model);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 416, 416), &Device::Cpu).unwrap();
    model2.forward_stages(&x).unwrap();
    for _ in 0..iters {
        let t = std::time::Instant::now();
        model2.forward_stages(&x).unwrap();
        println!("swin-{which} 416: {:.3} s", t.elapsed().as_secs_f64());
    }
}

//! `cargo bench --bench model`: Swin-T / Swin-B forward at 416 x 416 and BERT-base on a 20-token
//! sentence, on this machine's CPU, batch 1, fp32, random weights. When a Python with torch, timm and
//! transformers is found (`PHOTOSEG_TORCH_PYTHON`, else `python3`), the PyTorch reference
//! (`scripts/reference/grser_ref.py cpu` for Swin, `benches/bert_ref.py` for BERT) runs in the same
//! process tree right after, and the ratio photoseg / PyTorch time is printed (< 1 means photoseg is faster).
//!
//! Swin geometry matches the reference script: window 13 at 416 px (no padding); Swin-B with the paper's
//! window 12 is also timed, for the cost of padding.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::{swin, text};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<F: FnMut()>(warmup: usize, iters: usize, mut f: F) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Random weights as plain tensors: a VarMap's variables would take the (slower) training paths.
fn inference_weights(init: impl FnOnce(VarBuilder)) -> VarBuilder<'static> {
    let vm = VarMap::new();
    init(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu));
    let tensors = vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

fn swin_seconds(cfg: swin::Config, iters: usize) -> f64 {
    let dev = Device::Cpu;
    let cfg = swin::Config { img_size: Some(416), ..cfg };
    let vb = inference_weights(|vb| {
        swin::Swin::new(&cfg, vb).unwrap();
    });
    let model = swin::Swin::new(&cfg, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 416, 416), &dev).unwrap();
    time(1, iters, || {
        model.forward_stages(&x).unwrap();
    })
}

fn bert_seconds(iters: usize) -> f64 {
    let dev = Device::Cpu;
    let cfg = text::Config::bert_base_uncased();
    let vb = inference_weights(|vb| {
        text::Bert::new(&cfg, vb).unwrap();
    });
    let model = text::Bert::new(&cfg, vb).unwrap();
    let ids = Tensor::arange(1000u32, 1020, &dev).unwrap().unsqueeze(0).unwrap();
    let types = ids.zeros_like().unwrap();
    let mask = ids.ones_like().unwrap();
    time(2, iters, || {
        model.forward(&ids, &types, &mask).unwrap();
    })
}

/// Runs a Python script and parses its last line of JSON.
fn python_json(python: &str, script: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(python).arg(script).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "reference {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("photoseg model benchmark: CPU, {threads} threads, fp32, batch 1, random weights");
    let swin_t_w13 = swin::Config { window_size: 13, ..swin::Config::swin_t() };
    let swin_b_w13 = swin::Config { window_size: 13, ..swin::Config::swin_b() };
    let t_t = swin_seconds(swin_t_w13, 5);
    println!("swin-t 416 (window 13)  photoseg {t_t:.3} s/image");
    let t_b = swin_seconds(swin_b_w13, 3);
    println!("swin-b 416 (window 13)  photoseg {t_b:.3} s/image");
    let t_b12 = swin_seconds(swin::Config::swin_b(), 3);
    println!("swin-b 416 (window 12, padded)  photoseg {t_b12:.3} s/image");
    let t_bert = bert_seconds(10);
    println!("bert-base 20 tokens     photoseg {t_bert:.4} s/sentence");

    let python = std::env::var("PHOTOSEG_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch, timm, transformers"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_torch {
        println!("pytorch reference: skipped ({python} lacks torch/timm/transformers; set PHOTOSEG_TORCH_PYTHON)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let anchor = root.join("scripts/reference/grser_ref.py");
    if let Some(r) = python_json(&python, &anchor, &["cpu"]) {
        let ref_t = 1.0 / r["index_swinT_416_fp32_b1_img_s"].as_f64().unwrap_or(f64::NAN);
        let ref_b = 1.0 / r["index_swinB_416_fp32_b1_img_s"].as_f64().unwrap_or(f64::NAN);
        println!("swin-t 416  pytorch {ref_t:.3} s/image   photoseg/pytorch time ratio {:.2}", t_t / ref_t);
        println!("swin-b 416  pytorch {ref_b:.3} s/image   photoseg/pytorch time ratio {:.2}", t_b / ref_b);
    } else {
        println!("pytorch swin reference: {} not runnable", anchor.display());
    }
    if let Some(r) = python_json(&python, &root.join("benches/bert_ref.py"), &[]) {
        let ref_bert = r["bert_base_20_tokens_s"].as_f64().unwrap_or(f64::NAN);
        println!("bert-base   pytorch {ref_bert:.4} s/sentence photoseg/pytorch time ratio {:.2}", t_bert / ref_bert);
    }
}

//! `cargo bench --bench model`: Swin-T / Swin-B forward at 416 x 416 and BERT-base on a 20-token
//! sentence, on this machine's CPU, batch 1, fp32, random weights. When a Python with torch, timm and
//! transformers is found (`PHOTOSEG_TORCH_PYTHON`, else `python3`), the PyTorch reference
//! (`scripts/reference/grser_ref.py cpu` for Swin, `benches/bert_ref.py` for BERT) runs right after
//! photoseg in each of `PHOTOSEG_BENCH_ROUNDS` rounds (default 3), and the ratio photoseg / PyTorch time is
//! printed per round and as the median over rounds (< 1 means photoseg is faster).
//!
//! Swin geometry matches the reference script: window 13 at 416 px (no padding); Swin-B with the paper's
//! window 12 is also timed, for the cost of padding. Then Swin-B's forward split by kind of operation
//! ([`photoseg::model::profile`]) beside PyTorch's profiler on timm's (`benches/swin_profile.py`).
//! Threads: `RAYON_NUM_THREADS` when set, else every core, on both sides.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::profile::{self, Op};
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

/// Seconds per image of each kind of operation in a Swin forward at 416 px, and the wall time of those
/// forwards ([`profile`]).
fn swin_breakdown(cfg: swin::Config, iters: usize) -> (Vec<(Op, f64)>, f64) {
    let cfg = swin::Config { img_size: Some(416), ..cfg };
    let vb = inference_weights(|vb| {
        swin::Swin::new(&cfg, vb).unwrap();
    });
    let model = swin::Swin::new(&cfg, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 416, 416), &Device::Cpu).unwrap();
    model.forward_stages(&x).unwrap();
    profile::enable();
    let t = Instant::now();
    for _ in 0..iters {
        model.forward_stages(&x).unwrap();
    }
    let wall = t.elapsed().as_secs_f64() / iters as f64;
    let ops = profile::disable().into_iter().map(|(op, s)| (op, s / iters as f64)).collect();
    (ops, wall)
}

/// The breakdown's rows: a name, photoseg's operations in it, and the category of
/// `benches/swin_profile.py` (PyTorch's aten ops) it is compared with.
const BREAKDOWN: [(&str, &[Op], &str); 7] = [
    ("linear layers (gemm, bias)", &[Op::Gemm, Op::Bias], "linear"),
    ("attention (q.k, bias, softmax, .v)", &[Op::Attention], "attention"),
    ("copies (windows, roll, pad, merge, NCHW)", &[Op::Partition, Op::Merge, Op::Output], "copies"),
    ("layer norm", &[Op::LayerNorm], "layer_norm"),
    ("gelu", &[Op::Gelu], "gelu"),
    ("residual adds", &[Op::Residual], "residual"),
    ("patch embedding", &[Op::PatchEmbed], "patch_embed"),
];

/// Prints photoseg's per-op breakdown of Swin-B 416 beside PyTorch's (`reference`: the categories'
/// seconds per image, `None` without torch).
fn print_breakdown(ops: &[(Op, f64)], wall: f64, reference: Option<&serde_json::Value>) {
    let get = |op: Op| ops.iter().find(|(o, _)| *o == op).map_or(0.0, |(_, s)| *s);
    let ref_of = |cat: &str| reference.and_then(|r| r[cat].as_f64());
    println!("swin-b 416 (window 13) per-op breakdown, ms per image   photoseg | pytorch | ratio");
    let mut timed = 0.0;
    let mut ref_timed = 0.0;
    for (name, parts, cat) in BREAKDOWN {
        let ours: f64 = parts.iter().map(|&op| get(op)).sum();
        timed += ours;
        match ref_of(cat) {
            Some(r) => {
                ref_timed += r;
                println!("  {name:<50} {:>8.1} | {:>7.1} | {:.2}", ours * 1e3, r * 1e3, ours / r)
            }
            None => println!("  {name:<50} {:>8.1} |", ours * 1e3),
        }
        if parts.len() > 1 {
            for &op in parts {
                println!("    {:<48} {:>8.1}", op.name(), get(op) * 1e3);
            }
        }
    }
    match (ref_of("other"), ref_of("wall_profiled")) {
        (Some(other), Some(ref_wall)) => {
            println!("  {:<50} {:>8.1} | {:>7.1} |", "other (untimed)", (wall - timed) * 1e3, other * 1e3);
            println!(
                "  {:<50} {:>8.1} | {:>7.1} | {:.2}",
                "wall, profiled",
                wall * 1e3,
                ref_wall * 1e3,
                wall / ref_wall
            );
            let _ = ref_timed;
        }
        _ => println!("  {:<50} {:>8.1}", "other (untimed)", (wall - timed) * 1e3),
    }
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
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .env("PHOTOSEG_BENCH_THREADS", threads().to_string())
        .output()
        .ok()?;
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

/// The threads both sides run with: `RAYON_NUM_THREADS` (what candle's kernels use) when set, else
/// every core. The PyTorch references get the same number (`PHOTOSEG_BENCH_THREADS`).
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// One round: photoseg's seconds and, when PyTorch is there, the reference's, measured back to back.
struct Round {
    swin_t: (f64, Option<f64>),
    swin_b: (f64, Option<f64>),
    bert: (f64, Option<f64>),
}

fn main() {
    let threads = threads();
    println!("photoseg model benchmark: CPU, {threads} threads, fp32, batch 1, random weights");
    let swin_t_w13 = swin::Config { window_size: 13, ..swin::Config::swin_t() };
    let swin_b_w13 = swin::Config { window_size: 13, ..swin::Config::swin_b() };
    let python = std::env::var("PHOTOSEG_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch, timm, transformers"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_torch {
        println!("pytorch reference: skipped ({python} lacks torch/timm/transformers; set PHOTOSEG_TORCH_PYTHON)");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This machine's speed drifts by up to 2x within minutes: each round times photoseg and PyTorch back
    // to back, and the ratios reported are the medians of the rounds' ratios.
    let rounds: usize = std::env::var("PHOTOSEG_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let mut all = Vec::new();
    for round in 1..=rounds {
        let t_t = swin_seconds(swin_t_w13.clone(), 5);
        let t_b = swin_seconds(swin_b_w13.clone(), 3);
        let t_bert = bert_seconds(10);
        let (mut ref_t, mut ref_b, mut ref_bert) = (None, None, None);
        if has_torch {
            if let Some(r) = python_json(&python, &root.join("scripts/reference/grser_ref.py"), &["cpu"]) {
                ref_t = r["index_swinT_416_fp32_b1_img_s"].as_f64().map(|v| 1.0 / v);
                ref_b = r["index_swinB_416_fp32_b1_img_s"].as_f64().map(|v| 1.0 / v);
            }
            if let Some(r) = python_json(&python, &root.join("benches/bert_ref.py"), &[]) {
                ref_bert = r["bert_base_20_tokens_s"].as_f64();
            }
        }
        let r = Round { swin_t: (t_t, ref_t), swin_b: (t_b, ref_b), bert: (t_bert, ref_bert) };
        let show = |(ours, theirs): (f64, Option<f64>)| match theirs {
            Some(t) => format!("{ours:.4} s vs pytorch {t:.4} s = {:.2}", ours / t),
            None => format!("{ours:.4} s"),
        };
        println!(
            "round {round}: swin-t 416 (window 13) {}; swin-b 416 (window 13) {}; bert-base 20 tokens {}",
            show(r.swin_t),
            show(r.swin_b),
            show(r.bert)
        );
        all.push(r);
    }
    let summary = |name: &str, pick: &dyn Fn(&Round) -> (f64, Option<f64>)| {
        let ours = median(all.iter().map(|r| pick(r).0).collect());
        let ratios: Vec<f64> = all.iter().filter_map(|r| pick(r).1.map(|t| pick(r).0 / t)).collect();
        if ratios.is_empty() {
            println!("{name:<24} photoseg {ours:.4} s (median of {rounds} rounds)");
        } else {
            let theirs = median(all.iter().filter_map(|r| pick(r).1).collect());
            println!(
                "{name:<24} photoseg {ours:.4} s, pytorch {theirs:.4} s; photoseg/pytorch time ratio {:.2} (median of {} rounds' ratios)",
                median(ratios.clone()),
                ratios.len()
            );
        }
    };
    summary("swin-t 416 (window 13)", &|r| r.swin_t);
    summary("swin-b 416 (window 13)", &|r| r.swin_b);
    summary("bert-base 20 tokens", &|r| r.bert);
    let t_b12 = swin_seconds(swin::Config::swin_b(), 3);
    println!("swin-b 416 (window 12, padded)  photoseg {t_b12:.3} s/image");
    let (ops, wall) = swin_breakdown(swin_b_w13, 2);
    let reference = if has_torch { python_json(&python, &root.join("benches/swin_profile.py"), &[]) } else { None };
    print_breakdown(&ops, wall, reference.as_ref());
}

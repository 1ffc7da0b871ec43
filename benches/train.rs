//! `cargo bench --bench train`: training throughput of the built-in model's shape on CPU, photoseg
//! beside a plain PyTorch reference in the same run, with the same thread count (one, as the
//! reference's scripts set it).
//!
//! photoseg: steps of the features stage (a Swin forward and backward over 16 photos, the dense
//! attribute decoder, AdamW), first with glibc's default allocation parameters and then as `photoseg
//! train` sets them ([`photoseg::train::allocator`]), and of the referent head stage (Swin and the
//! trunk frozen, their maps kept, 4 groups of 8 photos), on a generated synthetic set, timed after two
//! warm-up steps: the built-in model's shape, its features stage without the neck's attribute heads
//! (as the reference, which has none).
//!
//! References, through `PHOTOSEG_TORCH_PYTHON` (a Python with torch, numpy, Pillow, timm and safetensors):
//! - the exact twin, `scripts/reference/grad_twin.py speed`: the same network in PyTorch (timm's Swin
//!   with photoseg's stem, the dense trunk, the attribute classifier and losses; 1.74 M parameters, the
//!   gradient-parity twin at full width), 16 photos a step, random photos made before its clock starts;
//! - the learning reference, `scripts/reference/twin/train_attr.py swin` (a Swin of similar layout, 431 k
//!   parameters, dense attribute supervision) for one minute on the same photos; its photos per second
//!   come from its own log.
//!
//! Without torch only photoseg's figures are printed.
//!
//! The ratios printed are photoseg's photos/s over each reference's (>= 1 means photoseg trains as fast).
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use photoseg::model::grser::{Config, ReferentConfig};
use photoseg::synth::{self, SynthConfig, SynthDataset};
use photoseg::train::data::TrainSet;
use photoseg::train::optim::AdamWConfig;
use photoseg::train::{attributes, vocab, Stage, TrainConfig, Trainer};

const STEPS: usize = 10;

fn photos_per_second(set: &TrainSet, stage: Stage, groups: usize) -> f64 {
    let tok = vocab::wordpiece_tokenizer(&synth::vocabulary()).unwrap();
    let mut cfg = Config::builtin(tok.get_vocab_size(true));
    // The built-in model's shape (recipes/builtin.toml).
    cfg.swin.conv_stem = Some(32);
    cfg.swin.stem_batch_norm = true;
    cfg.head.center_v = true;
    cfg.head.position_grid = Some(8);
    cfg.referent = Some(ReferentConfig::default());
    let tc = TrainConfig {
        stage,
        steps: STEPS + 2,
        groups_per_step: groups,
        group_size: 8,
        lambda_mirror: 0.0,
        optim: AdamWConfig { lr: 2e-3, weight_decay: 1e-4, ..AdamWConfig::default() },
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&cfg, tok, &tc, None, &Device::Cpu).unwrap();
    // Warm-up (the head stage fills its cache of Swin outputs here).
    for _ in 0..2 {
        trainer.train_step(set).unwrap();
    }
    let start = Instant::now();
    let photos: usize = (0..STEPS).map(|_| trainer.train_step(set).unwrap().images).sum();
    photos as f64 / start.elapsed().as_secs_f64()
}

/// The Python the references run with: `PHOTOSEG_TORCH_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("PHOTOSEG_TORCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The exact twin's photos per second (`grad_twin.py speed`), if torch and timm are available.
fn exact_twin() -> Option<f64> {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference/grad_twin.py");
    let out = Command::new(&python).arg(&script).arg("speed").env("PHOTOSEG_BENCH_THREADS", "1").output().ok()?;
    if !out.status.success() {
        eprintln!("exact twin: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed"));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let record: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    record["features_photos_per_s"].as_f64()
}

/// The reference's photos per second over one minute of training, if torch is available.
fn reference(data: &Path, work: &Path) -> Option<f64> {
    let python = python();
    let twin = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference/twin");
    if !twin.join("train_attr.py").exists() {
        eprintln!("reference: {} not found", twin.display());
        return None;
    }
    let ok = Command::new(&python).args(["-c", "import torch, numpy, PIL"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("reference: {python} has no torch, numpy or Pillow (set PHOTOSEG_TORCH_PYTHON)");
        return None;
    }
    let run = |args: &[&str]| {
        Command::new(&python).args(args).current_dir(&twin).env("TWIN_DIR", work).output().expect("python runs")
    };
    let prep = run(&["prep.py", data.to_str().unwrap()]);
    assert!(prep.status.success(), "prep.py failed: {}", String::from_utf8_lossy(&prep.stderr));
    let out = run(&["train_attr.py", "swin", "1", "bench", "--eval-every", "100"]);
    assert!(out.status.success(), "train_attr.py failed: {}", String::from_utf8_lossy(&out.stderr));
    // Its last line is the final record, `{"seen": S, "train_min": M, "final": true, ...}`: photos
    // over minutes of training to 0.01 (the "step" lines every 50 steps round minutes to 0.1, which
    // is 7 % of a one-minute run).
    let text = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(text.lines().rfind(|l| l.contains("\"final\""))?).ok()?;
    Some(last["seen"].as_f64()? / (last["train_min"].as_f64()? * 60.0))
}

fn main() {
    // One thread for both sides, as the reference sets torch's.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("synth");
    // The classic square look at 128 px: what the reference's data preparation reads.
    let cfg = SynthConfig {
        seed: 3,
        albums_train: 12,
        albums_val: 2,
        albums_heldout: 2,
        look: synth::Look::Classic,
        square: true,
        ..SynthConfig::default()
    };
    synth::generate(&cfg, &data, |_, _| {}).unwrap();
    let ds = SynthDataset::open(&data).unwrap();
    let groups = photoseg::data::format::synth_groups(&data, "train").unwrap();
    let mut set = TrainSet::new(groups, 128).unwrap();
    set.attach_attributes(attributes::synth_labels(&ds, "train", 32).unwrap());
    let plain = photos_per_second(&set, Stage::Features, 2);
    photoseg::train::allocator::keep_freed_memory();
    let features = photos_per_second(&set, Stage::Features, 2);
    let head = photos_per_second(&set, Stage::Head, 4);
    println!(
        "photoseg, built-in shape, 1 thread: features stage {features:.1} photos/s ({plain:.1} with glibc's default \
         allocation parameters), referent head stage {head:.1} photos/s"
    );
    match exact_twin() {
        Some(r) => println!(
            "exact twin (the same network in PyTorch, 1.74 M parameters, 1 thread): {r:.1} photos/s; photoseg / exact twin: features stage {:.2}",
            features / r
        ),
        None => println!("exact twin not run"),
    }
    match reference(&data, &tmp.path().join("twin")) {
        Some(r) => println!(
            "reference (PyTorch twin, Swin 431 k, dense attributes, 1 thread): {r:.1} photos/s; photoseg / reference: features stage {:.2}",
            features / r
        ),
        None => println!("reference not run"),
    }
}

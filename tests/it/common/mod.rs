//! Helpers shared by the integration tests: fixture loading and tensor comparison.
pub mod checkpoints;
pub mod desktop;
pub mod hub;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// All tensors of a safetensors fixture and its metadata's `config` JSON.
pub fn load_fixture(name: &str) -> (HashMap<String, Tensor>, serde_json::Value) {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let config = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .map(|s| serde_json::from_str(s).expect("config json"))
        .unwrap_or(serde_json::Value::Null);
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("fixture tensors");
    (tensors, config)
}

/// Tensors whose names start with `prefix`, with the prefix removed.
pub fn with_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The tolerance the parity tests hold the network to (fp32, CPU).
pub const PARITY_TOL: f32 = 1e-4;

pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max abs diff {d:.3e}");
    assert!(d <= PARITY_TOL, "{what}: max abs diff {d} > {PARITY_TOL}");
}

/// Makes `dir` and everything in it unwritable until dropped. Root ignores permission bits, so as root
/// the immutable attribute (`chattr +i`) is used, which binds root too.
pub struct ReadOnly(PathBuf);

impl ReadOnly {
    pub fn new(dir: &std::path::Path) -> Self {
        set_read_only(dir, true);
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        set_read_only(&self.0, false);
    }
}

fn set_read_only(dir: &std::path::Path, on: bool) {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let status = if root {
        std::process::Command::new("chattr").arg("-R").arg(if on { "+i" } else { "-i" }).arg(dir).status()
    } else {
        std::process::Command::new("chmod").arg("-R").arg(if on { "a-w" } else { "u+w" }).arg(dir).status()
    };
    assert!(status.is_ok_and(|s| s.success()), "cannot make {} read-only={on}", dir.display());
}

/// Redraws every randomly initialised weight of `varmap` from a generator seeded with `seed`, so a tiny
/// random model is the same in every run (candle cannot seed its CPU generator, and with fresh weights a
/// bound on a random model's behaviour fails now and then): U(+-1/sqrt(fan_in)) for matrices and kernels,
/// U(+-0.1) for vectors; constant ones (norms, zero biases) stay, except `head.v_pos` (U(+-3.5): it starts
/// at zero, which would test nothing).
pub fn seed_weights(varmap: &candle_nn::VarMap, seed: u64) {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let values: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let bound = match name.as_str() {
            "head.v_pos" => 3.5,
            _ if values.iter().all(|v| *v == values[0]) => continue,
            _ if var.rank() >= 2 => 1.0 / (var.dims()[1..].iter().product::<usize>() as f32).sqrt(),
            _ => 0.1,
        };
        let seeded: Vec<f32> = values.iter().map(|_| rng.random_range(-bound..bound)).collect();
        var.set(&Tensor::from_vec(seeded, var.shape(), &Device::Cpu).unwrap()).unwrap();
    }
}

/// Saves a tiny model (60-token fixture vocabulary) with weights drawn from `seed` into `dir`, after
/// `edit` changes its config (a margin, a codec); returns the directory as a string for `--model`.
pub fn save_tiny_model(
    dir: &std::path::Path,
    seed: u64,
    edit: impl FnOnce(&mut photoseg::model::grser::Config),
) -> String {
    use candle_nn::{VarBuilder, VarMap};
    use photoseg::model::grser::{Config, Grser};
    let varmap = VarMap::new();
    let tok = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    let mut cfg = Config::tiny(60);
    edit(&mut cfg);
    Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu)).unwrap();
    seed_weights(&varmap, seed);
    photoseg::model::checkpoint::save_model_dir(&varmap, &cfg, &tok, dir).unwrap();
    dir.to_str().unwrap().to_string()
}

/// A seed for `name` (FNV-1a), the same in every run.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A tensor of standard normal values drawn from `seed` (Box-Muller): test inputs that are the same in
/// every run.
pub fn seeded_normal(shape: &[usize], seed: u64) -> Tensor {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// The lines `reader` (a child's stdout or stderr) yields, on a channel, read by a thread so the pipe
/// never fills; the channel closes at end of input.
pub fn lines_on_channel(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

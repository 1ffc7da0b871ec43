//! Helpers shared by the integration tests: fixture loading and tensor comparison.
#![allow(dead_code)]
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

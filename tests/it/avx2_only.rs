//! The same binary on a CPU without AVX-512. photoseg's kernels and gemm's choose their code when they
//! run (AVX-512, else AVX2 + FMA, else plain), so a build made here must also run, and answer the same,
//! on an AVX2-only laptop. QEMU's user-mode emulator plays that CPU (`-cpu Haswell-v4`: AVX2 and FMA,
//! no AVX-512): `photoseg eval` with the built-in model (Swin, window attention, GELU, the text
//! encoder's few-row products, the head) runs natively and emulated on the same photos, and every
//! photo's decision must agree.
use std::path::Path;
use std::process::Command;

use photoseg::synth::{self, SynthConfig};

use crate::common::desktop::have_tools;

const QEMU: &str = "qemu-x86_64";

#[test]
fn an_avx2_only_cpu_gets_the_same_answers() {
    if !cfg!(target_arch = "x86_64") || !have_tools("an_avx2_only_cpu_gets_the_same_answers", &[QEMU], &[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // One small album: the emulator runs this about 300 times slower than the CPU it emulates on.
    let cfg = SynthConfig {
        seed: 5,
        albums_train: 1,
        albums_val: 1,
        albums_heldout: 1,
        photos_min: 4,
        photos_max: 4,
        expressions_max: 1,
        ..SynthConfig::default()
    };
    synth::generate(&cfg, &data, |_, _| {}).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/builtin");
    let eval = |runner: &[&str], csv: &Path| {
        let mut argv: Vec<String> = runner.iter().map(|s| s.to_string()).collect();
        argv.push(env!("CARGO_BIN_EXE_photoseg").into());
        for a in ["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--split", "val"] {
            argv.push(a.into());
        }
        argv.extend(["--decisions".into(), csv.display().to_string()]);
        let out = Command::new(&argv[0]).args(&argv[1..]).env("RAYON_NUM_THREADS", "2").output().unwrap();
        assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(csv).unwrap()
    };
    let native = eval(&[], &tmp.path().join("native.csv"));
    let emulated = eval(&[QEMU, "-cpu", "Haswell-v4"], &tmp.path().join("avx2.csv"));
    let rows = |csv: &str| -> Vec<Vec<String>> {
        csv.lines().skip(1).map(|l| l.rsplitn(4, ',').map(str::to_string).collect()).collect()
    };
    let (a, b) = (rows(&native), rows(&emulated));
    assert!(a.len() >= 4, "too few photos: {native}");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        // Columns, from the right: iou, score, accepted, "photo,expression,holds".
        assert_eq!((&x[2], &x[3]), (&y[2], &y[3]), "the decision differs:\n{x:?}\n{y:?}");
        let close = |i: usize, tol: f64| match (x[i].parse::<f64>(), y[i].parse::<f64>()) {
            (Ok(p), Ok(q)) => (p - q).abs() <= tol * (1.0 + p.abs()),
            _ => x[i] == y[i],
        };
        assert!(close(1, 1e-3) && close(0, 1e-2), "scores or IoUs differ:\n{x:?}\n{y:?}");
    }
}

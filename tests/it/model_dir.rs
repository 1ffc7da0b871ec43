//! A GRSer model directory round-trips, and broken ones fail with an error naming what is wrong.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::checkpoint::{load_model_dir, save_model_dir, WEIGHTS_FILE};
use photoseg::model::grser::{Config, Grser, Pairs};

use crate::common::{fixture, max_abs_diff};

fn saved_random_model(dir: &std::path::Path) -> Grser {
    let varmap = VarMap::new();
    let tok = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    let cfg = Config::tiny(60);
    let model = Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    crate::common::seed_weights(&varmap, 7);
    save_model_dir(&varmap, &cfg, &tok, dir).unwrap();
    model
}

#[test]
fn saved_model_loads_and_answers_identically() {
    let dir = tempfile::tempdir().unwrap();
    let original = saved_random_model(dir.path());
    let loaded = load_model_dir(dir.path(), &Device::Cpu).unwrap();
    let images = crate::common::seeded_normal(&[3, 3, 64, 64], 1);
    let (fa, fb) = (original.featurize(&images).unwrap(), loaded.featurize(&images).unwrap());
    let d = max_abs_diff(&fa.v, &fb.v);
    // The original runs on variables (composite layer norm), the loaded one on tensors (fused kernel).
    assert!(d < 1e-4, "features differ by {d}");
    let a = original.answer(&fa, "the red circle", Pairs::TopK).unwrap();
    let b = loaded.answer(&fb, "the red circle", Pairs::TopK).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.positive, y.positive);
        assert!((x.d_pos - y.d_pos).abs() < 1e-5);
    }
}

#[test]
fn missing_directory_and_files_are_named() {
    let err = load_model_dir(std::path::Path::new("/nonexistent/model"), &Device::Cpu).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/model"), "{err:#}");
    let dir = tempfile::tempdir().unwrap();
    saved_random_model(dir.path());
    std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
    let err = load_model_dir(dir.path(), &Device::Cpu).unwrap_err();
    assert!(format!("{err:#}").contains(WEIGHTS_FILE), "{err:#}");
}

#[test]
fn weights_of_another_shape_are_named() {
    let dir = tempfile::tempdir().unwrap();
    saved_random_model(dir.path());
    // Claim a wider C_v than the weights have.
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["head"]["c_v"] = 48.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = format!("{:#}", load_model_dir(dir.path(), &Device::Cpu).unwrap_err());
    assert!(err.contains("neck.v.weight") && err.contains("shape"), "{err}");
}

//! Swin parity against timm 1.0.31 (fixtures from tests/fixtures/make_parity.py, random weights).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use photoseg::model::checkpoint::load_swin_tensors;
use photoseg::model::swin::{Config, Swin};

use crate::common::*;

fn config_from(meta: &serde_json::Value) -> Config {
    // timm's img_size is a pair; ours only sizes tables created from scratch, and these are loaded.
    let mut meta = meta.clone();
    meta.as_object_mut().unwrap().remove("img_size");
    let mut cfg: Config = serde_json::from_value(meta).expect("swin config in fixture metadata");
    cfg.always_partition = false;
    cfg
}

#[test]
fn swin_matches_timm_with_padding_shifts_and_shrunk_windows() {
    let (t, meta) = load_fixture("swin_tiny.safetensors");
    let cfg = config_from(&meta);
    let vb = VarBuilder::from_tensors(with_prefix(&t, "model."), DType::F32, &Device::Cpu);
    let swin = Swin::new(&cfg, vb).expect("build swin");
    let input = &t["input"];
    assert_close("patch_embed", &swin.patch_embed(input).unwrap(), &t["patch_embed"]);
    let stages = swin.forward_stages(input).unwrap();
    for (i, s) in stages.iter().enumerate() {
        assert_close(&format!("stage{i}"), s, &t[&format!("stage{i}")]);
    }
}

#[test]
fn swin_loads_microsoft_pth_layout() {
    let (t, meta) = load_fixture("swin_tiny.safetensors");
    let cfg = config_from(&meta);
    let tensors = load_swin_tensors(&fixture("swin_tiny_ms.pth"), &Device::Cpu).expect("read .pth");
    assert!(tensors.contains_key("layers.1.downsample.reduction.weight"));
    assert!(!tensors.contains_key("layers.0.downsample.reduction.weight"));
    let swin = Swin::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).expect("build swin");
    let stages = swin.forward_stages(&t["input"]).unwrap();
    for (i, s) in stages.iter().enumerate() {
        assert_close(&format!("ms stage{i}"), s, &t[&format!("stage{i}")]);
    }
}

#[test]
fn swin_resizes_relative_position_tables_like_timm() {
    let (t, meta) = load_fixture("swin_window.safetensors");
    let mut cfg = config_from(&meta);
    cfg.window_size = meta["target_window_size"].as_u64().unwrap() as usize;
    let vb = VarBuilder::from_tensors(with_prefix(&t, "model."), DType::F32, &Device::Cpu);
    let swin = Swin::new(&cfg, vb).expect("build swin from window-7 weights with window 8");
    // The resize alone first: stage-0 block 0 goes from 13x13 to 15x15.
    let src = &t["model.layers.0.blocks.0.attn.relative_position_bias_table"];
    let resized = photoseg::model::relpos::resize_table(src, (7, 7), (8, 8)).unwrap();
    assert_close("resized table", &resized, &t["resized.layers.0.blocks.0.attn.relative_position_bias_table"]);
    let stages = swin.forward_stages(&t["input"]).unwrap();
    for (i, s) in stages.iter().enumerate() {
        assert_close(&format!("window-8 stage{i}"), s, &t[&format!("stage{i}")]);
    }
}

#[test]
fn missing_tensor_is_named_in_the_error() {
    let (t, meta) = load_fixture("swin_tiny.safetensors");
    let cfg = config_from(&meta);
    let mut w = with_prefix(&t, "model.");
    w.remove("layers.2.blocks.1.attn.qkv.weight");
    let err = Swin::new(&cfg, VarBuilder::from_tensors(w, DType::F32, &Device::Cpu)).unwrap_err();
    assert!(format!("{err}").contains("layers.2.blocks.1.attn.qkv.weight"), "error does not name the tensor: {err}");
}

#[test]
fn misshaped_tensor_is_named_in_the_error() {
    let (t, meta) = load_fixture("swin_tiny.safetensors");
    let mut cfg = config_from(&meta);
    cfg.embed_dim = 16; // checkpoint has 8
    let err =
        Swin::new(&cfg, VarBuilder::from_tensors(with_prefix(&t, "model."), DType::F32, &Device::Cpu)).unwrap_err();
    let msg = format!("{err}");
    assert!(msg.contains("patch_embed.proj.weight") && msg.contains("shape"), "unhelpful error: {msg}");
}

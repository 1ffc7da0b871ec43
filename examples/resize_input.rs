//! Makes a copy of a model (or training checkpoint) that reads photos at another input size: the
//! learnt position embedding on V (`head.v_pos`, one vector per 1/16 cell) is resized bilinearly to the
//! new grid and `image_size` is set; every other weight is size-free (Swin's windows and relative
//! position tables do not depend on the input). For trying whether this network reads small objects
//! better from larger inputs, with or without further training at that size.
//!
//! `cargo run --release --example resize_input -- SRC DST SIZE`
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        bail!("usage: resize_input SRC DST SIZE");
    }
    let (src, dst) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let size: usize = args[3].parse().context("SIZE")?;
    if size % 16 != 0 {
        bail!("SIZE must be a multiple of 16 (V is the 1/16 grid)");
    }
    let mut cfg = photoseg::model::checkpoint::read_config(&src)?;
    let mut tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)?;
    let grid = size / 16;
    if let Some(p) = tensors.get("head.v_pos") {
        let dtype = p.dtype();
        let resized = p.to_dtype(candle_core::DType::F32)?.upsample_bilinear2d(grid, grid, false)?.to_dtype(dtype)?;
        tensors.insert("head.v_pos".into(), resized);
        cfg.head.position_grid = Some(grid);
    }
    cfg.image_size = size;
    cfg.swin.img_size = Some(size);
    std::fs::create_dir_all(&dst)?;
    candle_core::safetensors::save(&tensors, dst.join("model.safetensors"))?;
    std::fs::write(dst.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    std::fs::copy(src.join("tokenizer.json"), dst.join("tokenizer.json"))?;
    photoseg::model::checkpoint::load_model_dir(&dst, &Device::Cpu)?; // refuse to leave a broken model
    println!("{} -> {} at {size} px (V grid {grid} x {grid})", src.display(), dst.display());
    Ok(())
}

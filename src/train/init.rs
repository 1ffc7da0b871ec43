//! The initial weights of a model trained from scratch: PyTorch's defaults.
//!
//! Why: the layers' own initialisers (truncated-normal linear weights, zero biases, the relative-position
//! tables at N(0, 0.02)) suit fine-tuning a pretrained Swin, not learning one from nothing. A
//! from-scratch backbone with PyTorch's defaults learns shape faster per photo, in photoseg and in its
//! PyTorch twin alike (docs/model.md, "Learning parity").

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sets every linear and convolution weight of `varmap` (a `*.weight` of two or more dimensions), and
/// its bias, to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as `torch.nn.Linear` and `torch.nn.Conv2d` do, and
/// the relative-position bias tables to zero, drawn from `seed` alone. Token and position embedding tables
/// (`*embeddings*.weight`) are N(0, 1), as `torch.nn.Embedding` and candle's `embedding` draw them, but
/// from their own stream of `seed`, so that a run is reproducible and the other weights' draws do not
/// depend on the text encoder's shape. Norms and learnt position maps keep their initialisers.
pub fn pytorch_default(varmap: &VarMap, seed: u64, device: &Device) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let shapes: HashMap<&str, Vec<usize>> = data.iter().map(|(k, v)| (k.as_str(), v.dims().to_vec())).collect();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort(); // HashMap order is random; the draws must not be.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut embedding_rng = StdRng::seed_from_u64(seed ^ EMBEDDING_STREAM);
    for name in names {
        let var = &data[name];
        if name.ends_with("relative_position_bias_table") {
            var.set(&var.as_tensor().zeros_like()?)?;
            continue;
        }
        if name.contains("embeddings") {
            if name.ends_with(".weight") && var.dims().len() >= 2 {
                let values = standard_normal(&mut embedding_rng, var.elem_count());
                var.set(&Tensor::from_vec(values, var.shape(), device)?.to_dtype(var.dtype())?)?;
            }
            continue;
        }
        let weight_dims = if name.ends_with(".weight") {
            Some(var.dims().to_vec())
        } else {
            name.strip_suffix(".bias").and_then(|stem| shapes.get(format!("{stem}.weight").as_str()).cloned())
        };
        let Some(w) = weight_dims.filter(|d| d.len() >= 2) else { continue };
        let bound = 1.0 / (w[1..].iter().product::<usize>() as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-bound..bound)).collect();
        var.set(&Tensor::from_vec(values, var.shape(), device)?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Mixed into the seed for the embedding tables' own stream.
const EMBEDDING_STREAM: u64 = 0x656d_6265_6464_696e;

/// `n` draws of N(0, 1) (Box-Muller).
fn standard_normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
            let v: f64 = rng.random();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarBuilder;

    fn model(seed: u64) -> VarMap {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        candle_nn::linear(64, 8, vb.pp("fc")).unwrap();
        candle_nn::conv2d(4, 8, 3, Default::default(), vb.pp("conv")).unwrap();
        candle_nn::layer_norm(8, 1e-5, vb.pp("norm")).unwrap();
        vb.get_with_hints((5, 2), "attn.relative_position_bias_table", candle_nn::Init::Const(1.0)).unwrap();
        vb.get_with_hints((30, 40), "embeddings.word.weight", candle_nn::Init::Const(1.0)).unwrap();
        vb.get_with_hints(40, "embeddings.norm.weight", candle_nn::Init::Const(1.0)).unwrap();
        pytorch_default(&varmap, seed, &Device::Cpu).unwrap();
        varmap
    }

    fn values(varmap: &VarMap, name: &str) -> Vec<f32> {
        varmap.data().lock().unwrap()[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn weights_and_biases_are_uniform_within_the_fan_in_bound_and_the_rest_is_kept() {
        let m = model(3);
        for (name, fan_in) in [("fc.weight", 64.0f32), ("fc.bias", 64.0), ("conv.weight", 36.0), ("conv.bias", 36.0)] {
            let v = values(&m, name);
            let bound = 1.0 / fan_in.sqrt();
            assert!(v.iter().all(|x| x.abs() <= bound), "{name} outside +-{bound}");
            // Spread over the range, not bunched at zero (a uniform's max is near the bound).
            let max = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            assert!(max > 0.6 * bound, "{name}: max {max} of bound {bound}");
        }
        assert!(values(&m, "attn.relative_position_bias_table").iter().all(|&x| x == 0.0));
        assert!(values(&m, "norm.weight").iter().all(|&x| x == 1.0));
        assert!(values(&m, "embeddings.norm.weight").iter().all(|&x| x == 1.0));
        // The embedding table: N(0, 1) (1,200 draws: mean within 0.1, std within 0.1 of 1).
        let e = values(&m, "embeddings.word.weight");
        let mean = e.iter().sum::<f32>() / e.len() as f32;
        let std = (e.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / e.len() as f32).sqrt();
        assert!(mean.abs() < 0.1 && (std - 1.0).abs() < 0.1, "embedding mean {mean}, std {std}");
    }

    #[test]
    fn the_same_seed_gives_the_same_weights() {
        for name in ["conv.weight", "embeddings.word.weight"] {
            assert_eq!(values(&model(3), name), values(&model(3), name), "{name}");
            assert_ne!(values(&model(3), name), values(&model(4), name), "{name}");
        }
    }
}

//! Gradient parity with a PyTorch twin (`scripts/reference/grad_twin.py`, which writes the fixtures):
//! the built-in model's two training stages at reduced widths, built in PyTorch with timm's Swin and
//! Hugging Face's BERT under photoseg's parameter names, in float64. photoseg loads the same weights and
//! must give the same loss terms in float32, as it trains, and in float64 the same gradient for every
//! parameter and the same weights after one AdamW step. Gradients are compared in float64 because this
//! random network is ill-conditioned in float32: PyTorch's own float32 gradients (and photoseg's, the
//! same elements) are up to 4 % of a tensor's largest gradient away from the float64 ones.
//!
//! Finite differences (`gradcheck.rs`) prove that photoseg differentiates its own forward pass; this
//! proves that the forward pass, the losses and the optimiser are the networks and the update PyTorch
//! computes (a BatchNorm with the wrong variance, a shifted-window mask, a loss weighted differently).
use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::dense::DenseTrunk;
use photoseg::model::referent::{Referent, ReferentConfig};
use photoseg::model::{swin, text};
use photoseg::train::attributes::DenseDecoder;
use photoseg::train::loss;
use photoseg::train::optim::{AdamW, AdamWConfig};

use crate::common::load_fixture;

/// `grad_twin.py`'s LR and WEIGHT_DECAY.
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 1e-4;

/// The twin's Swin: the built-in shape (conv stem with BatchNorm, window 4, MLP ratio 2) at reduced widths.
fn swin_config() -> swin::Config {
    swin::Config {
        patch_size: 4,
        in_chans: 3,
        embed_dim: 8,
        depths: vec![2, 2, 2],
        num_heads: vec![1, 2, 4],
        window_size: 4,
        mlp_ratio: 2.0,
        always_partition: false,
        layer_norm_eps: 1e-5,
        img_size: Some(64),
        conv_stem: Some(8),
        stem_batch_norm: true,
    }
}

fn bert_config() -> text::Config {
    text::Config {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        max_position_embeddings: 32,
        ..text::Config::tiny(33)
    }
}

/// Sets every variable of `varmap` from the fixture's `weight.` entries; fails on a variable the
/// fixture lacks or whose shape differs.
fn load_weights(varmap: &VarMap, fixture: &HashMap<String, Tensor>) {
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let w = fixture.get(&format!("weight.{name}")).unwrap_or_else(|| panic!("the twin has no weight {name}"));
        var.set(&w.to_dtype(var.dtype()).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The largest difference between `got` and `want` relative to `want`'s largest magnitude, with a floor
/// for gradients that are zero in exact arithmetic (a bias before a BatchNorm, a key's bias).
fn relative(got: &Tensor, want: &Tensor) -> f64 {
    let got = got.to_dtype(DType::F64).unwrap();
    let want = want.to_dtype(DType::F64).unwrap();
    assert_eq!(got.dims(), want.dims());
    let max = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    max(&(&got - &want).unwrap()) / max(&want).max(1e-6)
}

fn check_loss(name: &str, got: &Tensor, fixture: &HashMap<String, Tensor>) {
    let want = fixture[&format!("loss.{name}")].to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()[0];
    let got = got.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let rel = (got - want).abs() / want.abs();
    eprintln!("loss {name}: photoseg {got:.8} twin {want:.8} (relative {rel:.1e})");
    assert!(rel < 1e-5, "loss {name}: photoseg {got} against the twin's {want}");
}

/// Every gradient the twin has matches photoseg's to 1e-4 of its largest element, and photoseg has no
/// gradient the twin lacks; then one AdamW step from both gives the same weights. Returns how many
/// parameters were compared.
fn check_gradients_and_step(varmap: &VarMap, grads: &GradStore, fixture: &HashMap<String, Tensor>) -> usize {
    let vars: Vec<(String, Var)> = varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut compared = 0;
    let mut off = Vec::new();
    for (name, var) in &vars {
        let mine = grads.get(var.as_tensor());
        match (fixture.get(&format!("grad.{name}")), mine) {
            (Some(want), Some(got)) => {
                let rel = relative(got, want);
                if rel >= 1e-4 {
                    off.push(format!("{name}: {rel:.2e}"));
                }
                compared += 1;
            }
            (Some(_), None) => panic!("photoseg has no gradient for {name}; the twin has one"),
            (None, Some(got)) => {
                let norm = got.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(norm == 0.0, "photoseg has a gradient for {name} (max {norm}) that the twin lacks");
            }
            (None, None) => {}
        }
    }
    off.sort();
    assert!(off.is_empty(), "gradients off the twin's, relative to their largest element:\n{}", off.join("\n"));
    let trained: Vec<(String, Var)> =
        vars.into_iter().filter(|(name, _)| fixture.contains_key(&format!("grad.{name}"))).collect();
    let cfg = AdamWConfig { lr: LR, weight_decay: WEIGHT_DECAY, ..AdamWConfig::default() };
    let mut opt = AdamW::new(trained.clone(), cfg).unwrap();
    opt.step(grads, LR).unwrap();
    for (name, var) in &trained {
        // The first AdamW step moves each weight by about lr * sign(gradient): a gradient near zero may
        // take either sign, so those elements are left out.
        let g = fixture[&format!("grad.{name}")].to_dtype(DType::F64).unwrap();
        let big = g.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap() * 1e-3;
        let keep = g.abs().unwrap().ge(big).unwrap().to_dtype(DType::F64).unwrap();
        let want = fixture[&format!("after.{name}")].to_dtype(DType::F64).unwrap();
        let got = var.as_tensor().to_dtype(DType::F64).unwrap();
        let diff = ((got - want).unwrap().abs().unwrap() * keep).unwrap();
        let worst = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
        assert!(worst < 1e-4 * LR, "{name} after one AdamW step: {worst:.2e} off the twin's");
    }
    compared
}

/// The features stage's loss terms of the fixture's batch in `dtype`, with the variables they depend on.
fn features_stage(dtype: DType, fixture: &HashMap<String, Tensor>) -> (VarMap, [Tensor; 4]) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let backbone = swin::Swin::new(&swin_config(), vb.pp("swin")).unwrap();
    let trunk = DenseTrunk::new([8, 16, 32], vb.pp("dense")).unwrap();
    let decoder = DenseDecoder::new([8, 16, 32], false, vb.pp("aux").pp("dense")).unwrap();
    load_weights(&varmap, fixture);
    // The stem's BatchNorm on the batch's statistics, as the features stage trains it.
    backbone.set_training(true);
    let labels = |k: &str| fixture[&format!("input.{k}")].to_dtype(DType::U32).unwrap();
    let (colour, shape, size) = (labels("colour"), labels("shape"), labels("size"));
    let stages = backbone.forward_stages(&fixture["input.images"].to_dtype(dtype).unwrap()).unwrap();
    let terms = decoder.loss_terms(Some(&trunk), &stages, &colour, &shape, &size).unwrap();
    let total = decoder.loss(Some(&trunk), &stages, &colour, &shape, &size).unwrap();
    let [a, b, c] = terms;
    (varmap, [a, b, c, total])
}

#[test]
fn the_features_stage_matches_its_pytorch_twin() {
    let (fixture, _) = load_fixture("grad_twin_features.safetensors");
    for dtype in [DType::F32, DType::F64] {
        let (varmap, terms) = features_stage(dtype, &fixture);
        for (name, t) in ["colour", "shape", "size", "total"].iter().zip(&terms) {
            check_loss(name, t, &fixture);
        }
        if dtype == DType::F64 {
            let compared = check_gradients_and_step(&varmap, &terms[3].backward().unwrap(), &fixture);
            // Stem, BatchNorm, every Swin stage, the trunk and the classifier.
            assert!(compared >= 100, "only {compared} gradients compared");
        }
    }
}

/// The referent head stage's loss over the fixture's batch in `dtype`, with the variables it depends on.
fn referent_stage(dtype: DType, fixture: &HashMap<String, Tensor>) -> (VarMap, loss::ReferentLoss) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let bert = text::Bert::new(&bert_config(), vb.pp("text")).unwrap();
    let referent =
        Referent::new(&ReferentConfig { dim: 8, threshold: 0.0, ..Default::default() }, 48, 16, vb.pp("referent"))
            .unwrap();
    load_weights(&varmap, fixture);
    let input = |k: &str| fixture[&format!("input.{k}")].clone();
    let u32s = |k: &str| input(k).to_dtype(DType::U32).unwrap();
    let hidden = bert.forward(&u32s("ids"), &u32s("types"), &u32s("mask")).unwrap();
    let q = referent.query(&hidden, &u32s("mask")).unwrap().index_select(&u32s("group_of"), 0).unwrap();
    let dense = input("dense").to_dtype(dtype).unwrap();
    let e = referent.embed(&dense).unwrap();
    let logits = referent.logits(&e, &q).unwrap();
    let score = referent.peaks(&photoseg::model::referent::pool(&e).unwrap(), &q).unwrap();
    let positive = input("positive").to_dtype(dtype).unwrap();
    (varmap, loss::referent(&logits, &score, &u32s("target"), &positive).unwrap())
}

#[test]
fn the_referent_head_stage_matches_its_pytorch_twin() {
    let (fixture, _) = load_fixture("grad_twin_referent.safetensors");
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        let (varmap, parts) = referent_stage(dtype, &fixture);
        for (name, value) in [("cells", parts.cells), ("dice", parts.dice), ("decision", parts.decision)] {
            check_loss(name, &Tensor::new(value, &dev).unwrap(), &fixture);
        }
        check_loss("total", &parts.total, &fixture);
        if dtype == DType::F64 {
            let compared = check_gradients_and_step(&varmap, &parts.total.backward().unwrap(), &fixture);
            // BERT's embeddings and both layers, φ, the word projection and the bias (not the pooler).
            assert!(compared >= 40, "only {compared} gradients compared");
        }
    }
}

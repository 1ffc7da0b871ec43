//! The GRSer head on hand-made groups where the right answer is known, the top-K path against
//! all-pairs, and gradients reaching every parameter.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::grser::{is_positive, mask_at, Config, Grser, Pairs};
use photoseg::model::neck::VisualFeatures;
use photoseg::model::tqm;

use crate::common::{self, fixture};

fn tokenizer() -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap()
}

fn random_model() -> (Grser, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Grser::new(&Config::tiny(60), tokenizer(), vb).expect("build tiny grser");
    common::seed_weights(&varmap, 7);
    (model, varmap)
}

fn random_images(n: usize, size: usize) -> Tensor {
    common::seeded_normal(&[n, 3, size, size], (n * 1000 + size) as u64)
}

#[test]
fn features_have_the_documented_shapes() {
    let (model, _) = random_model();
    let f = model.featurize(&random_images(3, 64)).unwrap();
    assert_eq!(f.v.dims(), &[3, 32, 4, 4]);
    assert_eq!(f.lat0.dims(), &[3, 8, 16, 16]);
    assert_eq!(f.lat1.dims(), &[3, 8, 8, 8]);
    assert_eq!(f.lat3.dims(), &[3, 8, 2, 2]);
    // Odd sizes work too (padding inside Swin, cropping in the decoder).
    let f = model.featurize(&random_images(2, 72)).unwrap();
    let (l, a) = model.text.encode_with_anti(&["the red circle"]).unwrap();
    let tri = model.head.triphasic(&f, &l.squeeze(0).unwrap(), &a.squeeze(0).unwrap(), Pairs::TopK).unwrap();
    let logits = model.head.decode_all(&tri, &f).unwrap();
    assert_eq!(logits.dims(), &[2, 2, 18, 18]);
}

/// A group where photos 0 and 2 hold a "target" feature vector at one position, the others do not.
fn hand_made_group(c: usize) -> (Tensor, Tensor, Vec<(usize, usize)>) {
    let dev = Device::Cpu;
    let target: Vec<f32> = (0..c).map(|i| if i < 4 { 1.0 } else { 0.0 }).collect();
    let mut data = vec![0f32; 5 * c * 16];
    let at = [(1usize, 2usize), (3, 3)];
    for n in 0..5 {
        for ch in 0..c {
            for p in 0..16 {
                // Background: energy on the other channels, orthogonal to the target.
                data[(n * c + ch) * 16 + p] = if ch >= 4 { 0.5 + 0.1 * ((n + p + ch) % 3) as f32 } else { 0.0 };
            }
        }
    }
    let holders = [(0usize, at[0]), (2, at[1])];
    for &(n, (y, x)) in &holders {
        for ch in 0..c {
            data[(n * c + ch) * 16 + y * 4 + x] = 3.0 * target[ch];
        }
    }
    let v = Tensor::from_vec(data, (5, c, 4, 4), &dev).unwrap();
    let l = Tensor::from_vec(target, c, &dev).unwrap();
    (v, l, vec![(1, 2), (3, 3)])
}

#[test]
fn language_map_and_prototypes_find_the_target() {
    let (v, l, at) = hand_made_group(16);
    let (m_l, protos) = tqm::prototypes(&v, &l).unwrap();
    let m: Vec<Vec<Vec<f32>>> = m_l.to_vec3().unwrap();
    // In a holder, the language map peaks (cos = 1) exactly where the target is.
    assert!((m[0][at[0].0][at[0].1] - 1.0).abs() < 1e-5);
    assert!((m[2][at[1].0][at[1].1] - 1.0).abs() < 1e-5);
    // In a photo without it, the map is 0 everywhere (orthogonal background).
    assert!(m[1].iter().flatten().all(|x| x.abs() < 1e-5));
    // The visual map of a holder's prototype lights up the target in the *other* holder.
    let m_v = tqm::visual_maps(&v, &protos.narrow(0, 0, 1).unwrap()).unwrap(); // [5, 1, 4, 4]
    let other: Vec<Vec<f32>> = m_v.get(2).unwrap().get(0).unwrap().to_vec2().unwrap();
    let peak = other[at[1].0][at[1].1];
    assert!((peak - 1.0).abs() < 1e-5, "holder 0's prototype should match holder 2's target, got {peak}");
    let non_holder: Vec<Vec<f32>> = m_v.get(1).unwrap().get(0).unwrap().to_vec2().unwrap();
    assert!(non_holder.iter().flatten().all(|x| x.abs() < 1e-5));
    // And the holders' prototypes rank first.
    let anti = (l.clone() * -1.0).unwrap();
    let order = photoseg::model::hierarchizer::rank_prototypes(&protos, &l, &anti).unwrap();
    let mut first_two = order[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, vec![0, 2], "holders must lead the order: {order:?}");
}

#[test]
fn decision_rule_uses_the_margin() {
    assert!(is_positive(1.0, 2.5, 1.0));
    assert!(!is_positive(1.0, 2.0, 1.0), "d_pos + m == d_neg is not positive");
    assert!(!is_positive(3.0, 1.0, 1.0));
    assert!(is_positive(1.0, 1.5, 0.0));
}

fn z_and_decisions(model: &Grser, f: &VisualFeatures, pairs: Pairs) -> (Tensor, Vec<f32>, Vec<f32>) {
    let (l, a) = model.text.encode_with_anti(&["my bike on the left"]).unwrap();
    let tri = model.head.triphasic(f, &l.squeeze(0).unwrap(), &a.squeeze(0).unwrap(), pairs).unwrap();
    (tri.z, tri.d_pos.to_vec1().unwrap(), tri.d_neg.to_vec1().unwrap())
}

#[test]
fn top_k_equals_all_pairs_for_small_and_large_groups() {
    let (model, _) = random_model();
    for n in [2usize, 4, 9] {
        let f = model.featurize(&random_images(n, 64)).unwrap();
        let (z1, p1, n1) = z_and_decisions(&model, &f, Pairs::TopK);
        let (z2, p2, n2) = z_and_decisions(&model, &f, Pairs::AllPairs);
        assert_eq!(z1.dims(), &[n, 32 + 1 + 4, 4, 4], "z has C_v + 1 + K channels whatever N");
        assert!(common::max_abs_diff(&z1, &z2) < 1e-5, "N = {n}: z differs");
        let d1: Vec<bool> = p1.iter().zip(&n1).map(|(a, b)| is_positive(*a, *b, 1.0)).collect();
        let d2: Vec<bool> = p2.iter().zip(&n2).map(|(a, b)| is_positive(*a, *b, 1.0)).collect();
        assert_eq!(d1, d2, "N = {n}: decisions differ");
    }
}

#[test]
fn small_groups_get_zero_maps_for_missing_prototypes() {
    let (model, _) = random_model();
    let f = model.featurize(&random_images(2, 64)).unwrap();
    let (z, _, _) = z_and_decisions(&model, &f, Pairs::TopK);
    // K = 4, N = 2: after V (32) and M_l (1), map channels 2 and 3 are zero.
    let pad = z.narrow(1, 33 + 2, 2).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(pad, 0.0);
    let real = z.narrow(1, 33, 2).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(real > 0.0);
}

#[test]
fn answer_decodes_masks_for_positives_only() {
    let (model, _) = random_model();
    let f = model.featurize(&random_images(6, 64)).unwrap();
    let answers = model.answer(&f, "the red circle", Pairs::TopK).unwrap();
    assert_eq!(answers.len(), 6);
    for a in &answers {
        assert_eq!(a.positive, is_positive(a.d_pos, a.d_neg, 1.0));
        assert_eq!(a.positive, a.mask_logits.is_some());
        if let Some(m) = &a.mask_logits {
            assert_eq!(m.dims(), &[16, 16]);
        }
    }
}

#[test]
fn masks_come_back_at_the_photo_resolution() {
    // Object logits positive in the top-left quadrant of a 4x4 map.
    let mut v = vec![-5f32; 16];
    for y in 0..2 {
        for x in 0..2 {
            v[y * 4 + x] = 5.0;
        }
    }
    let logits = Tensor::from_vec(v, (4, 4), &Device::Cpu).unwrap();
    let mask = mask_at(&logits, 30, 40).unwrap();
    assert_eq!(mask.len(), 1200);
    assert_eq!(mask[0], 1);
    assert_eq!(mask[5 * 40 + 5], 1);
    assert_eq!(mask[29 * 40 + 39], 0);
    assert_eq!(mask[5 * 40 + 35], 0);
    let area: usize = mask.iter().map(|&m| m as usize).sum();
    assert!((250..=350).contains(&area), "a quarter of 1200 pixels, got {area}");
}

#[test]
fn every_parameter_receives_a_gradient() {
    let (model, varmap) = random_model();
    let images = random_images(4, 64);
    let f = model.featurize(&images).unwrap();
    let (l, a) = model.text.encode_with_anti(&["the red circle"]).unwrap();
    let tri = model.head.triphasic(&f, &l.squeeze(0).unwrap(), &a.squeeze(0).unwrap(), Pairs::TopK).unwrap();
    let logits = model.head.decode_all(&tri, &f).unwrap(); // [4, 2, 16, 16]
    let target = Tensor::zeros((4, 16, 16), DType::U32, &Device::Cpu).unwrap();
    let ce = candle_nn::loss::cross_entropy(
        &logits.permute((0, 2, 3, 1)).unwrap().reshape((4 * 256, 2)).unwrap(),
        &target.flatten_all().unwrap(),
    )
    .unwrap();
    // A linear function of the distances: a hinge could be inactive at random init and hide nothing.
    let triplet = (&tri.d_pos + &tri.d_neg).unwrap().mean_all().unwrap();
    let loss = (ce + triplet).unwrap();
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    let mut missing = Vec::new();
    for (name, var) in vars.iter() {
        let var: &Var = var;
        match grads.get(var.as_tensor()) {
            Some(g) if g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0 => {}
            Some(_) => missing.push(format!("{name} (zero)")),
            None => missing.push(name.clone()),
        }
    }
    missing.sort();
    // The pooler is absent (never built), so every variable must be reached.
    assert!(missing.is_empty(), "{} of {} parameters got no gradient: {missing:?}", missing.len(), vars.len());
}

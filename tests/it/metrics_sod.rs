//! Metrics against their reference implementations (fixture: tests/fixtures/data/sod_metrics.json, made by
//! tests/fixtures/make_data_fixtures.py): the Co-SOD metrics against pysodmetrics 1.6.2, per image and per
//! data set; IoU, mIoU, overall IoU and the decision accuracies against a numpy computation.
//!
//! Tolerance 1e-12 (absolute): thresholds are computed with the reference's exact f64 operations, so only
//! summation order differs (numpy sums pairwise, photoseg left to right), which moves the last few bits.
use photoseg::data::Mask;
use photoseg::eval::{SegMetrics, SodMetrics, SodScores};
use serde_json::Value;

const TOL: f64 = 1e-12;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/sod_metrics.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A fixture ground truth (grey 0-255, or 0/1) binarised as pysodmetrics does: > 128 for grey maps.
fn gt_mask(case: &Value, grey: bool) -> Mask {
    let data: Vec<u8> = case["gt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let v = v.as_u64().unwrap();
            u8::from(if grey { v > 128 } else { v != 0 })
        })
        .collect();
    Mask::from_data(case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32, data).unwrap()
}

fn add_case(m: &mut SodMetrics, case: &Value, grey: bool) {
    let gt = gt_mask(case, grey);
    if grey {
        let pred: Vec<u8> = case["pred"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        m.add(pred.as_slice(), &gt).unwrap();
    } else {
        // f32 values written as Python floats: the cast back is exact
        let pred: Vec<f32> = case["pred"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        m.add(pred.as_slice(), &gt).unwrap();
    }
}

fn close(what: &str, got: f64, want: &Value) {
    if want.is_null() {
        assert!(got.is_nan(), "{what}: the reference gives NaN, photoseg {got}");
        return;
    }
    let want = want.as_f64().unwrap();
    assert!((got - want).abs() <= TOL, "{what}: photoseg {got}, reference {want} (diff {:e})", (got - want).abs());
}

fn check(name: &str, s: &SodScores, want: &Value) {
    close(&format!("{name} mae"), s.mae, &want["mae"]);
    close(&format!("{name} S-measure"), s.s_measure, &want["sm"]);
    close(&format!("{name} max F"), s.max_f, &want["max_f"]);
    close(&format!("{name} mean F"), s.mean_f, &want["mean_f"]);
    close(&format!("{name} max E"), s.max_e, &want["max_e"]);
    close(&format!("{name} mean E"), s.mean_e, &want["mean_e"]);
    for (curve, got) in [("f_curve", &s.f_curve), ("e_curve", &s.e_curve)] {
        if let Some(w) = want.get(curve) {
            let w = w.as_array().unwrap();
            assert_eq!(w.len(), 256);
            for (k, (g, wv)) in got.iter().zip(w).enumerate() {
                close(&format!("{name} {curve}[{k}] (threshold {})", 255 - k), *g, wv);
            }
        }
    }
}

#[test]
fn grey_maps_score_as_pysodmetrics_per_image() {
    let fx = fixture();
    let cases = fx["grey"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let mut m = SodMetrics::new();
        add_case(&mut m, case, true);
        check(case["name"].as_str().unwrap(), &m.finish(), case);
    }
}

#[test]
fn probability_maps_score_as_pysodmetrics_per_image() {
    let fx = fixture();
    for case in fx["prob"].as_array().unwrap() {
        let mut m = SodMetrics::new();
        add_case(&mut m, case, false);
        check(case["name"].as_str().unwrap(), &m.finish(), case);
    }
}

#[test]
fn data_sets_average_curves_before_max_and_mean() {
    let fx = fixture();
    for ds in fx["datasets"].as_array().unwrap() {
        let mut m = SodMetrics::new();
        for name in ds["cases"].as_array().unwrap() {
            let (case, grey) = fx["grey"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c, true))
                .chain(fx["prob"].as_array().unwrap().iter().map(|c| (c, false)))
                .find(|(c, _)| c["name"] == *name)
                .unwrap();
            add_case(&mut m, case, grey);
        }
        let s = m.finish();
        assert_eq!(s.images, ds["cases"].as_array().unwrap().len());
        check(ds["name"].as_str().unwrap(), &s, ds);
    }
}

#[test]
fn the_fixture_exercises_what_it_claims() {
    // Guards the fixture: without these the tests above could pass on a port that skips a branch.
    let fx = fixture();
    let grey = fx["grey"].as_array().unwrap();
    let by = |n: &str| grey.iter().find(|c| c["name"] == n).unwrap().clone();
    assert!(by("last_column_gt")["sm"].is_null(), "the NaN S-measure case");
    assert_eq!(by("empty_gt")["max_f"].as_f64().unwrap(), 0.0);
    let ds = &fx["datasets"][0];
    let mean_of_maxima: f64 =
        ds["cases"].as_array().unwrap().iter().map(|n| by(n.as_str().unwrap())["max_f"].as_f64().unwrap()).sum::<f64>()
            / ds["cases"].as_array().unwrap().len() as f64;
    assert!((mean_of_maxima - ds["max_f"].as_f64().unwrap()).abs() > 1e-3, "max F must be the max of the mean curve");
}

#[test]
fn segmentation_scores_match_numpy() {
    let fx = fixture();
    let seg = &fx["seg"];
    let mut m = SegMetrics::new();
    for img in seg["images"].as_array().unwrap() {
        let (w, h) = (img["width"].as_u64().unwrap() as u32, img["height"].as_u64().unwrap() as u32);
        let to_mask = |k: &str| {
            Mask::from_data(w, h, img[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect())
                .unwrap()
        };
        let pred = to_mask("pred");
        let gt = to_mask("gt");
        let positive = img["positive"].as_bool().unwrap();
        close("per-image IoU", photoseg::eval::iou(&pred, &gt).unwrap(), &img["iou"]);
        m.add(&pred, positive.then_some(&gt), img["decided_positive"].as_bool().unwrap()).unwrap();
    }
    let s = m.finish();
    assert_eq!((s.images, s.positives, s.negatives), (6, 4, 2));
    close("mIoU", s.miou, &seg["miou"]);
    close("mIoU positives", s.miou_positives.unwrap(), &seg["miou_positives"]);
    close("oIoU", s.oiou, &seg["oiou"]);
    close("accuracy positives", s.accuracy_positives.unwrap(), &seg["accuracy_positives"]);
    close("accuracy negatives", s.accuracy_negatives.unwrap(), &seg["accuracy_negatives"]);
}

#[test]
fn no_negatives_means_no_negative_accuracy() {
    let mut m = SegMetrics::new();
    let gt = Mask::from_data(2, 1, vec![1, 0]).unwrap();
    m.add(&gt, Some(&gt), true).unwrap();
    let s = m.finish();
    assert_eq!((s.miou, s.accuracy_positives, s.accuracy_negatives), (1.0, Some(1.0), None));
}

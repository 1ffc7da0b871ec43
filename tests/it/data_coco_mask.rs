//! COCO masks against pycocotools 2.0.11 (fixture: tests/fixtures/data/coco_masks.json, made by
//! tests/fixtures/make_data_fixtures.py). Every comparison is exact: counts, strings and pixels.
use photoseg::data::coco_mask::{CocoRle, RleCounts, Segmentation};
use photoseg::data::{Mask, Rle};
use serde_json::Value;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/coco_masks.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn dims(case: &Value) -> (u32, u32) {
    (case["height"].as_u64().unwrap() as u32, case["width"].as_u64().unwrap() as u32)
}

/// The '0'/'1' row strings the fixture stores, as a mask.
fn mask_from_rows(case: &Value) -> Mask {
    let (h, w) = dims(case);
    let data: Vec<u8> =
        case["rows"].as_array().unwrap().iter().flat_map(|r| r.as_str().unwrap().bytes().map(|b| b - b'0')).collect();
    Mask::from_data(w, h, data).unwrap()
}

fn rows_of(m: &Mask) -> Vec<String> {
    m.data.chunks(m.width as usize).map(|r| r.iter().map(|&v| char::from(b'0' + v)).collect()).collect()
}

#[test]
fn polygons_rasterise_pixel_for_pixel_like_pycocotools() {
    let fx = fixture();
    let cases = fx["polygons"].as_array().unwrap();
    assert!(cases.len() >= 30, "the fixture holds the hand-made and the random polygons");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (h, w) = dims(case);
        let polys: Vec<Vec<f64>> = serde_json::from_value(case["polygons"].clone()).unwrap();
        let rle = Rle::from_polygons(&polys, h, w);
        let want = case["counts"].as_str().unwrap();
        if rle.to_compressed() != want {
            let got = rows_of(&rle.decode());
            let exp: Vec<String> =
                case["rows"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            failures.push(format!(
                "{name}: counts {} != {want}\n got:\n{}\n want:\n{}",
                rle.to_compressed(),
                got.join("\n"),
                exp.join("\n")
            ));
            continue;
        }
        assert_eq!(rle.area(), case["area"].as_u64().unwrap(), "{name}: area");
        assert_eq!(rle.decode(), mask_from_rows(case), "{name}: decoded pixels");
    }
    assert!(failures.is_empty(), "{} polygon(s) differ from pycocotools:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn polygon_cases_are_not_trivial() {
    // Guards the fixture itself: empty masks everywhere would make the test above pass for any rasteriser.
    let fx = fixture();
    let nonempty = fx["polygons"].as_array().unwrap().iter().filter(|c| c["area"].as_u64().unwrap() > 0).count();
    assert!(nonempty >= 25, "only {nonempty} non-empty polygon masks");
    let outside = fx["polygons"].as_array().unwrap().iter().find(|c| c["name"] == "outside").unwrap();
    assert_eq!(outside["area"], 0);
}

#[test]
fn uncompressed_counts_compress_like_pycocotools() {
    for case in fixture()["uncompressed"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (h, w) = dims(case);
        let counts: Vec<u32> = serde_json::from_value(case["counts_list"].clone()).unwrap();
        let rle = Rle::from_counts(h, w, counts.clone()).unwrap();
        assert_eq!(rle.to_compressed(), case["counts"].as_str().unwrap(), "{name}");
        assert_eq!(rle.area(), case["area"].as_u64().unwrap(), "{name}: area");
        let back = Rle::from_compressed(case["counts"].as_str().unwrap(), h, w).unwrap();
        assert_eq!(back.counts, counts, "{name}: compressed -> counts");
    }
}

#[test]
fn masks_encode_to_pycocotools_strings_and_decode_back() {
    for case in fixture()["encoded"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (h, w) = dims(case);
        let mask = if case.get("rows").is_some() {
            mask_from_rows(case)
        } else {
            // [y0, y1, x0, x1, value] boxes painted in order
            let mut m = Mask::new(w, h);
            for b in case["boxes"].as_array().unwrap() {
                let b: Vec<u32> = serde_json::from_value(b.clone()).unwrap();
                for y in b[0]..b[1] {
                    for x in b[2]..b[3] {
                        m.data[(y * w + x) as usize] = b[4] as u8;
                    }
                }
            }
            m
        };
        let rle = Rle::encode(&mask);
        let want = case["counts"].as_str().unwrap();
        assert_eq!(rle.to_compressed(), want, "{name}: encode");
        assert_eq!(rle.area(), case["area"].as_u64().unwrap(), "{name}: area");
        assert_eq!(mask.area(), rle.area(), "{name}: mask area");
        let decoded = Rle::from_compressed(want, h, w).unwrap().decode();
        assert_eq!(decoded, mask, "{name}: decode(pycocotools string)");
    }
}

#[test]
fn segmentation_json_forms_all_read() {
    let poly: Segmentation = serde_json::from_str("[[10, 10, 20, 10, 20, 20, 10, 20]]").unwrap();
    let unc: Segmentation = serde_json::from_str(r#"{"size": [6, 5], "counts": [0, 4, 10, 3, 13]}"#).unwrap();
    let comp: Segmentation = serde_json::from_str(r#"{"size": [6, 5], "counts": "04:O3"}"#).unwrap();
    assert!(matches!(poly, Segmentation::Polygons(_)));
    assert!(matches!(unc, Segmentation::Rle(CocoRle { counts: RleCounts::Uncompressed(_), .. })));
    assert_eq!(poly.to_rle(30, 40).unwrap().area(), 100);
    let a = unc.to_rle(6, 5).unwrap();
    let b = comp.to_rle(6, 5).unwrap();
    assert_eq!(a, b, "uncompressed and compressed forms of one mask");
    let err = unc.to_rle(7, 5).unwrap_err().to_string();
    assert!(err.contains("6x5") && err.contains("7x5"), "{err}");
}

#[test]
fn coco_json_output_is_pycocotools_form() {
    let rle = Rle::from_counts(6, 5, vec![0, 4, 10, 3, 13]).unwrap();
    let json = serde_json::to_value(rle.to_coco()).unwrap();
    assert_eq!(json, serde_json::json!({"size": [6, 5], "counts": "04:O3"}));
}

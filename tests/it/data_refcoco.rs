//! RefCOCO reading and G-RefC regrouping on the tiny fixture in tests/fixtures/data/refcoco (made by
//! tests/fixtures/make_data_fixtures.py: 9 images, 13 annotations, 11 refs). Masks are checked against
//! pycocotools' annToRLE (expected.json); negatives against the categories in instances.json, read here
//! independently of the reader.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use photoseg::data::refcoco::{read_refs, GroupConfig, RefCoco};
use photoseg::data::{Group, MaskSource};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/refcoco")
}

fn open() -> RefCoco {
    let d = dir();
    RefCoco::open(&d.join("refs(unc).p"), &d.join("instances.json"), &d.join("images")).unwrap()
}

fn instances() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("instances.json")).unwrap()).unwrap()
}

/// image id -> categories of all its annotations, from the raw JSON.
fn categories_by_image() -> BTreeMap<u64, BTreeSet<u64>> {
    let mut m: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for a in instances()["annotations"].as_array().unwrap() {
        m.entry(a["image_id"].as_u64().unwrap()).or_default().insert(a["category_id"].as_u64().unwrap());
    }
    m
}

/// "…/COCO_train2014_000000000104.jpg" -> 104
fn image_id(p: &Path) -> u64 {
    p.file_stem().unwrap().to_str().unwrap().rsplit('_').next().unwrap().parse().unwrap()
}

fn ids(g: &Group, positive: bool) -> Vec<u64> {
    g.photos.iter().filter(|p| p.mask.is_some() == positive).map(|p| image_id(&p.image)).collect()
}

#[test]
fn python2_and_python3_pickles_read_the_same_refs() {
    let py2 = read_refs(&dir().join("refs(unc).p")).unwrap();
    let py3 = read_refs(&dir().join("refs_py3.p")).unwrap();
    assert_eq!(py2, py3);
    assert_eq!(py2.len(), 11);
    let r = &py2[5];
    assert_eq!((r.ref_id, r.ann_id, r.image_id, r.category_id, r.split.as_str()), (5, 1007, 105, 18, "train"));
    assert_eq!(r.sentences, vec!["white dog".to_string(), "caf\u{e9} dog".to_string()]);
    assert_eq!(py2[1].sentences, vec!["Man on  left".to_string()], "sentences are kept as stored");
    assert_eq!(py2[8].split, "val");
}

#[test]
fn annotation_masks_match_pycocotools_ann_to_rle() {
    let ds = open();
    let expected: Value = serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 13);
    for (ann_id, want) in expected {
        let rle = ds.mask(ann_id.parse().unwrap()).unwrap();
        assert_eq!(rle.to_compressed(), want["counts"].as_str().unwrap(), "annotation {ann_id}");
        assert_eq!(rle.area(), want["area"].as_u64().unwrap(), "annotation {ann_id}");
        assert_eq!((rle.height, rle.width), (30, 40));
    }
}

#[test]
fn train_split_regroups_by_sentence_with_exact_positives() {
    let ds = open();
    let groups = ds.groups(&GroupConfig::new("train", 0)).unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.expression.as_str()).collect();
    // "man on right", "guy in grey shirt", "left man", "café dog" name one image each; "red car" is
    // ambiguous in 109, leaving 106 and 107.
    assert_eq!(names, ["man on left", "red car", "white dog"]);
    assert_eq!(ids(&groups[0], true), [101, 102, 103], "'Man on  left' in 102 joins 'man on left'; 108 is val");
    assert_eq!(ids(&groups[1], true), [106, 107]);
    assert_eq!(ids(&groups[2], true), [104, 105]);
    // each positive's mask is its referred object's (ann 1001.. of the fixture)
    let want_ann = [
        (0, 101, 1001),
        (0, 102, 1003),
        (0, 103, 1005),
        (1, 106, 1009),
        (1, 107, 1010),
        (2, 104, 1006),
        (2, 105, 1007),
    ];
    for (g, img, ann) in want_ann {
        let photo = groups[g].photos.iter().find(|p| image_id(&p.image) == img).unwrap();
        let Some(MaskSource::Rle(rle)) = &photo.mask else { panic!("positive {img} has no rle") };
        assert_eq!(rle, &ds.mask(ann).unwrap(), "group {g} image {img}");
        assert!(photo.image.is_file(), "{}", photo.image.display());
    }
}

#[test]
fn every_group_is_one_to_one_and_its_negatives_lack_its_categories() {
    let ds = open();
    let cats = categories_by_image();
    let group_categories = [("man on left", 1u64), ("red car", 3), ("white dog", 18)];
    for seed in 0..25 {
        for g in ds.groups(&GroupConfig::new("train", seed)).unwrap() {
            assert_eq!(g.positives(), g.negatives(), "seed {seed} {}: 1:1", g.expression);
            let cat = group_categories.iter().find(|(e, _)| *e == g.expression).unwrap().1;
            let pos: BTreeSet<u64> = ids(&g, true).into_iter().collect();
            for n in ids(&g, false) {
                assert!(!cats[&n].contains(&cat), "seed {seed} {}: negative {n} holds category {cat}", g.expression);
                assert!(!pos.contains(&n), "seed {seed}: {n} both positive and negative");
                assert_ne!(n, 108, "val image sampled as a train negative");
            }
            // 105 holds a crowd of people: never a "man on left" negative; 109 holds two cars
            if g.expression == "man on left" {
                assert!(!ids(&g, false).contains(&105));
            }
        }
    }
}

#[test]
fn grouping_is_deterministic_by_seed_and_the_seed_matters() {
    let ds = open();
    let a = ds.groups(&GroupConfig::new("train", 7)).unwrap();
    let b = open().groups(&GroupConfig::new("train", 7)).unwrap();
    assert_eq!(a, b, "same files and seed, same groups");
    let negative_sets: BTreeSet<Vec<u64>> =
        (0..25).map(|s| ds.groups(&GroupConfig::new("train", s)).unwrap()).map(|gs| ids(&gs[2], false)).collect();
    // "white dog" draws 2 of 5 candidates (102, 103, 106, 107, 109): 25 seeds must not all agree
    assert!(negative_sets.len() >= 3, "negatives barely depend on the seed: {negative_sets:?}");
    let allowed: BTreeSet<u64> = [102, 103, 106, 107, 109].into();
    assert!(negative_sets.iter().flatten().all(|n| allowed.contains(n)), "{negative_sets:?}");
}

#[test]
fn max_positives_caps_both_sides() {
    let ds = open();
    let mut cfg = GroupConfig::new("train", 3);
    cfg.max_positives = Some(2);
    let groups = ds.groups(&cfg).unwrap();
    assert_eq!(groups[0].expression, "man on left");
    assert_eq!((groups[0].positives(), groups[0].negatives()), (2, 2));
    assert!(ids(&groups[0], true).iter().all(|i| [101, 102, 103].contains(i)));
}

#[test]
fn splits_are_grouped_separately() {
    let ds = open();
    // val has one image: no group, even when one positive is enough, since it has no negative to pair
    assert!(ds.groups(&GroupConfig::new("val", 0)).unwrap().is_empty());
    let mut cfg = GroupConfig::new("val", 0);
    cfg.min_positives = 1;
    assert!(ds.groups(&cfg).unwrap().is_empty());
    let err = ds.groups(&GroupConfig::new("testA", 0)).unwrap_err().to_string();
    assert!(err.contains("testA") && err.contains("\"train\"") && err.contains("\"val\""), "{err}");
}

#[test]
fn missing_instances_names_the_path() {
    let d = dir();
    let missing = d.join("no_such_instances.json");
    let err = format!("{:#}", RefCoco::open(&d.join("refs(unc).p"), &missing, &d.join("images")).unwrap_err());
    assert!(err.contains("no_such_instances.json") && err.contains("reading coco instances"), "{err}");
}

#[test]
fn corrupt_or_truncated_pickle_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("refs(unc).p");
    std::fs::write(&bad, b"this is not a pickle").unwrap();
    let err = format!("{:#}", read_refs(&bad).unwrap_err());
    assert!(err.contains(&bad.display().to_string()) && err.contains("not a readable pickle"), "{err}");
    let good = std::fs::read(dir().join("refs(unc).p")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let err = format!("{:#}", read_refs(&bad).unwrap_err());
    assert!(err.contains(&bad.display().to_string()), "{err}");
}

#[test]
fn a_pickle_of_the_wrong_shape_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("refs.p");
    // protocol 2: [{'ref_id': 1}]
    std::fs::write(&p, b"\x80\x02]q\x00}q\x01U\x06ref_idq\x02K\x01sa.").unwrap();
    let err = format!("{:#}", read_refs(&p).unwrap_err());
    assert!(err.contains("entry 0") && err.contains("'sentences'"), "{err}");
    // protocol 2: {'a': 1}
    std::fs::write(&p, b"\x80\x02}q\x00U\x01aK\x01s.").unwrap();
    let err = format!("{:#}", read_refs(&p).unwrap_err());
    assert!(err.contains("expected a list of refs, found a dict"), "{err}");
}

#[test]
fn refs_naming_unknown_annotations_or_missing_images_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir();
    // instances without annotation 1007
    let mut inst = instances();
    inst["annotations"].as_array_mut().unwrap().retain(|a| a["id"] != 1007);
    let inst_path = tmp.path().join("instances.json");
    std::fs::write(&inst_path, serde_json::to_vec(&inst).unwrap()).unwrap();
    let err = format!("{:#}", RefCoco::open(&d.join("refs(unc).p"), &inst_path, &d.join("images")).unwrap_err());
    assert!(err.contains("annotation 1007") && err.contains(&inst_path.display().to_string()), "{err}");

    // an images folder without 104.jpg: the group that uses it names the file
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for e in std::fs::read_dir(d.join("images")).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with("COCO_train2014_000000000104.jpg") {
            std::fs::copy(&p, images.join(p.file_name().unwrap())).unwrap();
        }
    }
    let ds = RefCoco::open(&d.join("refs(unc).p"), &d.join("instances.json"), &images).unwrap();
    let err = format!("{:#}", ds.groups(&GroupConfig::new("train", 0)).unwrap_err());
    assert!(err.contains("COCO_train2014_000000000104.jpg") && err.contains("does not exist"), "{err}");

    let err = format!(
        "{:#}",
        RefCoco::open(&d.join("refs(unc).p"), &d.join("instances.json"), &tmp.path().join("nope")).unwrap_err()
    );
    assert!(err.contains("images folder") && err.contains("nope"), "{err}");
}

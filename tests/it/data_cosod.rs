//! Co-SOD reading: the CoCA-like fixture (tests/fixtures/data/cosod/CoCA, `image/` + `binary/`), the other
//! releases' folder names built in a temp dir, and the errors for missing ground truth.
use std::path::{Path, PathBuf};

use photoseg::data::cosod::{read_cosod, with_negatives};
use photoseg::data::MaskSource;

fn coca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/cosod/CoCA")
}

#[test]
fn coca_groups_are_folders_with_all_photos_positive() {
    let groups = read_cosod(&coca()).unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.expression.as_str()).collect();
    assert_eq!(names, ["accordion", "teddy bear"]);
    assert_eq!(groups[0].photos.len(), 2);
    assert_eq!(groups[1].photos.len(), 3);
    for g in &groups {
        assert_eq!(g.negatives(), 0, "{}: every Co-SOD photo holds the object", g.expression);
        for p in &g.photos {
            assert!(p.image.is_file());
            let Some(MaskSource::Png(png)) = &p.mask else { panic!("no png mask for {}", p.image.display()) };
            assert_eq!(png.file_stem(), p.image.file_stem());
            assert!(png.to_string_lossy().contains("/binary/"), "{}", png.display());
            let m = p.mask.as_ref().unwrap().load().unwrap();
            // the generator paints one 12 x 16 box of 255 into a 32 x 24 mask
            assert_eq!((m.width, m.height, m.area()), (32, 24, 192), "{}", png.display());
        }
    }
    let first = &groups[1].photos[0].image;
    assert!(first.ends_with("image/Teddy_Bear/teddy_bear_000.jpg"), "{}", first.display());
}

#[test]
fn negatives_come_one_to_one_from_other_groups_by_seed() {
    let groups = read_cosod(&coca()).unwrap();
    let a = with_negatives(&groups, 1);
    assert_eq!(a, with_negatives(&groups, 1));
    for (g, orig) in a.iter().zip(&groups) {
        assert_eq!(g.positives(), orig.photos.len());
        let own: Vec<&PathBuf> = orig.photos.iter().map(|p| &p.image).collect();
        let negs: Vec<&PathBuf> = g.photos.iter().filter(|p| p.mask.is_none()).map(|p| &p.image).collect();
        for n in &negs {
            assert!(!own.contains(n), "{}: own photo {} used as a negative", g.expression, n.display());
        }
        // accordion (2 positives) gets 2 of teddy bear's 3 photos; teddy bear (3) can only get accordion's 2
        assert_eq!(negs.len(), 2, "{}", g.expression);
    }
    let accordion_sets: std::collections::BTreeSet<Vec<PathBuf>> = (0..20)
        .map(|s| {
            with_negatives(&groups, s)[0].photos.iter().filter(|p| p.mask.is_none()).map(|p| p.image.clone()).collect()
        })
        .collect();
    assert!(accordion_sets.len() >= 2, "the seed does not change the negatives");
}

fn write_tree(root: &Path, image_dir: &str, mask_dir: &str, group: &str, stems: &[&str], masks: &[&str]) {
    std::fs::create_dir_all(root.join(image_dir).join(group)).unwrap();
    std::fs::create_dir_all(root.join(mask_dir).join(group)).unwrap();
    for s in stems {
        image::GrayImage::from_pixel(4, 3, image::Luma([90]))
            .save(root.join(image_dir).join(group).join(format!("{s}.jpg")))
            .unwrap();
    }
    for s in masks {
        let mut m = image::GrayImage::new(4, 3);
        m.put_pixel(1, 1, image::Luma([255]));
        m.put_pixel(2, 1, image::Luma([128])); // not above 128: background
        m.save(root.join(mask_dir).join(group).join(format!("{s}.png"))).unwrap();
    }
}

#[test]
fn other_releases_folder_names_are_accepted() {
    for (img, gt) in [("Image", "GroundTruth"), ("images", "gt"), ("img", "masks")] {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path(), img, gt, "baseball", &["a.1", "b"], &["a.1", "b"]);
        let groups = read_cosod(tmp.path()).unwrap();
        assert_eq!(groups.len(), 1, "{img}/{gt}");
        assert_eq!(groups[0].expression, "baseball");
        let m = groups[0].photos[0].mask.as_ref().unwrap().load().unwrap();
        assert_eq!(m.area(), 1, "{img}/{gt}: grey 128 is background, 255 foreground");
        assert!(m.get(1, 1) && !m.get(2, 1));
    }
}

#[test]
fn missing_ground_truth_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(tmp.path(), "image", "groundtruth", "cup", &["x", "y"], &["x"]);
    let err = format!("{:#}", read_cosod(tmp.path()).unwrap_err());
    assert!(
        err.contains("no ground truth for") && err.contains("y.jpg") && err.contains("groundtruth/cup/y.png"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    write_tree(tmp.path(), "image", "groundtruth", "cup", &["x"], &["x"]);
    std::fs::create_dir_all(tmp.path().join("image/pen")).unwrap();
    std::fs::copy(tmp.path().join("image/cup/x.jpg"), tmp.path().join("image/pen/x.jpg")).unwrap();
    let err = format!("{:#}", read_cosod(tmp.path()).unwrap_err());
    assert!(err.contains("group \"pen\"") && err.contains("groundtruth/pen"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("image/cup")).unwrap();
    let err = format!("{:#}", read_cosod(tmp.path()).unwrap_err());
    assert!(err.contains("no ground-truth folder") && err.contains(&tmp.path().display().to_string()), "{err}");
    let err = format!("{:#}", read_cosod(&tmp.path().join("missing")).unwrap_err());
    assert!(err.contains("no image folder") && err.contains("missing"), "{err}");
}

//! The synthetic data set, checked on the files it writes (not on the generator's own bookkeeping
//! alone): determinism, exact masks over the right colours, negatives without the referent, held-out
//! combinations, the reader, and the `photoseg synth` command.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use photoseg::synth::scene::{Texture, NONE};
use photoseg::synth::{
    self, dataset::AlbumFile, Color, Combo, Edge, Fill, Look, Manifest, Outline, Position, Size, SynthConfig,
    SynthDataset,
};

fn fixture_config() -> SynthConfig {
    SynthConfig {
        seed: 7,
        albums_train: 6,
        albums_val: 2,
        albums_heldout: 4,
        image_size: 96,
        photos_min: 5,
        photos_max: 9,
        ..SynthConfig::default()
    }
}

/// One data set shared by the tests of this file (generated once per run), in the default (varied,
/// non-square) look.
fn fixture() -> &'static (PathBuf, Manifest) {
    static FIXTURE: OnceLock<(PathBuf, Manifest)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synth-fixture");
        let manifest = synth::generate(&fixture_config(), &dir, |_, _| {}).expect("generate the fixture");
        (dir, manifest)
    })
}

fn classic_config() -> SynthConfig {
    SynthConfig {
        albums_train: 3,
        albums_val: 1,
        albums_heldout: 2,
        look: Look::Classic,
        square: true,
        ..fixture_config()
    }
}

/// A small set in the classic look with square photos.
fn classic_fixture() -> &'static (PathBuf, Manifest) {
    static FIXTURE: OnceLock<(PathBuf, Manifest)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synth-fixture-classic");
        let manifest = synth::generate(&classic_config(), &dir, |_, _| {}).expect("generate the classic fixture");
        (dir, manifest)
    })
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every album of the fixture: (split, album name, folder, parsed album.json).
fn albums() -> Vec<(String, String, PathBuf, AlbumFile)> {
    albums_of(fixture())
}

fn albums_of((dir, manifest): &(PathBuf, Manifest)) -> Vec<(String, String, PathBuf, AlbumFile)> {
    let mut out = Vec::new();
    for (split, names) in &manifest.splits {
        for name in names {
            let folder = dir.join(split).join(name);
            let text = fs::read_to_string(folder.join("album.json")).unwrap();
            let file: AlbumFile = serde_json::from_str(&text).unwrap();
            out.push((split.clone(), name.clone(), folder, file));
        }
    }
    out
}

/// The documented matching rule, re-implemented here: colour and shape equal, size equal when named,
/// and for a named position the centre within 1/3 of the width (left, right) or height (top, bottom)
/// from that edge ("yes"), beyond 0.45 ("no"), or in between ("ambiguous", never allowed).
#[derive(Debug, PartialEq)]
enum Verdict {
    Yes,
    No,
    Ambiguous,
}

fn verdict(e: &synth::ExpressionEntry, o: &synth::scene::Object, (w, h): (u32, u32)) -> Verdict {
    let (w, h) = (w as f32, h as f32);
    if o.color != e.color || o.shape != e.shape || e.size.is_some_and(|s| s != o.size) {
        return Verdict::No;
    }
    let Some(p) = e.position else {
        return Verdict::Yes;
    };
    let d = match p {
        Position::Left => o.center[0] / w,
        Position::Right => (w - o.center[0]) / w,
        Position::Top => o.center[1] / h,
        Position::Bottom => (h - o.center[1]) / h,
    };
    if d <= 1.0 / 3.0 {
        Verdict::Yes
    } else if d >= 0.45 {
        Verdict::No
    } else {
        Verdict::Ambiguous
    }
}

/// The colour name of a pixel, by hue (white: low saturation), with the boundaries halfway between
/// the documented hue ranges.
fn colour_name(p: [u8; 3]) -> Color {
    let c = p.map(f32::from);
    let (max, min) = (c[0].max(c[1]).max(c[2]), c[0].min(c[1]).min(c[2]));
    if max - min < 0.3 * max || max == 0.0 {
        return Color::White;
    }
    let d = max - min;
    let h = if max == c[0] {
        (c[1] - c[2]) / d
    } else if max == c[1] {
        2.0 + (c[2] - c[0]) / d
    } else {
        4.0 + (c[0] - c[1]) / d
    };
    match (h * 60.0).rem_euclid(360.0) {
        h if !(15.0..334.0).contains(&h) => Color::Red,
        h if h < 40.0 => Color::Orange,
        h if h < 80.0 => Color::Yellow,
        h if h < 180.0 => Color::Green,
        h if h < 253.0 => Color::Blue,
        _ => Color::Purple,
    }
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_other_photos() {
    let (dir, _) = fixture();
    let again = tempfile::tempdir().unwrap();
    synth::generate(&fixture_config(), again.path(), |_, _| {}).unwrap();
    let a = files(dir);
    let b = files(again.path());
    assert!(a.len() > 50, "fixture holds only {} files", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, bytes) in &a {
        assert!(bytes == &b[path], "{} differs between two runs with the same seed", path.display());
    }

    let other = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { seed: 8, ..fixture_config() };
    synth::generate(&cfg, other.path(), |_, _| {}).unwrap();
    let c = files(other.path());
    let photo = Path::new("train/album_0000/photo_000.png");
    assert_ne!(a[photo], c[photo], "seed 8 drew the same first photo as seed 7");
    let same_photos =
        a.iter().filter(|(p, bytes)| p.to_string_lossy().contains("photo_") && c.get(*p) == Some(bytes)).count();
    assert_eq!(same_photos, 0, "photos shared between seeds 7 and 8");
}

#[test]
fn an_album_does_not_depend_on_the_size_of_other_splits() {
    let (dir, _) = fixture();
    let small = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { albums_train: 2, albums_val: 0, albums_heldout: 1, ..fixture_config() };
    synth::generate(&cfg, small.path(), |_, _| {}).unwrap();
    for album in ["train/album_0001", "heldout/album_0000"] {
        let a = files(&dir.join(album));
        let b = files(&small.path().join(album));
        assert_eq!(a, b, "{album} changed with the number of albums");
    }
    // From the third album on: the same files as the larger set's, under the same names, and nothing else.
    let tail = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { albums_train: 1, albums_val: 0, albums_heldout: 2, first_album: 2, ..fixture_config() };
    let manifest = synth::generate(&cfg, tail.path(), |_, _| {}).unwrap();
    assert_eq!(manifest.splits["heldout"], ["album_0002", "album_0003"]);
    assert_eq!(manifest.splits["train"], ["album_0002"]);
    for album in ["train/album_0002", "heldout/album_0002", "heldout/album_0003"] {
        let a = files(&dir.join(album));
        assert!(!a.is_empty());
        assert_eq!(a, files(&tail.path().join(album)), "{album} differs from the larger set's");
    }
    assert!(!tail.path().join("heldout/album_0000").exists());
}

/// Checks every mask of a set against its scene: binary, non-empty, exactly the pixels whose centre
/// the target is the top-most object at (the scene's label map), over the target's colour.
fn check_masks(set: &(PathBuf, Manifest)) {
    let n = set.1.image_size;
    let (mut masks, mut occluded) = (0, 0);
    let (mut interior, mut interior_right) = (0usize, 0usize);
    for (split, name, folder, album) in albums_of(set) {
        for (k, e) in album.expressions.iter().enumerate() {
            for (photo, mask_rel) in &e.positives {
                let what = format!("{split}/{name}/{mask_rel} ({:?})", e.text);
                let scene = &album.scenes[photo];
                let t = scene.targets[k].expect("positive has a target");
                let target = &scene.objects[t];
                let (w, h) = scene.dimensions(n);
                let image = image::open(folder.join(photo)).unwrap().to_rgb8();
                let mask = image::open(folder.join(mask_rel)).unwrap().to_luma8();
                assert_eq!(mask.dimensions(), (w, h), "{what}");
                assert_eq!(image.dimensions(), (w, h), "{what}");
                // The mask is the label map re-rasterised from album.json, pixel for pixel.
                let (objects, labels) = scene.label_map(n);
                assert_eq!(objects[t].visible_pixels, target.visible_pixels, "{what}");
                assert_eq!(objects[t].area_pixels, target.area_pixels, "{what}");
                let on = |x: u32, y: u32| x < w && y < h && mask.get_pixel(x, y).0[0] == 255;
                let mut count = 0u32;
                let mut right = 0u32;
                for (x, y, m) in mask.enumerate_pixels() {
                    let label = labels[(y * w + x) as usize];
                    assert_eq!(m.0[0] == 255, label != NONE && usize::from(label) == t, "{what}: pixel ({x}, {y})");
                    match m.0[0] {
                        0 => continue,
                        255 => {}
                        v => panic!("{what}: mask value {v} is neither 0 nor 255"),
                    }
                    count += 1;
                    // Every mask pixel lies within the target's bounding circle.
                    let (dx, dy) = (x as f32 + 0.5 - target.center[0], y as f32 + 0.5 - target.center[1]);
                    assert!(
                        (dx * dx + dy * dy).sqrt() <= target.radius + 0.01,
                        "{what}: mask pixel ({x}, {y}) outside the target"
                    );
                    let colour = colour_name(image.get_pixel(x, y).0);
                    right += u32::from(colour == e.color);
                    // Interior: two pixels from the mask's edge (beyond outlines and soft edges).
                    let inside = (-2i32..=2).all(|a| {
                        (-2i32..=2).all(|b| {
                            let (px, py) = (x as i32 + a, y as i32 + b);
                            px >= 0 && py >= 0 && on(px as u32, py as u32)
                        })
                    });
                    if inside {
                        interior += 1;
                        interior_right += usize::from(colour == e.color);
                    }
                }
                assert!(count > 0, "{what}: empty mask");
                assert_eq!(count, target.visible_pixels, "{what}: mask size disagrees with the scene");
                // Outlines and soft edges are drawn in other colours over a thin shape's whole width;
                // otherwise most of the mask has the target's colour.
                let plain = scene.drawings.get(t).is_none_or(|d| d.outline == Outline::None && d.edge == Edge::Hard);
                assert!(
                    !plain || right as f32 >= 0.5 * count as f32,
                    "{what}: only {right} of {count} mask pixels look {:?}",
                    e.color
                );
                masks += 1;
                occluded += usize::from(target.visible_pixels < target.area_pixels);
            }
        }
    }
    assert!(masks > 20, "only {masks} masks");
    assert!(
        interior_right as f32 >= 0.95 * interior as f32,
        "{interior_right} of {interior} interior mask pixels have the target colour"
    );
    assert!(occluded > 0, "no target is ever partly hidden");
}

#[test]
fn masks_are_exact_binary_nonempty_and_over_the_target_colour() {
    check_masks(fixture());
}

#[test]
fn classic_masks_are_exact_too() {
    check_masks(classic_fixture());
}

#[test]
fn negatives_hold_no_referent_and_positives_exactly_one() {
    let n = fixture().1.image_size;
    let (mut positives, mut negatives) = (0usize, 0usize);
    for (split, name, _, album) in albums() {
        for (k, e) in album.expressions.iter().enumerate() {
            for photo in &album.photos {
                let scene = &album.scenes[photo];
                let verdicts: Vec<Verdict> = scene.objects.iter().map(|o| verdict(e, o, scene.dimensions(n))).collect();
                let what = format!("{split}/{name}/{photo} {:?}", e.text);
                assert!(!verdicts.contains(&Verdict::Ambiguous), "{what}: ambiguous object");
                let yes: Vec<usize> = (0..verdicts.len()).filter(|&i| verdicts[i] == Verdict::Yes).collect();
                // Hard distractors: objects sharing the colour or the shape that are not the referent.
                let hard = scene
                    .objects
                    .iter()
                    .zip(&verdicts)
                    .filter(|(o, v)| **v == Verdict::No && (o.color == e.color || o.shape == e.shape))
                    .count();
                assert!(hard >= 1, "{what}: no hard distractor");
                if e.negatives.contains(photo) {
                    assert!(yes.is_empty(), "{what}: negative photo holds {yes:?}");
                    negatives += 1;
                } else {
                    assert!(e.positives.contains_key(photo), "{what}: neither positive nor negative");
                    assert_eq!(yes, vec![scene.targets[k].unwrap()], "{what}");
                    positives += 1;
                }
            }
        }
    }
    let share = positives as f32 / (positives + negatives) as f32;
    assert!((0.35..=0.65).contains(&share), "positive share {share}");
}

#[test]
fn objects_stay_visible_inside_and_apart_from_their_colour() {
    let n = fixture().1.image_size;
    for (split, name, _, album) in albums() {
        for (photo, scene) in &album.scenes {
            let what = format!("{split}/{name}/{photo}");
            let (w, h) = scene.dimensions(n);
            for (i, o) in scene.objects.iter().enumerate() {
                assert!(o.area_pixels > 0, "{what}: object {i} has no area");
                assert!(2 * o.visible_pixels >= o.area_pixels, "{what}: object {i} mostly hidden");
                for (c, side) in o.center.into_iter().zip([w as f32, h as f32]) {
                    assert!(
                        c - o.radius >= -0.01 && c + o.radius <= side + 0.01,
                        "{what}: object {i} leaves the photo"
                    );
                }
                for (j, p) in scene.objects.iter().enumerate().skip(i + 1) {
                    let d = ((o.center[0] - p.center[0]).powi(2) + (o.center[1] - p.center[1]).powi(2)).sqrt();
                    assert!(
                        o.color != p.color || d >= o.radius + p.radius,
                        "{what}: objects {i} and {j} share a colour and overlap"
                    );
                }
            }
        }
    }
}

#[test]
fn positives_are_roughly_half_of_every_group() {
    for (split, name, _, album) in albums() {
        for e in &album.expressions {
            let (pos, all) = (e.positives.len(), album.photos.len());
            // 35-65 % rounded, at least one of each.
            let lo = ((all as f32 * 0.35).round() as usize).max(1);
            let hi = ((all as f32 * 0.65).round() as usize).min(all - 1);
            assert!((lo..=hi).contains(&pos), "{split}/{name} {:?}: {pos} of {all}", e.text);
        }
    }
}

/// The attribute words of an expression's text, parsed from the text alone.
fn words_of(text: &str) -> (Option<Color>, Option<&str>, Option<Size>, Option<&str>) {
    let words: Vec<&str> = text.split(' ').collect();
    let color = Color::ALL.into_iter().find(|c| words.contains(&c.word()));
    let shape = ["circle", "square", "triangle", "star", "ring", "cross"].into_iter().find(|s| words.contains(s));
    let size = if words.iter().any(|w| ["small", "little"].contains(w)) {
        Some(Size::Small)
    } else if words.iter().any(|w| ["large", "big"].contains(w)) {
        Some(Size::Large)
    } else {
        None
    };
    let position = ["left", "right", "top", "bottom"].into_iter().find(|p| words.contains(p));
    (color, shape, size, position)
}

#[test]
fn heldout_combinations_never_appear_in_training_and_are_all_heldout_asks_for() {
    let (_, manifest) = fixture();
    let held: BTreeSet<String> = manifest.heldout_combinations.iter().map(Combo::to_string).collect();
    assert_eq!(held.len(), 6);
    let vocabulary: BTreeSet<&str> = manifest.vocabulary.iter().map(String::as_str).collect();
    let mut heldout_groups = 0;
    for (split, name, _, album) in albums() {
        for e in &album.expressions {
            let (color, shape, size, position) = words_of(&e.text);
            let (color, shape) = (color.expect(&e.text), shape.expect(&e.text));
            // The text says what the fields say.
            assert_eq!((color, shape), (e.color, e.shape.word()), "{}", e.text);
            assert_eq!(size, e.size, "{}", e.text);
            assert_eq!(position, e.position.map(|p| format!("{p:?}").to_lowercase()).as_deref());
            assert!(e.text.split(' ').all(|w| vocabulary.contains(w)), "{}", e.text);
            let combo = format!("{} {shape}", color.word());
            if split == "heldout" {
                assert!(held.contains(&combo), "{split}/{name}: {:?} is not held out", e.text);
                heldout_groups += 1;
            } else {
                assert!(!held.contains(&combo), "{split}/{name}: asks for held-out {combo}");
            }
        }
        if split != "heldout" {
            for (photo, scene) in &album.scenes {
                for o in &scene.objects {
                    let combo = format!("{} {}", o.color.word(), o.shape.word());
                    assert!(!held.contains(&combo), "{split}/{name}/{photo} draws held-out {combo}");
                }
            }
        }
    }
    assert!(heldout_groups >= 4);
}

#[test]
fn reader_returns_what_was_written() {
    let (dir, manifest) = fixture();
    let ds = SynthDataset::open(dir).unwrap();
    assert_eq!(ds.manifest(), manifest);
    assert_eq!(ds.split_names(), vec!["heldout", "train", "val"]);
    let on_disk = files(dir);
    let masks_on_disk = on_disk.keys().filter(|p| p.to_string_lossy().contains("/masks/")).count();
    let mut masks_read = 0;
    for split in ["train", "val", "heldout"] {
        let groups = ds.split(split).unwrap();
        let counts = manifest.counts[split];
        assert_eq!(groups.len(), counts.groups, "{split}");
        assert!(!groups.is_empty());
        let mut albums = BTreeSet::new();
        for g in &groups {
            albums.insert(g.album.clone());
            assert!(g.album.starts_with(dir.join(split)), "{}", g.album.display());
            let album: AlbumFile =
                serde_json::from_str(&fs::read_to_string(g.album.join("album.json")).unwrap()).unwrap();
            assert_eq!(g.photos.len(), album.photos.len());
            let entry = album.expressions.iter().find(|e| e.text == g.expression).unwrap();
            assert_eq!(g.positives(), entry.positives.len());
            assert!(g.positives() >= 1 && g.positives() < g.photos.len());
            for p in &g.photos {
                assert!(p.path.is_file(), "{}", p.path.display());
                assert_eq!(p.path.parent(), Some(g.album.as_path()), "photos lie directly in the album");
                if let Some(m) = &p.mask {
                    assert!(m.is_file(), "{}", m.display());
                    assert_eq!(m.parent().unwrap().file_name().unwrap(), "masks");
                    masks_read += 1;
                }
            }
        }
        assert_eq!(albums.len(), counts.albums, "{split}");
    }
    assert_eq!(masks_read, masks_on_disk, "every mask file is some group's mask");
    let err = ds.split("test").unwrap_err().to_string();
    assert!(err.contains("no split \"test\""), "{err}");
}

#[test]
fn reader_refuses_incomplete_and_foreign_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, manifest) = fixture();
    let mut m = manifest.clone();
    m.complete = false;
    fs::write(tmp.path().join("dataset.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let err = format!("{:#}", SynthDataset::open(tmp.path()).unwrap_err());
    assert!(err.contains("incomplete"), "{err}");
    m.complete = true;
    m.format = "photoseg-synth/99".into();
    fs::write(tmp.path().join("dataset.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let err = format!("{:#}", SynthDataset::open(tmp.path()).unwrap_err());
    assert!(err.contains("photoseg-synth/99"), "{err}");
    assert!(SynthDataset::open(dir.join("train")).is_err());
}

#[test]
fn photos_vary_in_size_background_and_drawing() {
    // Objects cover part of the photo, not all of it; photo sizes, background families, drawing
    // styles and camera effects all vary, and some photos are sparse.
    let n = fixture().1.image_size;
    let (mut families, mut edges, mut fills, mut outlines) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let (mut photos, mut non_square, mut sparse, mut squashed, mut jpeg, mut blurred) = (0, 0, 0, 0, 0, 0);
    for (split, name, folder, album) in albums() {
        for photo in &album.photos {
            let what = format!("{split}/{name}/{photo}");
            let image = image::open(folder.join(photo)).unwrap().to_rgb8();
            let scene = &album.scenes[photo];
            let (w, h) = scene.dimensions(n);
            assert_eq!(image.dimensions(), (w, h), "{what}");
            let ratio = w as f32 / h as f32;
            assert!((0.74..=1.34).contains(&ratio), "{what}: {w} x {h}");
            assert!((w * h) as f32 > 0.95 * (n * n) as f32 && ((w * h) as f32) < 1.05 * (n * n) as f32, "{what}");
            photos += 1;
            non_square += usize::from(w != h);
            sparse += usize::from(scene.objects.len() < 3);
            families.insert(scene.background.family());
            assert_eq!(scene.drawings.len(), scene.objects.len(), "{what}");
            for d in &scene.drawings {
                edges.insert(format!("{:?}", d.edge));
                fills.insert(format!("{:?}", d.fill));
                outlines.insert(format!("{:?}", d.outline));
            }
            squashed += scene.objects.iter().filter(|o| o.squash < 1.0 || o.shear != 0.0).count();
            let effects = scene.effects.expect("the varied look records its effects");
            jpeg += usize::from(effects.jpeg.is_some());
            blurred += usize::from(effects.blur > 0.0);
            let free = |x: u32, y: u32| {
                let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
                !scene.objects.iter().any(|o| o.contains(x, y))
            };
            let background = image.enumerate_pixels().filter(|(x, y, _)| free(*x, *y)).count();
            assert!(background > image.len() / 3 / 6, "{what}: objects cover almost everything");
        }
    }
    let all_families: BTreeSet<&str> = Texture::ALL.iter().map(|t| t.family()).collect();
    assert_eq!(families, all_families, "background families drawn");
    assert_eq!(edges.len(), [Edge::Hard, Edge::Soft].len(), "{edges:?}");
    assert_eq!(fills.len(), [Fill::Flat, Fill::Linear, Fill::Shaded].len(), "{fills:?}");
    assert_eq!(outlines.len(), [Outline::None, Outline::Dark, Outline::Light].len(), "{outlines:?}");
    assert!(non_square * 2 > photos, "{non_square} of {photos} photos not square");
    assert!(sparse > 0 && sparse * 3 < photos, "{sparse} of {photos} photos sparse");
    assert!(squashed > photos, "only {squashed} squashed or sheared objects in {photos} photos");
    assert!(jpeg > photos / 3 && jpeg < photos, "{jpeg} of {photos} photos JPEG-compressed");
    assert!(blurred > 0 && blurred < photos / 2, "{blurred} of {photos} photos blurred");
}

#[test]
fn classic_look_keeps_square_photos_and_its_older_records() {
    let set = classic_fixture();
    assert_eq!((set.1.config.look, set.1.config.square), (Look::Classic, true));
    for (split, name, folder, album) in albums_of(set) {
        let text = fs::read_to_string(folder.join("album.json")).unwrap();
        for field in ["\"size\": [", "\"drawings\"", "\"effects\"", "\"squash\"", "\"shear\""] {
            assert!(!text.contains(field), "{split}/{name}: classic album.json holds {field}");
        }
        for (photo, scene) in &album.scenes {
            assert!(scene.objects.len() >= 3, "{split}/{name}/{photo}");
            assert!(scene.background.family() == "gradient");
            let image = image::open(folder.join(photo)).unwrap();
            assert_eq!((image.width(), image.height()), (set.1.image_size, set.1.image_size));
        }
    }
}

#[test]
fn older_records_load_with_the_older_geometry() {
    let json = r#"{"background": "mottle", "objects": [{"shape": "square", "color": "red", "size": "large",
        "center": [40.0, 40.0], "radius": 20.0, "rotation": 0.0, "area_pixels": 0, "visible_pixels": 0}],
        "targets": [0]}"#;
    let scene: synth::SceneEntry = serde_json::from_str(json).unwrap();
    assert_eq!((scene.objects[0].squash, scene.objects[0].shear), (1.0, 0.0));
    assert_eq!(scene.dimensions(96), (96, 96));
    assert!(scene.drawings.is_empty() && scene.effects.is_none());
    let (objects, labels) = scene.label_map(96);
    assert_eq!(labels.len(), 96 * 96);
    // The square of circumradius 20 has sides 2 * 20 / sqrt 2 = 28.3 pixels: 28 x 28 pixel centres.
    assert_eq!(objects[0].area_pixels, 28 * 28);
    assert_eq!(serde_json::to_value(&scene.objects[0]).unwrap().get("squash"), None);
}

fn photoseg(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_photoseg")).args(args).output().unwrap()
}

#[test]
fn cli_writes_a_set_replaces_its_own_and_refuses_foreign_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let out_s = out.to_str().unwrap();
    let common = ["--size", "64", "--photos-min", "3", "--photos-max", "4", "--val-albums", "0"];
    let run = |albums: &str| {
        let mut args = vec!["synth", "--out", out_s, "--seed", "1", "--train-albums", albums];
        args.extend(["--heldout-albums", "1"]);
        args.extend(common);
        photoseg(&args)
    };
    let first = run("3");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("wrote"));
    assert!(out.join("train/album_0002/album.json").is_file());
    let ds = SynthDataset::open(&out).unwrap();
    assert_eq!(ds.manifest().splits["train"].len(), 3);

    // Regenerating into its own data set replaces it, leaving no stale album behind.
    let second = run("2");
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(!out.join("train/album_0002").exists(), "stale album left behind");
    assert_eq!(SynthDataset::open(&out).unwrap().manifest().splits["train"].len(), 2);

    // A folder holding anything else is refused and left untouched.
    let foreign = tmp.path().join("holiday photos");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("beach.jpg"), b"not really a jpeg").unwrap();
    let refused = photoseg(&["synth", "--out", foreign.to_str().unwrap(), "--size", "64"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refusing to write into"), "{stderr}");
    assert!(stderr.contains("holiday photos"), "the message names the folder: {stderr}");
    assert_eq!(fs::read_dir(&foreign).unwrap().count(), 1, "the foreign folder was changed");

    // Out-of-range options are refused with a message naming them.
    let bad = photoseg(&["synth", "--out", tmp.path().join("x").to_str().unwrap(), "--size", "8"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("image size"));
}

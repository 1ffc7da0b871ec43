//! The synthetic data set, checked on the files it writes (not on the generator's own bookkeeping
//! alone): determinism, exact masks over the right colours, negatives without the referent, held-out
//! combinations, the reader, and the `photoseg synth` command.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use photoseg::synth::{self, dataset::AlbumFile, Color, Combo, Manifest, Position, Size, SynthConfig, SynthDataset};

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

/// One data set shared by the tests of this file (generated once per run).
fn fixture() -> &'static (PathBuf, Manifest) {
    static FIXTURE: OnceLock<(PathBuf, Manifest)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synth-fixture");
        let manifest = synth::generate(&fixture_config(), &dir, |_, _| {}).expect("generate the fixture");
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
    let (dir, manifest) = fixture();
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
/// and for a named position the centre within 1/3 of the side from that edge ("yes"), beyond 0.45
/// ("no"), or in between ("ambiguous", never allowed).
#[derive(Debug, PartialEq)]
enum Verdict {
    Yes,
    No,
    Ambiguous,
}

fn verdict(e: &synth::ExpressionEntry, o: &synth::scene::Object, side: f32) -> Verdict {
    if o.color != e.color || o.shape != e.shape || e.size.is_some_and(|s| s != o.size) {
        return Verdict::No;
    }
    let Some(p) = e.position else {
        return Verdict::Yes;
    };
    let d = match p {
        Position::Left => o.center[0] / side,
        Position::Right => (side - o.center[0]) / side,
        Position::Top => o.center[1] / side,
        Position::Bottom => (side - o.center[1]) / side,
    };
    if d <= 1.0 / 3.0 {
        Verdict::Yes
    } else if d >= 0.45 {
        Verdict::No
    } else {
        Verdict::Ambiguous
    }
}

fn nearest_palette(p: [u8; 3]) -> Color {
    *Color::ALL
        .iter()
        .min_by_key(|c| {
            let q = c.rgb();
            (0..3).map(|i| (i32::from(p[i]) - i32::from(q[i])).pow(2)).sum::<i32>()
        })
        .unwrap()
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

#[test]
fn masks_are_exact_binary_nonempty_and_over_the_target_colour() {
    let side = fixture().1.image_size;
    let (mut masks, mut occluded) = (0, 0);
    let (mut interior, mut interior_right) = (0usize, 0usize);
    for (split, name, folder, album) in albums() {
        for (k, e) in album.expressions.iter().enumerate() {
            for (photo, mask_rel) in &e.positives {
                let what = format!("{split}/{name}/{mask_rel} ({:?})", e.text);
                let scene = &album.scenes[photo];
                let target = &scene.objects[scene.targets[k].expect("positive has a target")];
                let image = image::open(folder.join(photo)).unwrap().to_rgb8();
                let mask = image::open(folder.join(mask_rel)).unwrap().to_luma8();
                assert_eq!(mask.dimensions(), (side, side), "{what}");
                assert_eq!(image.dimensions(), (side, side), "{what}");
                let on = |x: u32, y: u32| x < side && y < side && mask.get_pixel(x, y).0[0] == 255;
                let mut count = 0u32;
                let mut right = 0u32;
                for (x, y, m) in mask.enumerate_pixels() {
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
                    let colour = nearest_palette(image.get_pixel(x, y).0);
                    right += u32::from(colour == e.color);
                    let inside = x > 0
                        && y > 0
                        && (-1i32..=1).all(|a| (-1i32..=1).all(|b| on((x as i32 + a) as u32, (y as i32 + b) as u32)));
                    if inside {
                        interior += 1;
                        interior_right += usize::from(colour == e.color);
                    }
                }
                assert!(count > 0, "{what}: empty mask");
                assert_eq!(count, target.visible_pixels, "{what}: mask size disagrees with the scene");
                assert!(
                    right as f32 >= 0.7 * count as f32,
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
        interior_right as f32 >= 0.97 * interior as f32,
        "{interior_right} of {interior} interior mask pixels have the target colour"
    );
    assert!(occluded > 0, "no target is ever partly hidden");
}

#[test]
fn negatives_hold_no_referent_and_positives_exactly_one() {
    let side = fixture().1.image_size as f32;
    let (mut positives, mut negatives) = (0usize, 0usize);
    for (split, name, _, album) in albums() {
        for (k, e) in album.expressions.iter().enumerate() {
            for photo in &album.photos {
                let scene = &album.scenes[photo];
                let verdicts: Vec<Verdict> = scene.objects.iter().map(|o| verdict(e, o, side)).collect();
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
    let side = fixture().1.image_size as f32;
    for (split, name, _, album) in albums() {
        for (photo, scene) in &album.scenes {
            let what = format!("{split}/{name}/{photo}");
            for (i, o) in scene.objects.iter().enumerate() {
                assert!(o.area_pixels > 0, "{what}: object {i} has no area");
                assert!(2 * o.visible_pixels >= o.area_pixels, "{what}: object {i} mostly hidden");
                for c in o.center {
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
fn photos_look_like_photos() {
    // Backgrounds are textured, not flat (sensor grain alone has a variance of about 4); objects
    // cover part of the photo, not all of it.
    for (split, name, folder, album) in albums() {
        for photo in &album.photos {
            let what = format!("{split}/{name}/{photo}");
            let image = image::open(folder.join(photo)).unwrap().to_rgb8();
            let scene = &album.scenes[photo];
            assert!(scene.objects.len() >= 3, "{what}: {} objects", scene.objects.len());
            let free = |x: u32, y: u32| {
                let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
                !scene.objects.iter().any(|o| o.contains(x, y))
            };
            let background: Vec<f32> = image
                .enumerate_pixels()
                .filter(|(x, y, _)| free(*x, *y))
                .map(|(_, _, p)| p.0.iter().map(|&v| f32::from(v)).sum::<f32>() / 3.0)
                .collect();
            assert!(background.len() > image.len() / 6, "{what}: objects cover almost everything");
            let mean = background.iter().sum::<f32>() / background.len() as f32;
            let var = background.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / background.len() as f32;
            assert!(var > 8.0, "{what}: flat background (variance {var})");
        }
    }
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

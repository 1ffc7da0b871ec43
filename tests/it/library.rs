//! The model-free photo library against real SQLite files and real folder trees in temp dirs.
//!
//! A fake featurizer (mean colour of the image) stands in for the network and counts its calls,
//! which is how "skipped" and "re-featurized" are checked.
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

use image::{Rgb, RgbImage};
use photoseg::library::cache::{Cache, NewPhoto};
use photoseg::library::config::{Config, RootAdded};
use photoseg::library::indexer::{apply_event, index, Featurizer, IndexReport, Progress};
use photoseg::library::photo::{self, PhotoErrorKind};
use photoseg::library::scan::scan;
use photoseg::library::watch::{LibraryEvent, LibraryWatcher};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Returns the mean colour as 3 bytes; counts calls; optionally sleeps to look like a network.
struct FakeFeaturizer {
    backbone: String,
    calls: usize,
    sleep: Duration,
}

impl FakeFeaturizer {
    fn new(backbone: &str) -> Self {
        FakeFeaturizer { backbone: backbone.into(), calls: 0, sleep: Duration::ZERO }
    }
}

impl Featurizer for FakeFeaturizer {
    fn backbone_id(&self) -> String {
        self.backbone.clone()
    }

    fn featurize(&mut self, img: &RgbImage) -> anyhow::Result<Vec<u8>> {
        self.calls += 1;
        std::thread::sleep(self.sleep);
        let n = u64::from(img.width()) * u64::from(img.height());
        let mut sum = [0u64; 3];
        for p in img.pixels() {
            for c in 0..3 {
                sum[c] += u64::from(p[c]);
            }
        }
        Ok(sum.iter().map(|s| (s / n) as u8).collect())
    }
}

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

/// Writes a small photo; the format follows the extension.
fn put(path: &Path, rgb: [u8; 3]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    solid(8, 6, rgb).save(path).unwrap();
}

fn run_index(cache: &Cache, roots: &[PathBuf], f: &mut FakeFeaturizer) -> IndexReport {
    index(cache, roots, f, 4, &mut |_| {}).unwrap()
}

fn reason_of<'a>(report: &'a IndexReport, path: &Path) -> &'a str {
    report
        .problems
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("no problem reported for {}: {:?}", path.display(), report.problems))
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A 60-byte PNG whose header declares `w` x `h` RGB pixels: a decompression bomb's header.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG with noise (so it does not compress to nothing), cut in half.
fn truncated_png() -> Vec<u8> {
    let img = RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (x ^ y) as u8]));
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes.truncate(bytes.len() / 2);
    bytes
}

/// Whether this process ignores file permissions (root, or CAP_DAC_OVERRIDE in a container).
fn permissions_ignored(locked_file: &Path) -> bool {
    File::open(locked_file).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Cache

#[test]
fn migrations_applied_once_and_wal_on() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sub/cache.sqlite3");
    {
        let cache = Cache::open(&db).unwrap();
        assert_eq!(cache.schema_version().unwrap(), 1);
        assert_eq!(cache.journal_mode().unwrap(), "wal");
        cache.integrity_check().unwrap();
        let id = cache.upsert_photo(&new_photo(Path::new("/p/a/x.jpg"), "h1")).unwrap();
        cache.put_features(id, "b", b"f").unwrap();
    }
    // Reopening applies nothing twice and keeps the data.
    let cache = Cache::open(&db).unwrap();
    assert_eq!(cache.schema_version().unwrap(), 1);
    assert_eq!(cache.stats().unwrap().photos, 1);
    drop(cache);

    // A cache from a newer photoseg is refused, not "migrated".
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = format!("{:#}", Cache::open(&db).unwrap_err());
    assert!(err.contains("schema version 99") && err.contains("newer photoseg"), "{err}");
}

fn new_photo<'a>(path: &'a Path, sha: &'a str) -> NewPhoto<'a> {
    NewPhoto { path, size: 10, mtime_ns: 1, sha256: sha, width: 8, height: 6 }
}

#[test]
fn cache_api_round_trip() {
    let cache = Cache::open_in_memory().unwrap();
    let a = Path::new("/lib/trip/a.jpg");
    let b = Path::new("/lib/trip/b.jpg");
    let weird = PathBuf::from(OsStr::from_bytes(b"/lib/caf\xe9/c.jpg"));
    let (ia, ib, ic) = cache
        .write_batch(|c| {
            Ok((
                c.upsert_photo(&new_photo(a, "ha"))?,
                c.upsert_photo(&new_photo(b, "hb"))?,
                c.upsert_photo(&new_photo(&weird, "hc"))?,
            ))
        })
        .unwrap();
    cache.put_features(ia, "swin", &[1, 2, 3]).unwrap();
    cache.put_features(ia, "other", &[9]).unwrap();
    cache.put_features(ic, "swin", &[7]).unwrap();

    // Backbones never see each other's features.
    assert_eq!(cache.features(ia, "swin").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(cache.features(ia, "other").unwrap(), Some(vec![9]));
    assert_eq!(cache.features(ib, "swin").unwrap(), None);
    assert_eq!(cache.features(ic, "other").unwrap(), None);

    // Albums and non-UTF-8 paths round-trip as bytes.
    let albums = cache.albums().unwrap();
    let paths: Vec<_> = albums.iter().map(|a| a.path.clone()).collect();
    assert_eq!(paths, vec![PathBuf::from(OsStr::from_bytes(b"/lib/caf\xe9")), PathBuf::from("/lib/trip")]);
    let trip = cache.album_id(Path::new("/lib/trip")).unwrap().unwrap();
    let photos = cache.photos_in_album(trip, "swin").unwrap();
    assert_eq!(photos.len(), 2);
    assert_eq!((photos[0].id, photos[0].features.as_deref()), (ia, Some(&[1u8, 2, 3][..])));
    assert_eq!((photos[1].id, photos[1].features.as_deref()), (ib, None));
    assert_eq!(cache.photo_state(&weird).unwrap().unwrap().sha256, "hc");

    // Same bytes (hash) keep features; new bytes drop them for every backbone.
    assert_eq!(cache.upsert_photo(&new_photo(a, "ha")).unwrap(), ia);
    assert!(cache.has_features(ia, "swin").unwrap());
    assert!(cache.touch_photo(a, 11, 2).unwrap());
    assert_eq!(cache.photo_state(a).unwrap().unwrap().mtime_ns, 2);
    assert_eq!(cache.upsert_photo(&new_photo(a, "ha2")).unwrap(), ia);
    assert!(!cache.has_features(ia, "swin").unwrap() && !cache.has_features(ia, "other").unwrap());
    cache.put_features(ia, "swin", &[4]).unwrap();

    // A file rename keeps the row and features; a folder rename moves every photo and album.
    assert_eq!(cache.rename_path(a, Path::new("/lib/trip/renamed.jpg")).unwrap(), 1);
    assert_eq!(cache.photo_id(Path::new("/lib/trip/renamed.jpg")).unwrap(), Some(ia));
    assert_eq!(cache.photo_id(a).unwrap(), None);
    assert_eq!(cache.rename_path(Path::new("/lib/trip"), Path::new("/lib/2024/trip")).unwrap(), 2);
    assert_eq!(cache.photo_id(Path::new("/lib/2024/trip/renamed.jpg")).unwrap(), Some(ia));
    assert_eq!(cache.features(ia, "swin").unwrap(), Some(vec![4]));
    assert_eq!(cache.album_id(Path::new("/lib/trip")).unwrap(), None);
    assert!(cache.album_id(Path::new("/lib/2024/trip")).unwrap().is_some());
    assert_eq!(cache.rename_path(Path::new("/nowhere"), Path::new("/else")).unwrap(), 0);

    let stats = cache.stats().unwrap();
    assert_eq!((stats.photos, stats.albums, stats.features, stats.feature_bytes), (3, 2, 2, 2));

    // Removing: one photo, then a folder; empty albums go with their last photo; features cascade.
    assert!(cache.remove_photo(&weird).unwrap());
    assert!(!cache.remove_photo(&weird).unwrap());
    assert_eq!(cache.remove_under(Path::new("/lib/2024/")).unwrap(), 2);
    let stats = cache.stats().unwrap();
    assert_eq!((stats.photos, stats.albums, stats.features), (0, 0, 0));
    cache.integrity_check().unwrap();
}

#[test]
fn remove_under_does_not_touch_sibling_prefixes() {
    let cache = Cache::open_in_memory().unwrap();
    for p in ["/l/a/x.jpg", "/l/a/sub/y.jpg", "/l/a-b/z.jpg", "/l/ab/w.jpg", "/l/a.jpg"] {
        cache.upsert_photo(&new_photo(Path::new(p), p)).unwrap();
    }
    assert_eq!(cache.remove_under(Path::new("/l/a")).unwrap(), 2);
    assert_eq!(cache.stats().unwrap().photos, 3);
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[test]
fn decodes_every_accepted_format_by_content() {
    let dir = TempDir::new().unwrap();
    for ext in ["jpg", "png", "webp", "tif", "gif"] {
        let path = dir.path().join(format!("x.{ext}"));
        put(&path, [200, 10, 10]);
        let img = photo::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.dimensions(), (8, 6), "{ext}");
        assert!(img.get_pixel(3, 3)[0] > 150, "{ext}");
    }
    // A PNG misnamed .jpg is still a PNG: the content decides.
    let misnamed = dir.path().join("png-really.jpg");
    fs::copy(dir.path().join("x.png"), &misnamed).unwrap();
    assert_eq!(photo::load(&misnamed).unwrap().dimensions(), (8, 6));
}

#[test]
fn exif_orientation_is_applied() {
    // 32 x 16, left half red, right half blue, EXIF orientation 6 ("rotate 90 clockwise").
    let img = RgbImage::from_fn(32, 16, |x, _| if x < 16 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
    let mut jpeg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut with_exif = jpeg[..2].to_vec();
    with_exif.extend_from_slice(&[0xFF, 0xE1]);
    with_exif.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    with_exif.extend_from_slice(&app1);
    with_exif.extend_from_slice(&jpeg[2..]);

    let upright = photo::decode(&with_exif).unwrap();
    assert_eq!(upright.dimensions(), (16, 32));
    let top = upright.get_pixel(8, 4);
    let bottom = upright.get_pixel(8, 28);
    assert!(top[0] > 200 && top[2] < 60, "left edge goes to the top: {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
}

#[test]
fn bad_bytes_have_typed_reasons() {
    assert_eq!(photo::decode(b"").unwrap_err(), PhotoErrorKind::Empty);
    assert_eq!(photo::decode(b"hello, this is text\n").unwrap_err(), PhotoErrorKind::NotAnImage);
    let bomb = photo::decode(&png_bomb(20000, 20000)).unwrap_err();
    assert_eq!(bomb.to_string(), "image too large: 20000 x 20000 pixels exceeds the 64 MP limit");
    let cut = photo::decode(&truncated_png()).unwrap_err().to_string();
    assert!(cut.starts_with("truncated or corrupt image: "), "{cut}");
    // A 1x1 24-bit BMP written by hand (photoseg's image build has no BMP codec, by choice).
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&58u32.to_le_bytes()); // file size
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend_from_slice(&1i32.to_le_bytes());
    bmp.extend_from_slice(&1i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[3, 2, 1, 0]);
    let bmp = photo::decode(&bmp).unwrap_err().to_string();
    assert!(bmp.starts_with("unsupported image format: bmp"), "{bmp}");
    // A wide panorama under 64 MP passes the size check (the header alone is not enough to
    // decode, so it fails later, as corrupt, not as too large).
    let pano = photo::decode(&png_bomb(40000, 1500)).unwrap_err();
    assert!(!matches!(pano, PhotoErrorKind::TooLarge { .. }), "{pano}");
}

#[test]
fn photo_errors_name_the_path() {
    let dir = TempDir::new().unwrap();
    let empty = dir.path().join("empty.jpg");
    File::create(&empty).unwrap();
    let err = photo::load(&empty).unwrap_err();
    assert_eq!(err.reason(), "empty file");
    assert_eq!(err.to_string(), format!("cannot use {}: empty file", empty.display()));
    let missing = photo::load(&dir.path().join("missing.jpg")).unwrap_err();
    assert!(missing.reason().starts_with("cannot read: "), "{}", missing.reason());
}

// ---------------------------------------------------------------------------------------------
// Scanning and indexing

#[test]
fn scan_finds_albums_and_skips_hidden() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().canonicalize().unwrap();
    put(&root.join("top.jpg"), [1, 1, 1]);
    put(&root.join("2024/Trip/a.JPG"), [1, 1, 1]);
    put(&root.join("2024/Trip/b.jpeg"), [1, 1, 1]);
    fs::write(root.join("2024/Trip/notes.txt"), "x").unwrap();
    fs::write(root.join("2024/Trip/._a.JPG"), "resource fork").unwrap();
    put(&root.join(".thumbnails/t.png"), [1, 1, 1]);
    put(&root.join("2024/empty-of-photos/../Other/c.webp"), [1, 1, 1]);
    let report = scan(std::slice::from_ref(&root));
    let albums: Vec<_> = report.albums.iter().map(|a| (a.path.clone(), a.photos.len())).collect();
    assert_eq!(albums, vec![(root.clone(), 1), (root.join("2024/Other"), 1), (root.join("2024/Trip"), 2)]);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn reindex_skips_current_and_follows_changes() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("photos");
    let db = dir.path().join("cache.sqlite3");
    for i in 0..6 {
        put(&root.join(format!("album{}/p{i}.png", i % 2)), [i * 40, 0, 0]);
    }
    let cache = Cache::open(&db).unwrap();
    let mut f = FakeFeaturizer::new("fake-1");
    let mut seen = Vec::new();
    let report = index(&cache, std::slice::from_ref(&root), &mut f, 4, &mut |p: Progress| seen.push(p)).unwrap();
    assert_eq!((report.albums, report.photos, report.featurized, f.calls), (2, 6, 6, 6));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(seen.iter().map(|p| (p.done, p.total)).collect::<Vec<_>>(), (1..=6).map(|d| (d, 6)).collect::<Vec<_>>());

    // Nothing changed: nothing read.
    let report = run_index(&cache, std::slice::from_ref(&root), &mut f);
    assert_eq!((report.unchanged, report.featurized, f.calls), (6, 0, 6));

    let root = root.canonicalize().unwrap();
    let p0 = root.join("album0/p0.png");
    let p2 = root.join("album0/p2.png");
    let p4 = root.join("album0/p4.png");
    let id2 = cache.photo_id(&p2).unwrap().unwrap();

    // p0: new content and mtime -> featurized again, with the new colour.
    put(&p0, [0, 255, 0]);
    set_mtime(&p0, SystemTime::now() + Duration::from_secs(10));
    // p2: same bytes, new mtime -> metadata only.
    set_mtime(&p2, SystemTime::now() + Duration::from_secs(20));
    // p4: renamed -> same row, features kept, not featurized.
    let p4_moved = root.join("album1/moved.png");
    fs::rename(&p4, &p4_moved).unwrap();
    let id4 = cache.photo_id(&p4).unwrap().unwrap();
    // album1/p1.png: deleted -> forgotten.
    fs::remove_file(root.join("album1/p1.png")).unwrap();

    let report = run_index(&cache, std::slice::from_ref(&root), &mut f);
    assert_eq!(f.calls, 7, "{report:?}");
    assert_eq!((report.featurized, report.touched, report.renamed, report.removed), (1, 1, 1, 1), "{report:?}");
    let id0 = cache.photo_id(&p0).unwrap().unwrap();
    assert_eq!(cache.features(id0, "fake-1").unwrap(), Some(vec![0, 255, 0]));
    assert_eq!(cache.photo_id(&p2).unwrap(), Some(id2));
    assert_eq!(cache.photo_id(&p4_moved).unwrap(), Some(id4));
    assert_eq!(cache.features(id4, "fake-1").unwrap(), Some(vec![160, 0, 0]));
    assert_eq!(cache.photo_id(&root.join("album1/p1.png")).unwrap(), None);
    assert_eq!(cache.stats().unwrap().photos, 5);

    // And now everything is current again.
    let report = run_index(&cache, std::slice::from_ref(&root), &mut f);
    assert_eq!((report.unchanged, f.calls), (5, 7));
}

#[test]
fn backbones_are_never_mixed() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("photos");
    put(&root.join("a/x.png"), [10, 20, 30]);
    put(&root.join("a/y.png"), [40, 50, 60]);
    let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
    let mut old = FakeFeaturizer::new("model-v1");
    run_index(&cache, std::slice::from_ref(&root), &mut old);
    // A new model finds no features of its own and computes them all.
    let mut new = FakeFeaturizer::new("model-v2");
    let report = run_index(&cache, std::slice::from_ref(&root), &mut new);
    assert_eq!((new.calls, report.featurized), (2, 2));
    let album = cache.albums().unwrap()[0].id;
    for backbone in ["model-v1", "model-v2"] {
        let photos = cache.photos_in_album(album, backbone).unwrap();
        assert!(photos.iter().all(|p| p.features.is_some()), "{backbone}");
    }
    assert!(cache.photos_in_album(album, "model-v3").unwrap().iter().all(|p| p.features.is_none()));
    assert_eq!(cache.stats().unwrap().features, 4);
}

#[test]
fn bad_files_are_reported_and_the_rest_indexed() {
    let dir = TempDir::new().unwrap();
    fs::create_dir(dir.path().join("photos")).unwrap();
    let root = dir.path().join("photos").canonicalize().unwrap();
    let album = root.join("album");
    put(&album.join("good.jpg"), [100, 100, 100]);
    File::create(album.join("empty.jpg")).unwrap();
    fs::write(album.join("cut.png"), truncated_png()).unwrap();
    fs::write(album.join("text.jpg"), "not a photo at all\n").unwrap();
    fs::write(album.join("bomb.png"), png_bomb(20000, 20000)).unwrap();
    let weird = album.join(OsStr::from_bytes(b"caf\xe9 \xff.png"));
    put(&weird, [1, 2, 3]);
    let locked = album.join("locked.png");
    put(&locked, [5, 5, 5]);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let root_ignores_permissions = permissions_ignored(&locked);
    // A folder linking back to its parent, and two links pointing at each other.
    symlink("..", album.join("loop")).unwrap();
    symlink(album.join("pong.jpg"), album.join("ping.jpg")).unwrap();
    symlink(album.join("ping.jpg"), album.join("pong.jpg")).unwrap();
    symlink(album.join("gone.jpg"), album.join("dangling.jpg")).unwrap();

    let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
    let mut f = FakeFeaturizer::new("fake");
    let report = run_index(&cache, std::slice::from_ref(&root), &mut f);

    assert_eq!(reason_of(&report, &album.join("empty.jpg")), "empty file");
    assert!(reason_of(&report, &album.join("cut.png")).starts_with("truncated or corrupt image: "));
    assert_eq!(reason_of(&report, &album.join("text.jpg")), "not an image");
    assert_eq!(
        reason_of(&report, &album.join("bomb.png")),
        "image too large: 20000 x 20000 pixels exceeds the 64 MP limit"
    );
    assert_eq!(
        reason_of(&report, &album.join("loop")),
        format!("symbolic link loop: leads back to {}", root.display())
    );
    assert_eq!(reason_of(&report, &album.join("ping.jpg")), "symbolic link loop");
    assert_eq!(reason_of(&report, &album.join("pong.jpg")), "symbolic link loop");
    assert!(reason_of(&report, &album.join("dangling.jpg")).starts_with("broken symbolic link"));

    let mut expected = vec![album.join("good.jpg"), weird.clone()];
    if root_ignores_permissions {
        eprintln!(
            "note: running with permission checks off (root): the chmod 000 file is readable and must be indexed"
        );
        assert!(report.problems.iter().all(|(p, _)| *p != locked), "{:?}", report.problems);
        expected.push(locked.clone());
    } else {
        assert_eq!(reason_of(&report, &locked), "permission denied");
    }
    let indexed: Vec<PathBuf> = {
        let id = cache.album_id(&album).unwrap().unwrap();
        cache.photos_in_album(id, "fake").unwrap().into_iter().map(|p| p.path).collect()
    };
    expected.sort();
    assert_eq!(indexed, expected);
    assert_eq!(f.calls, expected.len());
    let wid = cache.photo_id(&weird).unwrap().unwrap();
    assert_eq!(cache.features(wid, "fake").unwrap(), Some(vec![1, 2, 3]));

    // Bad files do not stop later runs either, and good files stay current.
    let again = run_index(&cache, std::slice::from_ref(&root), &mut f);
    assert_eq!((again.unchanged, f.calls), (expected.len(), expected.len()));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn unlisted_folders_and_missing_roots_keep_their_photos() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("photos");
    put(&root.join("open/a.png"), [1, 1, 1]);
    put(&root.join("closed/b.png"), [2, 2, 2]);
    let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
    let mut f = FakeFeaturizer::new("fake");
    run_index(&cache, std::slice::from_ref(&root), &mut f);
    assert_eq!(cache.stats().unwrap().photos, 2);

    let closed = root.join("closed");
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
    let report = run_index(&cache, std::slice::from_ref(&root), &mut f);
    if fs::read_dir(&closed).is_ok() {
        eprintln!("note: running with permission checks off (root): the chmod 000 folder is listed normally");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    } else {
        let closed = closed.canonicalize().unwrap();
        assert_eq!(reason_of(&report, &closed), "cannot list folder: permission denied");
    }
    assert_eq!((report.removed, cache.stats().unwrap().photos), (0, 2));
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();

    // An unmounted disk looks like a missing root: report it, delete nothing.
    let moved = dir.path().join("unplugged");
    fs::rename(&root, &moved).unwrap();
    let report = run_index(&cache, std::slice::from_ref(&root), &mut f);
    assert!(reason_of(&report, &root).starts_with("cannot open folder: no such file"), "{report:?}");
    assert_eq!((report.removed, cache.stats().unwrap().photos), (0, 2));
}

#[test]
fn a_new_backbone_failing_stops_the_run_but_keeps_what_was_done() {
    struct Broken(usize);
    impl Featurizer for Broken {
        fn backbone_id(&self) -> String {
            "broken".into()
        }
        fn featurize(&mut self, _: &RgbImage) -> anyhow::Result<Vec<u8>> {
            self.0 += 1;
            if self.0 <= 2 {
                Ok(vec![1])
            } else {
                anyhow::bail!("out of memory")
            }
        }
    }
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("photos");
    for i in 0..10 {
        put(&root.join(format!("a/{i:02}.png")), [i, i, i]);
    }
    let cache = Cache::open_in_memory().unwrap();
    let err = index(&cache, std::slice::from_ref(&root), &mut Broken(0), 100, &mut |_| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("failed on 5 photos in a row") && msg.contains("out of memory"), "{msg}");
    assert_eq!(cache.stats().unwrap().features, 2);
}

// ---------------------------------------------------------------------------------------------
// Crash safety: kill -9 in the middle of a run

const KILL_CHILD_ENV: &str = "PHOTOSEG_TEST_KILL_CHILD_DIR";
const KILL_PHOTOS: usize = 24;
const KILL_BATCH: usize = 3;

/// Not a test on its own: the child process of `kill_9_mid_index_loses_at_most_one_batch`, which runs
/// it with `--ignored` (ignored, a plain `cargo test` lists it as skipped rather than as a pass).
#[test]
#[ignore = "the child process of kill_9_mid_index_loses_at_most_one_batch"]
fn kill_child_helper() {
    let dir = std::env::var_os(KILL_CHILD_ENV).expect("run by kill_9_mid_index_loses_at_most_one_batch");
    let dir = PathBuf::from(dir);
    let cache = Cache::open(&dir.join("cache.sqlite3")).unwrap();
    let mut f = FakeFeaturizer::new("slow");
    f.sleep = Duration::from_millis(100);
    index(&cache, &[dir.join("photos")], &mut f, KILL_BATCH, &mut |_| {}).unwrap();
}

#[test]
fn kill_9_mid_index_loses_at_most_one_batch() {
    let dir = TempDir::new().unwrap();
    for i in 0..KILL_PHOTOS {
        put(&dir.path().join(format!("photos/a{}/{i:02}.png", i % 3)), [i as u8, 0, 0]);
    }
    let db = dir.path().join("cache.sqlite3");
    let mut child = Command::new(std::env::current_exe().unwrap())
        // The test's full name in the one test binary (tests/it/main.rs): its module, then the function.
        .args(["--exact", "library::kill_child_helper", "--ignored", "--test-threads=1"])
        .env(KILL_CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "the child never committed a batch");
        assert!(child.try_wait().unwrap().is_none(), "the child finished before it could be killed");
        if db.exists() {
            let reader = Cache::open(&db).unwrap();
            if reader.stats().unwrap().features >= 2 * KILL_BATCH as u64 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let cache = Cache::open(&db).unwrap();
    cache.integrity_check().unwrap();
    let stats = cache.stats().unwrap();
    assert!(stats.features < KILL_PHOTOS as u64, "killed too late: {stats:?}");
    assert_eq!(stats.features % KILL_BATCH as u64, 0, "a batch was half committed: {stats:?}");
    assert_eq!(stats.photos, stats.features, "photo rows and features commit together");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (rows, distinct): (i64, i64) = conn
        .query_row("SELECT count(*), count(DISTINCT path) FROM photos", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(rows, distinct, "a photo is in the cache twice");

    let mut f = FakeFeaturizer::new("slow");
    let report = run_index(&cache, &[dir.path().join("photos")], &mut f);
    assert_eq!(f.calls as u64, KILL_PHOTOS as u64 - stats.features, "{report:?}");
    assert_eq!(cache.stats().unwrap().features, KILL_PHOTOS as u64);
    cache.integrity_check().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn config_roots_are_canonical_deduplicated_and_checked() {
    let dir = TempDir::new().unwrap();
    let photos = dir.path().join("photos");
    fs::create_dir_all(photos.join("2024")).unwrap();
    let canon = photos.canonicalize().unwrap();
    let cfg_path = dir.path().join("conf/photoseg/config.json");

    let mut cfg = Config::load(&cfg_path).unwrap();
    assert!(cfg.roots.is_empty(), "a missing config is empty");

    // A subfolder first, then its parent through a `..` spelling: the parent replaces it.
    let sub = cfg.add_root(&photos.join("2024")).unwrap();
    assert_eq!(sub, RootAdded::Added { root: canon.join("2024"), replaced: vec![] });
    let parent = cfg.add_root(&photos.join("2024/..")).unwrap();
    assert_eq!(parent, RootAdded::Added { root: canon.clone(), replaced: vec![canon.join("2024")] });
    // The same folder through a symlink, or a folder inside a root: already watched.
    let link = dir.path().join("link");
    symlink(&photos, &link).unwrap();
    assert_eq!(cfg.add_root(&link).unwrap(), RootAdded::AlreadyWatched { root: canon.clone(), by: canon.clone() });
    assert!(matches!(cfg.add_root(&photos.join("2024")).unwrap(), RootAdded::AlreadyWatched { .. }));
    assert_eq!(cfg.roots, vec![canon.clone()]);

    // Not a folder, missing, unreadable.
    let file = dir.path().join("file.jpg");
    fs::write(&file, "x").unwrap();
    let err = cfg.add_root(&file).unwrap_err().to_string();
    assert_eq!(err, format!("cannot watch {}: not a folder", file.display()));
    let err = cfg.add_root(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(err.contains("nope") && err.ends_with("no such folder"), "{err}");
    let closed = dir.path().join("closed");
    fs::create_dir(&closed).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
    let res = cfg.add_root(&closed);
    if fs::read_dir(&closed).is_ok() {
        eprintln!("note: running with permission checks off (root): an unreadable folder cannot be made");
        assert!(res.is_ok());
        cfg.remove_root(&closed).unwrap();
    } else {
        let err = res.unwrap_err().to_string();
        assert!(err.contains("closed") && err.contains("permission denied"), "{err}");
    }
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();

    // Save and load round-trip; removing works by any spelling, and after the folder is gone.
    cfg.save(&cfg_path).unwrap();
    assert_eq!(Config::load(&cfg_path).unwrap(), cfg);
    assert_eq!(cfg.remove_root(&link).unwrap(), canon);
    let err = cfg.remove_root(&photos).unwrap_err().to_string();
    assert!(err.contains("not a watched folder"), "{err}");
    let mut cfg = Config::load(&cfg_path).unwrap();
    fs::remove_dir_all(&photos).unwrap();
    assert_eq!(cfg.remove_root(&canon).unwrap(), canon);

    fs::write(&cfg_path, "{ \"roots\": 3 }").unwrap();
    let err = format!("{:#}", Config::load(&cfg_path).unwrap_err());
    assert!(err.contains("config.json") && err.contains("not valid"), "{err}");
    // A relative root (hand-edited) is refused: it would resolve against whatever folder the daemon
    // starts in.
    fs::write(&cfg_path, "{ \"roots\": [\"Pictures\"] }").unwrap();
    let err = format!("{:#}", Config::load(&cfg_path).unwrap_err());
    assert!(err.contains("\"Pictures\" is relative"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Watcher

fn expect_event(rx: &Receiver<LibraryEvent>, want: &LibraryEvent) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(ev) if ev == *want => return,
            Ok(ev) => seen.push(ev),
            Err(_) => break,
        }
    }
    panic!("no {want:?} within 5 s; saw {seen:?}");
}

/// Applies events to the cache until none came for `quiet`; returns them.
fn drain_into(
    rx: &Receiver<LibraryEvent>,
    cache: &Cache,
    f: &mut FakeFeaturizer,
    quiet: Duration,
) -> Vec<LibraryEvent> {
    let mut events = Vec::new();
    while let Ok(ev) = rx.recv_timeout(quiet) {
        apply_event(cache, &ev, f, 8, &mut |_| {}).unwrap();
        events.push(ev);
    }
    events
}

fn no_more_events(rx: &Receiver<LibraryEvent>, wait: Duration) {
    if let Ok(ev) = rx.recv_timeout(wait) {
        panic!("unexpected event {ev:?}");
    }
}

#[test]
fn watcher_reports_create_modify_rename_delete() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().canonicalize().unwrap();
    fs::create_dir(root.join("album")).unwrap();
    let settle = Duration::from_millis(300);
    let (watcher, rx) = LibraryWatcher::start(std::slice::from_ref(&root), settle).unwrap();
    let photo = root.join("album/new.png");

    let t0 = Instant::now();
    put(&photo, [1, 2, 3]);
    expect_event(&rx, &LibraryEvent::Changed(photo.clone()));
    assert!(t0.elapsed() >= settle, "reported before the folder settled: {:?}", t0.elapsed());

    put(&photo, [4, 5, 6]);
    expect_event(&rx, &LibraryEvent::Changed(photo.clone()));

    let moved = root.join("album/moved.png");
    fs::rename(&photo, &moved).unwrap();
    expect_event(&rx, &LibraryEvent::Renamed(photo.clone(), moved.clone()));

    fs::remove_file(&moved).unwrap();
    expect_event(&rx, &LibraryEvent::Removed(moved.clone()));

    // Not photos, hidden: nothing.
    fs::write(root.join("album/notes.txt"), "x").unwrap();
    put(&root.join(".cache/thumb.png"), [0, 0, 0]);
    no_more_events(&rx, settle * 3);

    drop(watcher);
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "the channel closes with the watcher");
}

#[test]
fn watcher_reports_a_copied_folder_once_it_settles_and_the_cache_follows() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("photos");
    fs::create_dir(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
    let settle = Duration::from_millis(400);
    let (_watcher, rx) = LibraryWatcher::start(std::slice::from_ref(&root), settle).unwrap();

    // "Copy" a folder in slowly: files keep arriving for longer than `settle` in total.
    let album = root.join("trip");
    fs::create_dir(&album).unwrap();
    for i in 0..5 {
        put(&album.join(format!("{i}.png")), [i * 50, 0, 0]);
        std::thread::sleep(settle / 3);
    }
    let copy_done = Instant::now();
    let mut f = FakeFeaturizer::new("fake");
    let mut events = Vec::new();
    while let Ok(ev) = rx.recv_timeout(settle * 4) {
        assert!(copy_done.elapsed() >= settle / 2, "{ev:?} reported while the folder was still being written");
        apply_event(&cache, &ev, &mut f, 8, &mut |_| {}).unwrap();
        events.push(ev);
    }
    assert!(events.contains(&LibraryEvent::Changed(album.clone())), "{events:?}");
    assert_eq!(cache.stats().unwrap().photos, 5, "{events:?}");
    assert_eq!(f.calls, 5, "each photo featurized once: {events:?}");

    // Renaming the folder moves the rows (no featurizing); later changes inside it are seen
    // under the new name; deleting it forgets them.
    let renamed = root.join("trip-2024");
    fs::rename(&album, &renamed).unwrap();
    let events = drain_into(&rx, &cache, &mut f, settle * 4);
    assert!(events.contains(&LibraryEvent::Renamed(album.clone(), renamed.clone())), "{events:?}");
    assert!(cache.photo_id(&renamed.join("3.png")).unwrap().is_some());
    assert_eq!((cache.stats().unwrap().photos, f.calls), (5, 5), "{events:?}");

    put(&renamed.join("5.png"), [9, 9, 9]);
    let events = drain_into(&rx, &cache, &mut f, settle * 4);
    assert!(events.contains(&LibraryEvent::Changed(renamed.join("5.png"))), "{events:?}");
    assert_eq!((cache.stats().unwrap().photos, f.calls), (6, 6), "{events:?}");

    fs::remove_dir_all(&renamed).unwrap();
    let events = drain_into(&rx, &cache, &mut f, settle * 4);
    assert_eq!(cache.stats().unwrap().photos, 0, "{events:?}");
    cache.integrity_check().unwrap();
}

/// A huge file named like a photo (here a 900 MiB sparse file) is refused from its size alone: nothing
/// is read, so it costs no memory.
#[test]
fn a_file_over_the_size_limit_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.png");
    std::fs::File::create(&path).unwrap().set_len(900 << 20).unwrap();
    let Err(err) = photo::read_file(&path) else { panic!("a 900 MiB file was read") };
    assert_eq!(err.kind, PhotoErrorKind::FileTooLarge(900 << 20));
    assert_eq!(err.kind.to_string(), format!("file too large: {} bytes exceeds the 256 MiB limit", 900u64 << 20));
}

//! Masks and overlays as image files, for `photoseg query --masks DIR --overlays DIR`.
//!
//! Output never goes into photo folders: a PNG written inside a watched folder would be indexed as a
//! photo on the next run (and could replace one). [`prepare_output_dir`] refuses such a DIR; files are
//! named after the photo with a suffix (`IMG_1.jpg.mask.png`), in a subfolder per album name, and are
//! written to a temporary name and renamed, so a reader never sees half a file.
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, Luma, Rgb, RgbImage};

use super::Positive;
use crate::library::photo;

/// Suffix of mask files (after the photo's file name).
pub const MASK_SUFFIX: &str = ".mask.png";
/// Suffix of overlay files.
pub const OVERLAY_SUFFIX: &str = ".overlay.jpg";

/// Colour of the object's outline in overlays. The object itself keeps its colours (a tint would turn a
/// yellow object orange, and the colour is often what the person asked for); the rest is dimmed.
const OUTLINE: [u8; 3] = [255, 255, 255];

/// Creates `dir` if needed and checks that it lies outside every folder in `forbidden` (the watched
/// roots and the albums being answered). Returns it canonicalised.
pub fn prepare_output_dir(dir: &Path, forbidden: &[PathBuf]) -> Result<PathBuf> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    // Check before creating anything: the nearest existing ancestor, canonicalised, plus the rest.
    let mut existing = abs.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let canon_existing = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    let resolved = canon_existing.join(abs.strip_prefix(existing).unwrap_or(Path::new("")));
    for f in forbidden {
        let f = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        if resolved.starts_with(&f) {
            bail!(
                "refusing to write into {}: it is inside the photo folder {} (the files would be indexed as photos); \
                 choose an output folder outside your photo folders",
                dir.display(),
                f.display()
            );
        }
    }
    std::fs::create_dir_all(&resolved).with_context(|| format!("cannot create output folder {}", dir.display()))?;
    Ok(resolved)
}

/// `dir/<album name>/<photo file name><suffix>`.
pub fn output_path(dir: &Path, album_name: &str, photo: &Path, suffix: &str) -> PathBuf {
    // Album names are paths below a root; keep only plain components, so nothing escapes `dir`.
    let sub: PathBuf = Path::new(album_name)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect();
    let mut name = photo.file_name().unwrap_or(photo.as_os_str()).to_os_string();
    name.push(suffix);
    dir.join(sub).join(name)
}

/// Writes the mask as an 8-bit PNG of the photo's size: 255 = object, 0 = background.
pub fn write_mask_png(path: &Path, p: &Positive) -> Result<()> {
    let img = GrayImage::from_fn(p.width, p.height, |x, y| {
        Luma([if p.mask[(y * p.width + x) as usize] != 0 { 255 } else { 0 }])
    });
    write_atomically(path, |tmp| img.save_with_format(tmp, image::ImageFormat::Png).map_err(Into::into))
}

/// Writes the photo with everything but the object dimmed to half and the object outlined, as a JPEG.
pub fn write_overlay(path: &Path, p: &Positive) -> Result<()> {
    let img = photo::load(&p.path)?;
    if img.dimensions() != (p.width, p.height) {
        bail!(
            "{} is now {} x {} but was indexed at {} x {}; run `photoseg index` again",
            p.path.display(),
            img.width(),
            img.height(),
            p.width,
            p.height
        );
    }
    let out = overlay(&img, &p.mask);
    write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp)?;
        JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90).encode_image(&out)?;
        Ok(())
    })
}

/// The overlay image: the photo as it is inside the mask, at half brightness outside it, and a solid
/// white outline (about 1/300 of the short side) on the mask's edge.
pub fn overlay(img: &RgbImage, mask: &[u8]) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let inside = |x: isize, y: isize| {
        x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h && mask[y as usize * w + x as usize] != 0
    };
    let mut out = img.clone();
    for (x, y, px) in out.enumerate_pixels_mut() {
        if mask[y as usize * w + x as usize] == 0 {
            for c in 0..3 {
                px[c] /= 2;
            }
        }
    }
    let r = (w.min(h) / 300).max(1) as isize / 2;
    for y in 0..h as isize {
        for x in 0..w as isize {
            let edge =
                inside(x, y) && [(-1, 0), (1, 0), (0, -1), (0, 1)].iter().any(|(dx, dy)| !inside(x + dx, y + dy));
            if !edge {
                continue;
            }
            for yy in (y - r).max(0)..=(y + r).min(h as isize - 1) {
                for xx in (x - r).max(0)..=(x + r).min(w as isize - 1) {
                    out.put_pixel(xx as u32, yy as u32, Rgb(OUTLINE));
                }
            }
        }
    }
    out
}

fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    write(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_stay_inside_the_folder() {
        let p = output_path(Path::new("/out"), "2019/Paris", Path::new("/p/2019/Paris/IMG_1.jpg"), MASK_SUFFIX);
        assert_eq!(p, PathBuf::from("/out/2019/Paris/IMG_1.jpg.mask.png"));
        let p = output_path(Path::new("/out"), "../../etc", Path::new("/p/x.png"), OVERLAY_SUFFIX);
        assert_eq!(p, PathBuf::from("/out/etc/x.png.overlay.jpg"));
    }

    #[test]
    fn output_inside_a_photo_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let photos = tmp.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        let err = prepare_output_dir(&photos.join("masks/new"), std::slice::from_ref(&photos)).unwrap_err();
        assert!(err.to_string().contains("refusing to write into"), "{err}");
        assert!(!photos.join("masks").exists(), "nothing created");
        let ok = prepare_output_dir(&tmp.path().join("out"), &[photos]).unwrap();
        assert!(ok.is_dir());
    }

    #[test]
    fn overlay_dims_outside_keeps_inside_and_outlines_the_edge() {
        let img = RgbImage::from_pixel(6, 5, Rgb([0, 0, 200]));
        let mut mask = vec![0u8; 30];
        for y in 1..4 {
            for x in 1..5 {
                mask[y * 6 + x] = 1;
            }
        }
        let out = overlay(&img, &mask);
        assert_eq!(out.get_pixel(0, 0), &Rgb([0, 0, 100]), "outside dimmed");
        assert_eq!(out.get_pixel(1, 1), &Rgb(OUTLINE), "edge outlined");
        let mut big = vec![0u8; 20 * 20];
        for y in 5..15 {
            for x in 5..15 {
                big[y * 20 + x] = 1;
            }
        }
        let out = overlay(&RgbImage::from_pixel(20, 20, Rgb([0, 0, 200])), &big);
        assert_eq!(out.get_pixel(10, 10), &Rgb([0, 0, 200]), "inside as it is");
    }
}

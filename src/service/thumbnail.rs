//! Images the daemon hands out: a mask as PNG bytes (`GetMask`), and small thumbnails of a photo with
//! its mask drawn on it for the desktop search results. Thumbnails are files under
//! `$XDG_CACHE_HOME/photoseg/thumbnails/`, never in photo folders.
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::{GrayImage, ImageFormat, Luma};
use sha2::{Digest, Sha256};

use crate::library::{paths, photo};
use crate::query::render;
use crate::query::Positive;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 256;
/// Folder of the thumbnails inside photoseg's cache folder.
pub const THUMBNAIL_DIR: &str = "thumbnails";

/// The mask as an 8-bit grey PNG of the photo's size: 255 = object, 0 = background.
pub fn mask_png(p: &Positive) -> Result<Vec<u8>> {
    let img = GrayImage::from_fn(p.width, p.height, |x, y| {
        Luma([if p.mask[(y * p.width + x) as usize] != 0 { 255 } else { 0 }])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).context("cannot encode the mask as PNG")?;
    Ok(out.into_inner())
}

/// `$XDG_CACHE_HOME/photoseg/thumbnails`, created if needed; refused when it lies inside a watched
/// folder (the thumbnails would be indexed as photos).
pub fn thumbnail_dir(roots: &[PathBuf]) -> Result<PathBuf> {
    let cache = paths::cache_file()?;
    let dir = cache.parent().unwrap_or(Path::new("/")).join(THUMBNAIL_DIR);
    render::prepare_output_dir(&dir, roots)
}

/// A PNG thumbnail (longest side [`THUMBNAIL_SIZE`]) of the photo with the object outlined and the rest dimmed,
/// in `dir`, named after the photo, the expression and the mask so a changed answer gets a new file.
/// Written once; later calls find it.
pub fn thumbnail(dir: &Path, p: &Positive, expression: &str) -> Result<PathBuf> {
    let mut h = Sha256::new();
    for part in [p.path.as_os_str().as_bytes(), expression.as_bytes(), &p.width.to_le_bytes(), &p.height.to_le_bytes()]
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&p.mask);
    let name: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{name}.png"));
    if path.is_file() {
        return Ok(path);
    }
    let img = photo::load(&p.path)?;
    if img.dimensions() != (p.width, p.height) {
        bail!(
            "{} is now {} x {} but was indexed at {} x {}",
            p.path.display(),
            img.width(),
            img.height(),
            p.width,
            p.height
        );
    }
    let drawn = render::overlay(&img, &p.mask);
    let scale = THUMBNAIL_SIZE as f64 / f64::from(p.width.max(p.height));
    let small = if scale < 1.0 {
        let w = ((f64::from(p.width) * scale).round() as u32).max(1);
        let h = ((f64::from(p.height) * scale).round() as u32).max(1);
        image::imageops::resize(&drawn, w, h, FilterType::Triangle)
    } else {
        drawn
    };
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    small.save_with_format(&tmp, ImageFormat::Png).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Deletes thumbnails not used for `max_age`, so the folder does not grow without end.
pub fn prune(dir: &Path, max_age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let old =
            e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > max_age);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

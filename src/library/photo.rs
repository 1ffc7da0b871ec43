//! Reading one photo file: bytes, content hash, decoded RGB pixels, with a typed reason for every
//! way a file in someone's photo folder can be unusable.
//!
//! The format is sniffed from the content (a PNG saved as `.jpg` is common and fine; a text file
//! named `.jpg` is "not an image"). Sizes are checked from the header before any pixel buffer is
//! allocated, so a small file that declares 20000 x 20000 pixels is refused, not decoded.
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use image::error::LimitErrorKind;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use sha2::{Digest, Sha256};

/// Largest accepted image, in pixels (64 MP: above any phone camera, below decompression bombs).
pub const MAX_PIXELS: u64 = 64_000_000;
/// Most memory a decoder may allocate for one image (64 MP of 16-bit RGBA is 512 MiB).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
/// Largest accepted file: the whole file is read into memory to hash and decode it once. 256 MiB holds
/// a 64 MP photo as uncompressed 8-bit RGB TIFF (192 MB); anything larger is refused from its size
/// alone, before a byte is read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Formats photoseg accepts; anything else the sniffer recognises is "unsupported image format".
pub const ACCEPTED_FORMATS: [ImageFormat; 5] =
    [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Tiff, ImageFormat::Gif];

/// Why a photo file cannot be used. `Display` is the short reason shown next to the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoErrorKind {
    #[error("empty file")]
    Empty,
    #[error("not an image")]
    NotAnImage,
    #[error("unsupported image format: {0} (photoseg reads jpeg, png, webp, tiff and gif)")]
    UnsupportedFormat(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("truncated or corrupt image: {0}")]
    Corrupt(String),
    #[error("image too large: {width} x {height} pixels exceeds the {} MP limit", MAX_PIXELS / 1_000_000)]
    TooLarge { width: u32, height: u32 },
    #[error("image too large: decoding it needs more than the {} MiB memory limit", MAX_DECODE_BYTES >> 20)]
    TooMuchMemory,
    #[error("file too large: {0} bytes exceeds the {limit} MiB limit", limit = MAX_FILE_BYTES >> 20)]
    FileTooLarge(u64),
    #[error("permission denied")]
    PermissionDenied,
    #[error("not a regular file")]
    NotAFile,
    #[error("cannot read: {0}")]
    Io(String),
}

/// A [`PhotoErrorKind`] with the file it happened to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use {}: {kind}", path.display())]
pub struct PhotoError {
    pub path: PathBuf,
    pub kind: PhotoErrorKind,
}

impl PhotoError {
    /// The reason without the path, e.g. "empty file" or "permission denied".
    pub fn reason(&self) -> String {
        self.kind.to_string()
    }
}

/// A photo file read into memory, with what the cache needs to tell later whether it changed.
#[derive(Debug, Clone)]
pub struct PhotoFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Size and modification time from the open handle, taken before reading: if the file
    /// changes while we read it, the next scan sees a newer mtime and reads it again.
    pub size: u64,
    pub mtime_ns: i64,
    /// Lowercase hex SHA-256 of `bytes`.
    pub sha256: String,
}

impl PhotoFile {
    /// Decodes the bytes (see [`decode`]).
    pub fn decode(&self) -> Result<RgbImage, PhotoError> {
        decode(&self.bytes).map_err(|kind| PhotoError { path: self.path.clone(), kind })
    }
}

/// Modification time in nanoseconds since the Unix epoch (negative before 1970).
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

/// Reads and hashes a photo file, refusing empty, oversized, unreadable and non-regular files.
///
/// The file is opened non-blocking: opening a named pipe (or a device) for reading would otherwise
/// wait for a writer forever, and the type check can only be trusted on the open handle (a stat before
/// the open could be raced by a rename). Non-blocking changes nothing for reads of a regular file.
pub fn read_file(path: &Path) -> Result<PhotoFile, PhotoError> {
    let err = |kind| PhotoError { path: path.to_path_buf(), kind };
    let mut file =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| err(io_kind(&e)))?;
    let meta = file.metadata().map_err(|e| err(io_kind(&e)))?;
    if !meta.is_file() {
        return Err(err(PhotoErrorKind::NotAFile));
    }
    let size = meta.len();
    if size == 0 {
        return Err(err(PhotoErrorKind::Empty));
    }
    if size > MAX_FILE_BYTES {
        return Err(err(PhotoErrorKind::FileTooLarge(size)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.by_ref().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| err(io_kind(&e)))?;
    if bytes.is_empty() {
        return Err(err(PhotoErrorKind::Empty));
    }
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok(PhotoFile { path: path.to_path_buf(), bytes, size, mtime_ns: mtime_ns(&meta), sha256 })
}

/// Reads and decodes a photo file to RGB8 with its EXIF orientation applied.
pub fn load(path: &Path) -> Result<RgbImage, PhotoError> {
    read_file(path)?.decode()
}

/// Decodes JPEG, PNG, WebP, TIFF or GIF (first frame) bytes to RGB8, upright.
///
/// Never panics: a panic inside a decoder (a bug in a codec meeting a hostile file) is caught
/// and reported as a corrupt image, because one bad file must not stop the daemon.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, PhotoErrorKind> {
    if bytes.is_empty() {
        return Err(PhotoErrorKind::Empty);
    }
    match panic::catch_unwind(AssertUnwindSafe(|| decode_inner(bytes))) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PhotoErrorKind::Corrupt(format!("decoder crashed: {msg}")))
        }
    }
}

fn decode_inner(bytes: &[u8]) -> Result<RgbImage, PhotoErrorKind> {
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| PhotoErrorKind::Io(e.to_string()))?;
    let format = reader.format().ok_or(PhotoErrorKind::NotAnImage)?;
    if !ACCEPTED_FORMATS.contains(&format) {
        let name = format.extensions_str().first().copied().unwrap_or("unknown");
        return Err(PhotoErrorKind::UnsupportedFormat(name.to_string()));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(image_kind)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PhotoErrorKind::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(PhotoErrorKind::Corrupt(format!("{width} x {height} pixels")));
    }
    limits.reserve(decoder.total_bytes()).map_err(image_kind)?;
    // A broken EXIF block should not cost the photo: fall back to the stored orientation.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(image_kind)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn image_kind(e: ImageError) -> PhotoErrorKind {
    match e {
        ImageError::Limits(l) => match l.kind() {
            LimitErrorKind::InsufficientMemory => PhotoErrorKind::TooMuchMemory,
            _ => PhotoErrorKind::Unsupported(l.to_string()),
        },
        ImageError::Unsupported(u) => PhotoErrorKind::Unsupported(u.to_string()),
        ImageError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            PhotoErrorKind::Corrupt("unexpected end of file".into())
        }
        ImageError::IoError(io) => PhotoErrorKind::Corrupt(io.to_string()),
        ImageError::Decoding(d) => PhotoErrorKind::Corrupt(d.to_string()),
        ImageError::Parameter(p) => PhotoErrorKind::Corrupt(p.to_string()),
        ImageError::Encoding(e) => PhotoErrorKind::Corrupt(e.to_string()),
    }
}

fn io_kind(e: &io::Error) -> PhotoErrorKind {
    match e.kind() {
        io::ErrorKind::PermissionDenied => PhotoErrorKind::PermissionDenied,
        io::ErrorKind::IsADirectory => PhotoErrorKind::NotAFile,
        _ => PhotoErrorKind::Io(e.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `path` has one of the photo extensions (case-insensitive): how scans pick candidates
/// before the content is sniffed.
pub fn has_photo_extension(path: &Path) -> bool {
    const EXTS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "gif"];
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

//! The on-disk format (`photoseg-synth/1`, see docs/synth.md) and its reader.
//!
//! ```text
//! DIR/dataset.json                      Manifest
//! DIR/<split>/<album>/album.json        AlbumFile
//! DIR/<split>/<album>/photo_NNN.png     RGB photos
//! DIR/<split>/<album>/masks/eK_photo_NNN.png   8-bit masks (0 / 255) of expression K in that photo
//! ```
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::language::{Color, Combo, Expression, Position, Shape, Size};
use super::look::{Drawing, Effects};
use super::scene::{self, Object, Texture};
use super::SynthConfig;

/// The `format` field of `dataset.json`.
pub const FORMAT: &str = "photoseg-synth/1";
/// The manifest's file name in the data-set folder.
pub const MANIFEST_FILE: &str = "dataset.json";
/// An album's description file in its folder.
pub const ALBUM_FILE: &str = "album.json";
/// The sub-folder of an album that holds masks.
pub const MASKS_DIR: &str = "masks";
/// Split names, in generation order: training; validation (same combinations as training, new
/// albums); held-out (combinations never seen in training).
pub const SPLITS: [&str; 3] = ["train", "val", "heldout"];

/// `DIR/dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// False while generation runs (and after it was interrupted); the reader refuses such a set.
    pub complete: bool,
    pub seed: u64,
    /// Width and height of every photo and mask, in pixels.
    pub image_size: u32,
    /// The options the set was generated with (enough to regenerate it byte for byte).
    pub config: SynthConfig,
    pub colors: Vec<Color>,
    pub shapes: Vec<Shape>,
    /// (colour, shape) pairs no object of `train` or `val` has; every `heldout` expression names one.
    pub heldout_combinations: Vec<Combo>,
    /// Every word an expression may contain, sorted.
    pub vocabulary: Vec<String>,
    /// Split name to its album folder names, in order.
    pub splits: BTreeMap<String, Vec<String>>,
    /// Split name to what it holds (filled in when generation completes).
    pub counts: BTreeMap<String, SplitCounts>,
}

/// Totals of a split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub albums: usize,
    pub photos: usize,
    /// One group per (album, expression).
    pub groups: usize,
    /// (expression, photo) pairs where the photo holds the referent, i.e. masks written.
    pub positives: usize,
    /// (expression, photo) pairs where it does not.
    pub negatives: usize,
}

impl std::ops::AddAssign for SplitCounts {
    fn add_assign(&mut self, o: SplitCounts) {
        self.albums += o.albums;
        self.photos += o.photos;
        self.groups += o.groups;
        self.positives += o.positives;
        self.negatives += o.negatives;
    }
}

/// `DIR/<split>/<album>/album.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlbumFile {
    /// Photo file names, relative to the album folder, in order.
    pub photos: Vec<String>,
    pub expressions: Vec<ExpressionEntry>,
    /// Photo file name to what is drawn in it.
    pub scenes: BTreeMap<String, SceneEntry>,
}

/// One expression of an album and its positive and negative photos.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpressionEntry {
    pub text: String,
    pub color: Color,
    pub shape: Shape,
    /// Null when the expression names no size.
    pub size: Option<Size>,
    /// Null when the expression names no position.
    pub position: Option<Position>,
    /// Photo file name to its mask's path, both relative to the album folder.
    pub positives: BTreeMap<String, String>,
    /// Photo file names without the referent.
    pub negatives: Vec<String>,
}

impl ExpressionEntry {
    pub fn expression(&self) -> Expression {
        Expression {
            text: self.text.clone(),
            color: self.color,
            shape: self.shape,
            size: self.size,
            position: self.position,
        }
    }
}

/// The scene of one photo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneEntry {
    pub background: Texture,
    /// In drawing order: later objects lie on top.
    pub objects: Vec<Object>,
    /// Per expression of the album, the index in `objects` of its target (null in a negative photo).
    pub targets: Vec<Option<usize>>,
    /// `[width, height]` of the photo in pixels (absent: `image_size` square).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[u32; 2]>,
    /// How each object (same order as `objects`) is drawn (varied look; absent in the classic look).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drawings: Vec<Drawing>,
    /// The photo's lighting and camera effects (varied look; absent in the classic look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Effects>,
}

impl SceneEntry {
    /// `(width, height)` of the photo; `image_size` is the manifest's, for scenes that do not say.
    pub fn dimensions(&self, image_size: u32) -> (u32, u32) {
        self.size.map_or((image_size, image_size), |[w, h]| (w, h))
    }

    /// The photo's label map (row-major, `width * height`: the index of the top-most object at each
    /// pixel centre, or [`scene::NONE`]) and its objects with their pixel counts.
    pub fn label_map(&self, image_size: u32) -> (Vec<Object>, Vec<u8>) {
        let (w, h) = self.dimensions(image_size);
        let mut objects = self.objects.clone();
        let labels = scene::label_map_wh(&mut objects, w, h);
        (objects, labels)
    }

    /// The label map of the photo stretched to `n x n` (as a model sees a photo resized to a square
    /// input): cell `(i, j)` holds the top-most object at the photo point
    /// `((i + 0.5) * width / n, (j + 0.5) * height / n)`.
    pub fn square_label_map(&self, image_size: u32, n: u32) -> Vec<u8> {
        let (w, h) = self.dimensions(image_size);
        scene::label_map_stretched(&self.objects, w, h, n)
    }
}

impl AlbumFile {
    /// Checks that every expression splits the album's photos into positives and negatives exactly,
    /// and that scenes agree with it.
    pub fn validate(&self) -> Result<()> {
        let photos: BTreeSet<&str> = self.photos.iter().map(String::as_str).collect();
        ensure!(photos.len() == self.photos.len(), "a photo is listed twice");
        for (k, e) in self.expressions.iter().enumerate() {
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for p in e.positives.keys().chain(&e.negatives) {
                ensure!(photos.contains(p.as_str()), "expression {:?} names unknown photo {p}", e.text);
                ensure!(seen.insert(p), "expression {:?} lists photo {p} twice", e.text);
            }
            ensure!(seen.len() == photos.len(), "expression {:?} does not say whether every photo holds it", e.text);
            for (photo, scene) in &self.scenes {
                let target = scene.targets.get(k).copied().flatten();
                ensure!(
                    target.is_some() == e.positives.contains_key(photo),
                    "scene of {photo} disagrees with expression {:?}",
                    e.text
                );
            }
        }
        Ok(())
    }
}

/// One training or evaluation example: an album and an expression, with every photo of the album.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The album folder.
    pub album: PathBuf,
    pub expression: String,
    /// Every photo of the album, in album order.
    pub photos: Vec<GroupPhoto>,
}

impl Group {
    /// How many photos hold the referent.
    pub fn positives(&self) -> usize {
        self.photos.iter().filter(|p| p.mask.is_some()).count()
    }
}

/// A photo of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPhoto {
    pub path: PathBuf,
    /// The referent's mask; None when the photo does not hold it (a negative).
    pub mask: Option<PathBuf>,
}

/// A generated data set on disk.
#[derive(Clone, Debug)]
pub struct SynthDataset {
    root: PathBuf,
    manifest: Manifest,
}

/// Reads and parses `dir/dataset.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{} is not a photoseg synth manifest", path.display()))?;
    ensure!(
        manifest.format == FORMAT,
        "{} has format {:?}; this photoseg reads {FORMAT:?}",
        path.display(),
        manifest.format
    );
    Ok(manifest)
}

impl SynthDataset {
    /// Opens the data set in `dir` (reads only its manifest).
    pub fn open(dir: impl AsRef<Path>) -> Result<SynthDataset> {
        let root = dir.as_ref().to_path_buf();
        let manifest = read_manifest(&root)?;
        if !manifest.complete {
            bail!(
                "the synth data set in {} is incomplete (generation was interrupted); run `photoseg synth` again",
                root.display()
            );
        }
        Ok(SynthDataset { root, manifest })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Split names that hold at least one album.
    pub fn split_names(&self) -> Vec<&str> {
        self.manifest.splits.iter().filter(|(_, albums)| !albums.is_empty()).map(|(name, _)| name.as_str()).collect()
    }

    fn albums(&self, split: &str) -> Result<&[String]> {
        match self.manifest.splits.get(split) {
            Some(albums) => Ok(albums),
            None => bail!(
                "the synth data set in {} has no split {split:?} (it has {})",
                self.root.display(),
                self.manifest.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The folder of an album.
    pub fn album_dir(&self, split: &str, album: &str) -> PathBuf {
        self.root.join(split).join(album)
    }

    /// Reads and checks an album's `album.json`.
    pub fn album(&self, split: &str, album: &str) -> Result<AlbumFile> {
        let path = self.album_dir(split, album).join(ALBUM_FILE);
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: AlbumFile =
            serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
        file.validate().with_context(|| format!("invalid {}", path.display()))?;
        Ok(file)
    }

    /// Every group of a split: one per (album, expression), in album order then expression order.
    pub fn split(&self, name: &str) -> Result<Vec<Group>> {
        let mut groups = Vec::new();
        for album in self.albums(name)? {
            let dir = self.album_dir(name, album);
            let file = self.album(name, album)?;
            for e in &file.expressions {
                let photos = file
                    .photos
                    .iter()
                    .map(|p| GroupPhoto { path: dir.join(p), mask: e.positives.get(p).map(|m| dir.join(m)) })
                    .collect();
                groups.push(Group { album: dir.clone(), expression: e.text.clone(), photos });
            }
        }
        Ok(groups)
    }
}

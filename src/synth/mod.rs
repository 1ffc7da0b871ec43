//! A synthetic group-referring data set: albums of photo-like scenes, expressions that refer to one
//! object ("the red circle", "small blue square on the left"), exact masks, hard negatives, and a
//! held-out split of attribute combinations training never shows. Deterministic by seed.
//!
//! - [`language`]: attributes, expression templates, vocabulary, matching;
//! - [`scene`]: backgrounds, shapes, occlusion, rendering and label maps (the classic look);
//! - [`look`]: the varied look (background families, drawing styles, colour jitter, camera effects);
//! - [`compose`]: albums and scenes that keep the data set's rules;
//! - [`dataset`]: the on-disk format and its reader ([`SynthDataset`]);
//! - [`generate()`]: writes a whole data set.
//!
//! The format is documented in docs/synth.md.
pub mod compose;
pub mod dataset;
mod generate;
pub mod language;
pub mod look;
pub mod rng;
pub mod scene;

use serde::{Deserialize, Serialize};

pub use dataset::{
    AlbumFile, ExpressionEntry, Group, GroupPhoto, Manifest, SceneEntry, SplitCounts, SynthDataset, FORMAT, SPLITS,
};
pub use generate::{generate, heldout_combinations};
pub use language::{vocabulary, Color, Combo, Expression, Position, Shape, Size};
pub use look::{Drawing, Edge, Effects, Fill, Outline};

/// How photos are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Look {
    /// One background family (a gradient with a texture), hard flat-shaded objects, nominal colours
    /// with little jitter, light grain: the look of sets written before the varied look existed
    /// (byte for byte, with square photos).
    Classic,
    /// Many background families and ways of drawing each shape, colours jittered within their
    /// names, lighting, blur, sensor noise and JPEG artefacts, and sparse photos of few large objects.
    Varied,
}

impl Look {
    fn classic() -> Look {
        Look::Classic
    }
}

fn yes() -> bool {
    true
}

/// Options of a synthetic data set. Every field is written to the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Seed of everything: the same seed and options give byte-identical files.
    pub seed: u64,
    /// Albums in the training split.
    pub albums_train: usize,
    /// Albums in the validation split (the training split's combinations, new albums).
    pub albums_val: usize,
    /// Albums in the held-out split (only held-out combinations as expressions).
    pub albums_heldout: usize,
    /// Side of the square photos, in pixels (48 to 1024); non-square photos have about as many pixels.
    pub image_size: u32,
    /// Fewest photos in an album (at least 2).
    pub photos_min: usize,
    /// Most photos in an album.
    pub photos_max: usize,
    /// Most expressions per album (1 to 3); each album draws 1 to this many.
    pub expressions_max: usize,
    /// Most objects per photo (6 to 12; every photo holds at least 3).
    pub objects_max: usize,
    /// How many (colour, shape) combinations are held out (1 to 6; 0 only without a held-out split).
    pub heldout_combos: usize,
    /// Index of each split's first album. Albums are seeded by (seed, split, index), so with N here a set
    /// holds the very albums a larger set of the same seed holds from its N-th on: fresh albums of the
    /// same held-out combinations, to choose models on without touching the albums that report figures.
    #[serde(default)]
    pub first_album: usize,
    /// How photos are drawn (a manifest without it: classic).
    #[serde(default = "Look::classic")]
    pub look: Look,
    /// Every photo square (`image_size` on a side); otherwise 80 % of the photos have a width / height
    /// ratio between 3/4 and 4/3 (a manifest without it: square).
    #[serde(default = "yes")]
    pub square: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            albums_train: 200,
            albums_val: 20,
            albums_heldout: 40,
            image_size: 128,
            photos_min: 8,
            photos_max: 24,
            expressions_max: 3,
            objects_max: 7,
            heldout_combos: 6,
            first_album: 0,
            look: Look::Varied,
            square: false,
        }
    }
}

impl SynthConfig {
    /// Checks the options are in range, with a message that names the offending option.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            (48..=1024).contains(&self.image_size),
            "image size must be between 48 and 1024 pixels, not {}",
            self.image_size
        );
        ensure!(self.photos_min >= 2, "an album needs at least 2 photos, not {}", self.photos_min);
        ensure!(
            self.photos_min <= self.photos_max,
            "fewest photos per album ({}) is above the most ({})",
            self.photos_min,
            self.photos_max
        );
        ensure!(self.photos_max <= 999, "at most 999 photos per album, not {}", self.photos_max);
        ensure!(
            (1..=3).contains(&self.expressions_max),
            "expressions per album must be 1 to 3, not {}",
            self.expressions_max
        );
        ensure!((6..=12).contains(&self.objects_max), "objects per photo must be 6 to 12, not {}", self.objects_max);
        let most = Color::ALL.len().min(Shape::ALL.len());
        ensure!(self.heldout_combos <= most, "at most {most} held-out combinations, not {}", self.heldout_combos);
        ensure!(
            self.heldout_combos > 0 || self.albums_heldout == 0,
            "a held-out split needs at least one held-out combination"
        );
        ensure!(self.albums_train + self.albums_val + self.albums_heldout <= 10_000, "at most 10000 albums in all");
        let largest = self.albums_train.max(self.albums_val).max(self.albums_heldout);
        ensure!(
            self.first_album + largest <= 10_000,
            "album numbers stop at 9999: --first-album {} with {largest} albums in a split goes past it",
            self.first_album
        );
        Ok(())
    }
}

//! The answer before masks ([`Decided`]): which photos of each album the model says show the
//! expression, and what their masks will need. [`Engine::decide`](super::Engine::decide) hands it to
//! [`Engine::masks`](super::Engine::masks); the decision pipeline (`pipeline.rs`) fills its albums and
//! the engine reads them, so it lives apart from both and neither file imports the other both ways.
use std::path::PathBuf;

use candle_core::Tensor;

use super::{AlbumSummary, Positive, QuerySummary};
use crate::library::cache::{FeatureRow, PhotoId};

/// The answer before masks: [`Engine::decide`](super::Engine::decide)'s result, for
/// [`Engine::masks`](super::Engine::masks).
#[derive(Debug)]
pub struct Decided {
    pub expression: String,
    /// The backbone id of the model that answered.
    pub model: String,
    pub albums: Vec<DecidedAlbum>,
}

/// One album's decision: counts and positives (best score first), masks to come.
#[derive(Debug)]
pub struct DecidedAlbum {
    pub album: PathBuf,
    pub name: String,
    pub photos: usize,
    pub positives: Vec<Candidate>,
    pub rejected: usize,
    pub unindexed: usize,
    pub from_index: bool,
    pub(super) fingerprint: String,
    /// The stored answer's positives, masks included (from the search index, or none to make).
    pub(super) stored: Option<Vec<Positive>>,
    /// (photo, feature row, path) of the album's indexed photos, in the order the head saw them (empty
    /// when served from the search index).
    pub(super) indexed: Vec<(PhotoId, FeatureRow, PathBuf)>,
    /// Triphasic features of the positives (row [`Candidate::z_row`]), unless dropped for memory.
    pub(super) z: Option<Tensor>,
}

/// A photo the model says shows the object, before its mask is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub path: PathBuf,
    /// As [`Positive::score`].
    pub score: f32,
    pub width: u32,
    pub height: u32,
    pub(super) photo: PhotoId,
    pub(super) z_row: usize,
}

impl Decided {
    /// What [`QueryProgress::decided`](super::QueryProgress::decided) sees. Positives served from the
    /// search index come in their stored order, which is the order
    /// [`Engine::masks`](super::Engine::masks) gives them.
    pub fn summary(&self) -> QuerySummary {
        let albums = self.albums.iter().map(|a| {
            let positives = match &a.stored {
                Some(stored) => stored.iter().map(|p| (p.path.clone(), p.score)).collect(),
                None => a.positives.iter().map(|c| (c.path.clone(), c.score)).collect(),
            };
            AlbumSummary::of(&a.album, &a.name, a.photos, positives, a.rejected, a.unindexed)
        });
        QuerySummary { expression: self.expression.clone(), albums: albums.collect() }
    }
}

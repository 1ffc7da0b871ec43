//! Answering "which photos of each album show EXPRESSION, and where": the query engine behind
//! `photoseg query`, free of printing so the daemon can serve the same [`QueryResult`].
//!
//! Each album is one group (docs/model.md): the cached features of its photos are stacked and GRSer
//! decides for every photo at once; positives get a mask at the photo's own resolution. A repeated
//! question is served from the search index while the album's photos are unchanged.
//!
//! [`QueryBackend`] is the seam for the daemon: `service::client::connect` returns a D-Bus client of a
//! running `photoseg daemon` when one serves this library, else this module's in-process [`Engine`].
mod decided;
mod engine;
pub mod featurizer;
pub mod json;
pub mod model;
mod pipeline;
pub mod render;
mod request;
pub mod rle;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::model::codec::FeatureCodec;

/// The codec features are cached in when the model's config names none (f16: see `model::codec`).
pub const DEFAULT_CODEC: FeatureCodec = FeatureCodec::F16;

pub use decided::{Candidate, Decided, DecidedAlbum};
pub use engine::{album_fingerprint, album_name, Engine};
pub use json::JSON_VERSION;
pub use request::QueryRequest;

/// One photo that shows the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Positive {
    pub path: PathBuf,
    /// d_neg - d_pos - margin: how far past the decision boundary (> 0 for every positive).
    pub score: f32,
    /// Pixels of the object in `mask`.
    pub mask_area: usize,
    /// The photo's upright size; `mask` has this size.
    pub width: u32,
    pub height: u32,
    /// Row-major, 1 = object, 0 = background.
    pub mask: Vec<u8>,
}

/// The answer for one album.
#[derive(Debug, Clone, PartialEq)]
pub struct AlbumResult {
    pub album: PathBuf,
    /// The album's name: its path relative to the watched root holding it.
    pub name: String,
    /// Photos the cache knows in this album (= positives + rejected + unindexed).
    pub photos: usize,
    /// Best score first.
    pub positives: Vec<Positive>,
    /// Photos the model says do not show the object.
    pub rejected: usize,
    /// Photos without features for this model yet (`photoseg index` will compute them).
    pub unindexed: usize,
    /// Served from the search index (same model, expression and album content as before).
    pub from_index: bool,
}

/// The answer for every album asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub expression: String,
    /// The backbone id of the model that answered.
    pub model: String,
    pub albums: Vec<AlbumResult>,
}

/// Something that answers queries: the in-process [`Engine`], or the daemon over D-Bus.
pub trait QueryBackend {
    /// Says who answers, for messages ("in-process", "daemon").
    fn describe(&self) -> String;
    fn query(&mut self, request: &QueryRequest) -> Result<QueryResult>;

    /// [`QueryBackend::query`], telling `progress` the decision as soon as it is made and then each
    /// mask as it is made, so a caller can print the list of positives before the masks are done. This
    /// default (the daemon's: its D-Bus `Query` returns one whole answer) tells both once the answer is
    /// complete; the in-process [`Engine`] streams.
    fn query_streaming(&mut self, request: &QueryRequest, progress: &mut dyn QueryProgress) -> Result<QueryResult> {
        let result = self.query(request)?;
        progress.decided(&result.summary())?;
        for (i, a) in result.albums.iter().enumerate() {
            for p in &a.positives {
                progress.mask(i, p)?;
            }
        }
        Ok(result)
    }
}

/// Sees a query's answer as it is made ([`QueryBackend::query_streaming`]): first
/// [`QueryProgress::decided`] once, then [`QueryProgress::mask`] for every positive, album by album in
/// the summary's order, best score first within an album. An error stops the query and is returned.
pub trait QueryProgress {
    fn decided(&mut self, summary: &QuerySummary) -> Result<()>;
    /// `album` indexes [`QuerySummary::albums`].
    fn mask(&mut self, album: usize, positive: &Positive) -> Result<()>;
}

/// The answer before masks: what [`QueryProgress::decided`] sees.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySummary {
    pub expression: String,
    pub albums: Vec<AlbumSummary>,
}

/// One album's decision, masks to come.
#[derive(Debug, Clone, PartialEq)]
pub struct AlbumSummary {
    pub album: PathBuf,
    pub name: String,
    pub photos: usize,
    /// Path and score of each positive, best score first (the order their masks come in).
    pub positives: Vec<(PathBuf, f32)>,
    pub rejected: usize,
    pub unindexed: usize,
}

impl QueryResult {
    /// The answer without its masks, as [`QueryProgress::decided`] sees it.
    pub fn summary(&self) -> QuerySummary {
        let albums = self.albums.iter().map(|a| {
            let positives = a.positives.iter().map(|p| (p.path.clone(), p.score)).collect();
            AlbumSummary::of(&a.album, &a.name, a.photos, positives, a.rejected, a.unindexed)
        });
        QuerySummary { expression: self.expression.clone(), albums: albums.collect() }
    }
}

impl AlbumSummary {
    fn of(
        album: &Path,
        name: &str,
        photos: usize,
        positives: Vec<(PathBuf, f32)>,
        rejected: usize,
        unindexed: usize,
    ) -> Self {
        Self { album: album.to_path_buf(), name: name.to_string(), photos, positives, rejected, unindexed }
    }
}

//! Answering "which photos of each album show EXPRESSION, and where": the query engine behind
//! `photoseg query`, free of printing so the daemon can serve the same [`QueryResult`].
//!
//! Each album is one group (docs/model.md): the cached features of its photos are stacked and GRSer
//! decides for every photo at once; positives get a mask at the photo's own resolution. A repeated
//! question is served from the search index while the album's photos are unchanged.
//!
//! [`QueryBackend`] is the seam for the daemon: [`connect`] returns a D-Bus client of a running
//! `photoseg daemon` (`crate::service::client`) when one serves this library, else the in-process engine.
pub mod featurizer;
pub mod model;
pub mod render;
pub mod rle;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::library::cache::{AlbumEntry, Cache};
use crate::library::search::{normalize_expression, AlbumDoc, AnswerKey, SearchIndex};
use crate::library::{config, paths};
use crate::model::codec::FeatureCodec;
use crate::model::grser::{self, Pairs};
use crate::model::neck::VisualFeatures;
use model::LoadedModel;

/// The codec `photoseg index` stores features with (f16: see `model::codec` for why and for int8).
pub const DEFAULT_CODEC: FeatureCodec = FeatureCodec::F16;

/// Version of the JSON schema of [`QueryResult::to_json`] (docs/query.md).
pub const JSON_VERSION: u32 = 1;

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    pub expression: String,
    /// Keep only albums whose name contains one of these (case-insensitive); empty = every album.
    pub albums: Vec<String>,
}

impl QueryRequest {
    /// Checks the expression: an empty one asks nothing.
    pub fn new(expression: &str, albums: Vec<String>) -> Result<Self> {
        let expression = normalize_expression(expression);
        if expression.is_empty() {
            bail!("the expression is empty; say what to look for, e.g. photoseg query \"my bike\"");
        }
        Ok(Self { expression, albums })
    }
}

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

impl QueryResult {
    /// The documented JSON (docs/query.md), pretty-printed: masks as COCO RLE, paths as (lossy) UTF-8.
    pub fn to_json(&self) -> Result<String> {
        let albums = self
            .albums
            .iter()
            .map(|a| -> Result<JsonAlbum<'_>> {
                let positives = a
                    .positives
                    .iter()
                    .map(|p| -> Result<JsonPositive<'_>> {
                        Ok(JsonPositive {
                            path: p.path.to_string_lossy(),
                            score: p.score,
                            mask_area: p.mask_area,
                            width: p.width,
                            height: p.height,
                            mask: rle::encode(&p.mask, p.width as usize, p.height as usize)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(JsonAlbum {
                    album: a.album.to_string_lossy(),
                    name: &a.name,
                    photos: a.photos,
                    positives,
                    rejected: a.rejected,
                    unindexed: a.unindexed,
                    from_index: a.from_index,
                })
            })
            .collect::<Result<_>>()?;
        let json = JsonResult { version: JSON_VERSION, expression: &self.expression, model: &self.model, albums };
        Ok(serde_json::to_string_pretty(&json)?)
    }
}

// The JSON schema as structs, so the fields keep the documented order.
#[derive(Serialize)]
struct JsonResult<'a> {
    version: u32,
    expression: &'a str,
    model: &'a str,
    albums: Vec<JsonAlbum<'a>>,
}

#[derive(Serialize)]
struct JsonAlbum<'a> {
    album: std::borrow::Cow<'a, str>,
    name: &'a str,
    photos: usize,
    positives: Vec<JsonPositive<'a>>,
    rejected: usize,
    unindexed: usize,
    from_index: bool,
}

#[derive(Serialize)]
struct JsonPositive<'a> {
    path: std::borrow::Cow<'a, str>,
    score: f32,
    mask_area: usize,
    width: u32,
    height: u32,
    mask: rle::CocoRle,
}

/// Something that answers queries: the in-process [`Engine`], or the daemon over D-Bus.
pub trait QueryBackend {
    /// Says who answers, for messages ("in-process", "daemon").
    fn describe(&self) -> String;
    fn query(&mut self, request: &QueryRequest) -> Result<QueryResult>;
}

/// The backend for this process: a running `photoseg daemon` that serves this library with this model
/// (the model is then not loaded here at all), else the in-process [`Engine`]. `PHOTOSEG_NO_DAEMON=1`
/// forces in-process; see [`crate::service::client::DaemonClient::find`].
pub fn connect(model_dir: Option<&Path>) -> Result<Box<dyn QueryBackend>> {
    if let Some(client) = crate::service::client::DaemonClient::find(model_dir) {
        return Ok(Box::new(client));
    }
    Ok(Box::new(Engine::open_default(model_dir)?))
}

/// Answers queries in this process from the cache, the search index and a loaded model.
#[derive(Debug)]
pub struct Engine {
    model: LoadedModel,
    backbone: String,
    cache: Cache,
    search: SearchIndex,
    roots: Vec<PathBuf>,
}

impl Engine {
    /// `roots`: the watched folders, to name albums by their path below a root.
    pub fn new(
        model: LoadedModel,
        codec: FeatureCodec,
        cache: Cache,
        search: SearchIndex,
        roots: Vec<PathBuf>,
    ) -> Self {
        let backbone = model.backbone_id(codec);
        Self { model, backbone, cache, search, roots }
    }

    /// The engine over the user's cache, search index and config, with the model of `model_dir`
    /// (resolved as [`model::resolve_model_dir`] does).
    pub fn open_default(model_dir: Option<&Path>) -> Result<Self> {
        let dir = model::resolve_model_dir(model_dir)?;
        let cache = Cache::open(&paths::cache_file()?)?;
        let roots = config::Config::load(&paths::config_file()?)?.roots;
        let search = SearchIndex::open_default()?;
        Ok(Self::new(LoadedModel::load(&dir)?, DEFAULT_CODEC, cache, search, roots))
    }

    /// The backbone id features are read under.
    pub fn backbone(&self) -> &str {
        &self.backbone
    }

    /// Runs the query over every album (or those `request.albums` names).
    pub fn run(&mut self, request: &QueryRequest) -> Result<QueryResult> {
        let mut albums = Vec::new();
        for info in self.cache.albums()? {
            let entries = self.cache.album_entries(info.id, &self.backbone)?;
            let name = album_name(&info.path, &self.roots);
            albums.push((info.path, name, entries));
        }
        if albums.is_empty() {
            bail!("the library is empty: no photos are indexed; run `photoseg index PATH` with your photo folder");
        }
        let synced = self.sync_search(&albums)?;
        if !request.albums.is_empty() {
            let mut wanted = std::collections::HashSet::new();
            if synced {
                for pattern in &request.albums {
                    wanted.extend(self.search.albums_matching(pattern)?);
                }
            } else {
                // Another process holds the index writer and the album documents may be stale: the
                // same rule, applied to the cache's album list directly.
                for (path, name, _) in &albums {
                    let name = name.to_lowercase();
                    if request.albums.iter().any(|p| name.contains(&p.to_lowercase())) {
                        wanted.insert(path.clone());
                    }
                }
            }
            albums.retain(|(path, _, _)| wanted.contains(path));
            if albums.is_empty() {
                let names: Vec<String> =
                    self.cache.albums()?.iter().take(10).map(|a| album_name(&a.path, &self.roots)).collect();
                bail!(
                    "no album name contains {}; albums are named e.g. {}",
                    request.albums.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" or "),
                    names.join(", ")
                );
            }
        }
        let mut results = Vec::with_capacity(albums.len());
        for (path, name, entries) in albums {
            let result = self
                .answer_album(&request.expression, &path, name, &entries)
                .with_context(|| format!("answering for album {}", path.display()))?;
            results.push(result);
        }
        Ok(QueryResult { expression: request.expression.clone(), model: self.backbone.clone(), albums: results })
    }

    /// Rebuilds the album and photo documents when the album list changed since they were written.
    /// Returns whether they are current (false: another process held the writer).
    fn sync_search(&mut self, albums: &[(PathBuf, String, Vec<AlbumEntry>)]) -> Result<bool> {
        let mut h = Sha256::new();
        for (path, name, entries) in albums {
            feed(&mut h, path.as_os_str().as_bytes());
            feed(&mut h, name.as_bytes());
            for e in entries {
                feed(&mut h, e.path.as_os_str().as_bytes());
                h.update(e.mtime_ns.to_le_bytes());
            }
        }
        let fingerprint = hex(&h.finalize());
        if self.search.albums_fingerprint()?.as_deref() == Some(fingerprint.as_str()) {
            return Ok(true);
        }
        let docs: Vec<AlbumDoc> = albums
            .iter()
            .map(|(path, name, entries)| AlbumDoc {
                path: path.clone(),
                name: name.clone(),
                photos: entries.iter().map(|e| e.path.clone()).collect(),
                first_mtime_ns: entries.iter().map(|e| e.mtime_ns).min(),
                last_mtime_ns: entries.iter().map(|e| e.mtime_ns).max(),
            })
            .collect();
        self.search.replace_albums(&docs, &fingerprint)
    }

    fn answer_album(
        &mut self,
        expression: &str,
        album: &Path,
        name: String,
        entries: &[AlbumEntry],
    ) -> Result<AlbumResult> {
        let indexed: Vec<&AlbumEntry> = entries.iter().filter(|e| e.has_features).collect();
        let mut result = AlbumResult {
            album: album.to_path_buf(),
            name,
            photos: entries.len(),
            positives: Vec::new(),
            rejected: 0,
            unindexed: entries.len() - indexed.len(),
            from_index: false,
        };
        if indexed.is_empty() {
            return Ok(result);
        }
        let fingerprint = album_fingerprint(&self.backbone, entries);
        let key = AnswerKey { model: &self.backbone, album, expression };
        if let Some(json) = self.search.answer(&key, &fingerprint)? {
            if let Some((positives, rejected)) = from_stored(&json, entries) {
                result.positives = positives;
                result.rejected = rejected;
                result.from_index = true;
                return Ok(result);
            }
        }

        let device = self.model.grser.device.clone();
        let mut parts = Vec::with_capacity(indexed.len());
        for e in &indexed {
            let bytes = self.cache.features(e.id, &self.backbone)?.with_context(|| {
                format!("features of {} vanished while reading; run the query again", e.path.display())
            })?;
            let feats = VisualFeatures::from_bytes(&bytes, &device).with_context(|| {
                format!("cached features of {} are unreadable; delete the cache file to re-index", e.path.display())
            })?;
            parts.push(feats);
        }
        let group = VisualFeatures::cat(&parts)?;
        let answers = self.model.grser.answer(&group, expression, Pairs::TopK)?;
        let margin = self.model.grser.head.config().margin as f32;
        let mut stored = StoredAnswer { positives: Vec::new(), rejected: 0 };
        for (e, a) in indexed.iter().zip(&answers) {
            match (&a.mask_logits, a.positive) {
                (Some(logits), true) => {
                    let mask = grser::mask_at(logits, e.height as usize, e.width as usize)?;
                    let score = a.d_neg - a.d_pos - margin;
                    stored.positives.push(StoredPositive {
                        photo: e.id.0,
                        score,
                        mask: rle::encode(&mask, e.width as usize, e.height as usize)?,
                    });
                    result.positives.push(Positive {
                        path: e.path.clone(),
                        score,
                        mask_area: mask.iter().filter(|&&m| m != 0).count(),
                        width: e.width,
                        height: e.height,
                        mask,
                    });
                }
                _ => result.rejected += 1,
            }
        }
        stored.rejected = result.rejected;
        sort_by_score(&mut result.positives);
        // Best effort: a busy or broken index costs the next query time, never this answer.
        if let Err(e) = self.search.store_answer(&key, &fingerprint, &serde_json::to_string(&stored)?) {
            tracing::warn!("cannot store the answer in the search index: {e:#}");
        }
        Ok(result)
    }
}

impl QueryBackend for Engine {
    fn describe(&self) -> String {
        format!("in-process, model {}", self.model.dir.display())
    }

    fn query(&mut self, request: &QueryRequest) -> Result<QueryResult> {
        self.run(request)
    }
}

/// An answer as kept in the search index: photo ids, not paths (a moved photo keeps its id and
/// features; non-UTF-8 paths need no escaping).
#[derive(Debug, Serialize, Deserialize)]
struct StoredAnswer {
    positives: Vec<StoredPositive>,
    rejected: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredPositive {
    photo: i64,
    score: f32,
    mask: rle::CocoRle,
}

/// Rebuilds positives from a stored answer; `None` when it does not fit the album (then it is recomputed).
fn from_stored(json: &str, entries: &[AlbumEntry]) -> Option<(Vec<Positive>, usize)> {
    let stored: StoredAnswer = serde_json::from_str(json).ok()?;
    let by_id: HashMap<i64, &AlbumEntry> = entries.iter().map(|e| (e.id.0, e)).collect();
    let mut positives = Vec::with_capacity(stored.positives.len());
    for p in stored.positives {
        let e = by_id.get(&p.photo)?;
        if p.mask.size != [e.height as usize, e.width as usize] {
            return None;
        }
        let mask = rle::decode(&p.mask).ok()?;
        positives.push(Positive {
            path: e.path.clone(),
            score: p.score,
            mask_area: mask.iter().filter(|&&m| m != 0).count(),
            width: e.width,
            height: e.height,
            mask,
        });
    }
    sort_by_score(&mut positives);
    Some((positives, stored.rejected))
}

fn sort_by_score(positives: &mut [Positive]) {
    positives.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.path.cmp(&b.path)));
}

/// What an album's answer depends on besides model and expression: which photos (id and content) it
/// holds and which of them have features. Any change, and the stored answer is not served.
pub fn album_fingerprint(backbone: &str, entries: &[AlbumEntry]) -> String {
    let mut h = Sha256::new();
    feed(&mut h, backbone.as_bytes());
    for e in entries {
        h.update(e.id.0.to_le_bytes());
        feed(&mut h, e.sha256.as_bytes());
        h.update([u8::from(e.has_features)]);
    }
    hex(&h.finalize())
}

/// The album's path below the watched root holding it (the root's own folder name for photos directly
/// in the root); the folder name when no root holds it.
pub fn album_name(album: &Path, roots: &[PathBuf]) -> String {
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    for root in roots {
        if let Ok(rel) = album.strip_prefix(root) {
            return if rel.as_os_str().is_empty() {
                name_of(root).unwrap_or_else(|| root.display().to_string())
            } else {
                rel.to_string_lossy().into_owned()
            };
        }
    }
    name_of(album).unwrap_or_else(|| album.display().to_string())
}

fn feed(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::PhotoId;

    #[test]
    fn album_names_are_relative_to_their_root() {
        let roots = [PathBuf::from("/home/u/Photos"), PathBuf::from("/mnt/disk")];
        assert_eq!(album_name(Path::new("/home/u/Photos/2019/Paris"), &roots), "2019/Paris");
        assert_eq!(album_name(Path::new("/home/u/Photos"), &roots), "Photos");
        assert_eq!(album_name(Path::new("/mnt/disk/x"), &roots), "x");
        assert_eq!(album_name(Path::new("/elsewhere/Rome"), &roots), "Rome");
    }

    #[test]
    fn empty_expressions_are_refused_and_whitespace_collapsed() {
        assert!(QueryRequest::new("  \t ", vec![]).unwrap_err().to_string().contains("empty"));
        assert_eq!(QueryRequest::new(" my   bike ", vec![]).unwrap().expression, "my bike");
    }

    #[test]
    fn fingerprint_follows_content_and_features() {
        let e = |id, sha: &str, has| AlbumEntry {
            id: PhotoId(id),
            path: PathBuf::from(format!("/a/{id}.jpg")),
            sha256: sha.into(),
            mtime_ns: 0,
            width: 4,
            height: 3,
            has_features: has,
        };
        let base = album_fingerprint("m", &[e(1, "aa", true), e(2, "bb", true)]);
        assert_eq!(base, album_fingerprint("m", &[e(1, "aa", true), e(2, "bb", true)]));
        assert_ne!(base, album_fingerprint("m", &[e(1, "aa", true), e(2, "bc", true)]), "content changed");
        assert_ne!(base, album_fingerprint("m", &[e(1, "aa", true), e(2, "bb", false)]), "features dropped");
        assert_ne!(base, album_fingerprint("m", &[e(1, "aa", true)]), "photo removed");
        assert_ne!(base, album_fingerprint("n", &[e(1, "aa", true), e(2, "bb", true)]), "other model");
    }
}

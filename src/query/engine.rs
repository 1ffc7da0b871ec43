//! The in-process query engine: the cache's albums, the search index's stored answers, and the model
//! deciding each album as a group ([`Engine::decide`], through the two-thread pipeline of
//! `pipeline.rs`) and then making the positives' masks ([`Engine::masks`]).
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decided::{Candidate, Decided, DecidedAlbum};
use super::model::{self, LoadedModel};
use super::pipeline::{self, decode_v, unreadable, Prepared, VJob};
use super::{rle, AlbumResult, Positive, QueryBackend, QueryProgress, QueryRequest, QueryResult};
use crate::library::cache::{AlbumEntry, Cache, FeatureRow, PhotoId, QueryAlbum};
use crate::library::search::{AlbumDoc, AnswerKey, SearchIndex};
use crate::library::{config, paths};
use crate::model::codec::{self, FeatureCodec};
use crate::model::grser::{self, EncodedExpression};
use crate::model::neck::VisualFeatures;

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
        let cache = Cache::open_for_reading(&paths::cache_file()?)?;
        let roots = config::Config::load(&paths::config_file()?)?.roots;
        let search = SearchIndex::open_or_in_memory(&paths::search_dir()?);
        let model = LoadedModel::load(&dir)?;
        let codec = model.codec();
        Ok(Self::new(model, codec, cache, search, roots))
    }

    /// The backbone id features are read under.
    pub fn backbone(&self) -> &str {
        &self.backbone
    }

    /// Runs the query over every album (or those `request.albums` names): [`Engine::decide`], then
    /// [`Engine::masks`].
    pub fn run(&mut self, request: &QueryRequest) -> Result<QueryResult> {
        let decided = self.decide(request)?;
        self.masks(decided, |_, _| {})
    }

    /// The first half of a query: which photos of every album show the expression, with their scores,
    /// before any mask is computed. BERT runs once; each album's V maps are read (the start of each
    /// feature blob, not the lateral maps) and the head decides. Albums whose answer is stored in the
    /// search index for the same photos come from there, masks included.
    pub fn decide(&mut self, request: &QueryRequest) -> Result<Decided> {
        // One view of the cache from here to the last mask ([`Engine::masks`] ends it).
        self.cache.begin_snapshot()?;
        let decided = self.decide_in_snapshot(request);
        if decided.is_err() {
            self.cache.end_snapshot();
        }
        decided
    }

    fn decide_in_snapshot(&mut self, request: &QueryRequest) -> Result<Decided> {
        let t_start = std::time::Instant::now();
        let mut albums: Vec<(QueryAlbum, String)> = self
            .cache
            .query_albums(&self.backbone)?
            .into_iter()
            .map(|a| {
                let name = album_name(&a.info.path, &self.roots);
                (a, name)
            })
            .collect();
        if albums.is_empty() {
            bail!("the library is empty: no photos are indexed; run `photoseg index PATH` with your photo folder");
        }
        // The search index is a cache: when it cannot be written (a full disk, a read-only folder) the
        // album names are matched from the cache's list instead, as when another process holds it.
        let synced = self.sync_search(&albums).unwrap_or_else(|e| {
            tracing::warn!("search index not updated, matching album names directly: {e:#}");
            false
        });
        if !request.albums.is_empty() {
            self.keep_wanted_albums(&mut albums, &request.albums, synced)?;
        }
        // Two stages side by side (pipeline.rs): this thread reads each album, a worker decides them.
        let grser = self.model.grser.clone();
        let albums = pipeline::decide_albums(grser, albums, t_start, |a, name, text| {
            self.prepare_album(&request.expression, a, name, text)
        })?;
        Ok(Decided { expression: request.expression.clone(), model: self.backbone.clone(), albums })
    }

    /// Keeps the albums `filters` name: an absolute folder keeps the albums in it or below it, any
    /// other filter the albums whose name contains it (through the search index when `synced`, else
    /// on the cache's list). An error names the filters and a few albums when none is left.
    fn keep_wanted_albums(
        &self,
        albums: &mut Vec<(QueryAlbum, String)>,
        filters: &[String],
        synced: bool,
    ) -> Result<()> {
        let mut wanted = std::collections::HashSet::new();
        // A folder: the albums in it or below it, by path (a watched root's subfolders are albums
        // whose names do not contain the root's name).
        let (folders, patterns): (Vec<&String>, Vec<&String>) =
            filters.iter().partition(|p| Path::new(p.as_str()).is_absolute());
        for folder in &folders {
            // As the caller spells it, or with its links resolved as the library stores roots.
            let spelt = Path::new(folder.as_str());
            let resolved = std::fs::canonicalize(spelt).unwrap_or_else(|_| spelt.to_path_buf());
            let inside = |p: &Path| p.starts_with(spelt) || p.starts_with(&resolved);
            wanted.extend(albums.iter().filter(|(a, _)| inside(&a.info.path)).map(|(a, _)| a.info.path.clone()));
        }
        if synced {
            for pattern in &patterns {
                wanted.extend(self.search.albums_matching(pattern)?);
            }
        } else {
            // Another process holds the index writer and the album documents may be stale: the
            // same rule, applied to the cache's album list directly.
            for (a, name) in albums.iter() {
                let name = name.to_lowercase();
                if patterns.iter().any(|p| name.contains(&p.to_lowercase())) {
                    wanted.insert(a.info.path.clone());
                }
            }
        }
        let names: Vec<String> = albums.iter().take(10).map(|(_, name)| name.clone()).collect();
        albums.retain(|(a, _)| wanted.contains(&a.info.path));
        if albums.is_empty() {
            let quoted = |v: &[&String]| v.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" or ");
            let mut why = Vec::new();
            if !patterns.is_empty() {
                why.push(format!("no album name contains {}", quoted(&patterns)));
            }
            if !folders.is_empty() {
                why.push(format!("no album is in the folder {} or below it", quoted(&folders)));
            }
            bail!("{}; albums are named e.g. {}", why.join(", and "), names.join(", "));
        }
        Ok(())
    }

    /// The second half of a query: masks of the positives [`Engine::decide`] found, album by album in
    /// its order, best score first within an album; `on_mask(album, positive)` sees each one as soon as
    /// it is made (`album` indexes `decided.albums`). Only the positives' lateral maps are read. New
    /// answers are stored in the search index, in one commit.
    pub fn masks(&mut self, decided: Decided, on_mask: impl FnMut(usize, &Positive)) -> Result<QueryResult> {
        let result = self.masks_in_snapshot(decided, on_mask);
        self.cache.end_snapshot();
        result
    }

    fn masks_in_snapshot(
        &mut self,
        decided: Decided,
        mut on_mask: impl FnMut(usize, &Positive),
    ) -> Result<QueryResult> {
        let Decided { expression, model, albums } = decided;
        let mut results = Vec::with_capacity(albums.len());
        let mut to_store: Vec<(PathBuf, String, String)> = Vec::new();
        for (ai, mut a) in albums.into_iter().enumerate() {
            let album = a.album.clone();
            let positives = match a.stored.take() {
                Some(positives) => {
                    for p in &positives {
                        on_mask(ai, p);
                    }
                    positives
                }
                None => {
                    let positives = self
                        .album_masks(&expression, &a, |p| on_mask(ai, p))
                        .with_context(|| format!("answering for album {}", album.display()))?;
                    let stored = StoredAnswer {
                        positives: positives
                            .iter()
                            .zip(&a.positives)
                            .map(|(p, c)| -> Result<StoredPositive> {
                                Ok(StoredPositive {
                                    photo: c.photo.0,
                                    score: p.score,
                                    mask: rle::encode(&p.mask, p.width as usize, p.height as usize)?,
                                })
                            })
                            .collect::<Result<_>>()?,
                        rejected: a.rejected,
                    };
                    if !a.indexed.is_empty() {
                        to_store.push((album.clone(), a.fingerprint.clone(), serde_json::to_string(&stored)?));
                    }
                    positives
                }
            };
            results.push(AlbumResult {
                album,
                name: a.name,
                photos: a.photos,
                positives,
                rejected: a.rejected,
                unindexed: a.unindexed,
                from_index: a.from_index,
            });
        }
        if !to_store.is_empty() {
            let answers: Vec<(AnswerKey<'_>, &str, &str)> = to_store
                .iter()
                .map(|(album, fp, json)| {
                    (AnswerKey { model: &self.backbone, album, expression: &expression }, fp.as_str(), json.as_str())
                })
                .collect();
            // Best effort: a busy or broken index costs the next query time, never this answer.
            if let Err(e) = self.search.store_answers(&answers) {
                tracing::warn!("cannot store the answers in the search index: {e:#}");
            }
        }
        Ok(QueryResult { expression, model, albums: results })
    }

    /// Rebuilds the album and photo documents when the album list changed since they were written.
    /// Returns whether they are current (false: another process held the writer).
    fn sync_search(&mut self, albums: &[(QueryAlbum, String)]) -> Result<bool> {
        let mut h = Sha256::new();
        for (a, name) in albums {
            feed(&mut h, a.info.path.as_os_str().as_bytes());
            feed(&mut h, name.as_bytes());
            for e in &a.entries {
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
            .map(|(a, name)| AlbumDoc {
                path: a.info.path.clone(),
                name: name.clone(),
                photos: a.entries.iter().map(|e| e.path.clone()).collect(),
                first_mtime_ns: a.entries.iter().map(|e| e.mtime_ns).min(),
                last_mtime_ns: a.entries.iter().map(|e| e.mtime_ns).max(),
            })
            .collect();
        self.search.replace_albums(&docs, &fingerprint)
    }

    /// One album's stored answer, or its V bytes for the pipeline's worker (`pipeline::decide_job`). `text`
    /// is the expression's encoding, made on first need.
    fn prepare_album(
        &mut self,
        expression: &str,
        a: QueryAlbum,
        name: String,
        text: &mut Option<EncodedExpression>,
    ) -> Result<Prepared> {
        let QueryAlbum { info, entries, rows } = a;
        let indexed: Vec<(AlbumEntry, FeatureRow)> =
            entries.iter().zip(&rows).filter_map(|(e, r)| r.map(|r| (e.clone(), r))).collect();
        let fingerprint = album_fingerprint(&self.backbone, &entries);
        let mut d = DecidedAlbum {
            album: info.path,
            name,
            photos: entries.len(),
            positives: Vec::new(),
            rejected: 0,
            unindexed: entries.len() - indexed.len(),
            from_index: false,
            fingerprint,
            stored: None,
            indexed: Vec::new(),
            z: None,
        };
        if indexed.is_empty() {
            d.stored = Some(Vec::new());
            return Ok(Prepared::Done(d));
        }
        let key = AnswerKey { model: &self.backbone, album: &d.album, expression };
        // An unreadable index only costs the stored answer: the album is answered from its features.
        let stored = self.search.answer(&key, &d.fingerprint).unwrap_or_else(|e| {
            tracing::warn!("cannot read a stored answer from the search index: {e:#}");
            None
        });
        if let Some(json) = stored {
            if let Some((positives, rejected)) = from_stored(&json, &entries) {
                d.positives = positives
                    .iter()
                    .map(|p| Candidate {
                        path: p.path.clone(),
                        score: p.score,
                        width: p.width,
                        height: p.height,
                        photo: entries.iter().find(|e| e.path == p.path).map_or(PhotoId(0), |e| e.id),
                        z_row: 0,
                    })
                    .collect();
                d.stored = Some(positives);
                d.rejected = rejected;
                d.from_index = true;
                return Ok(Prepared::Done(d));
            }
        }
        if text.is_none() {
            *text = Some(self.model.grser.encode_expression(expression)?);
        }
        let rows: Vec<FeatureRow> = indexed.iter().map(|(_, r)| *r).collect();
        let (bytes, ranges) = self.read_v_bytes(&rows, |i| &indexed[i].0.path)?;
        Ok(Prepared::Job(VJob { d, indexed, bytes, ranges }))
    }

    /// V of the photos at `rows`, as stored: each photo's prefix of its feature blob through V, one after
    /// the other in one buffer, and where each lies in it. `path(i)` names photo `i` in errors.
    fn read_v_bytes<'p>(
        &self,
        rows: &[FeatureRow],
        path: impl Fn(usize) -> &'p Path,
    ) -> Result<(Vec<u8>, Vec<std::ops::Range<usize>>)> {
        let mut bytes = Vec::new();
        let head = self.cache.read_feature_prefixes_into(&rows[..1], codec::HEADER, &mut bytes)?;
        let head = head.into_iter().next().flatten().map(|r| &bytes[r]).ok_or_else(|| vanished(path(0)))?;
        let v_end = codec::layout(head).with_context(|| unreadable(path(0)))?.v_end();
        bytes.clear();
        let ranges = self.cache.read_feature_prefixes_into(rows, v_end, &mut bytes)?;
        let ranges =
            ranges.into_iter().enumerate().map(|(i, r)| r.ok_or_else(|| vanished(path(i)))).collect::<Result<_>>()?;
        Ok((bytes, ranges))
    }

    /// V of the photos at `rows`, stacked (values and `[N, C_v, h, w]`), from the start of each feature blob.
    /// `path(i)` names photo `i` in errors.
    fn read_v<'p>(&self, rows: &[FeatureRow], path: impl Fn(usize) -> &'p Path) -> Result<(Vec<f32>, [usize; 4])> {
        let (bytes, ranges) = self.read_v_bytes(rows, &path)?;
        decode_v(&bytes, &ranges, path)
    }

    /// Masks of an album's positives (from [`Engine::decide`]), in its order.
    /// `on_mask` sees each as soon as it is made.
    fn album_masks(
        &mut self,
        expression: &str,
        a: &DecidedAlbum,
        mut on_mask: impl FnMut(&Positive),
    ) -> Result<Vec<Positive>> {
        if a.positives.is_empty() {
            return Ok(Vec::new());
        }
        let grser = self.model.grser.clone();
        let z = match &a.z {
            Some(z) => z.clone(),
            None => {
                // Dropped for memory: decide again (same V, same answer).
                let rows: Vec<FeatureRow> = a.indexed.iter().map(|(_, r, _)| *r).collect();
                let (v, dims) = self.read_v(&rows, |i| &a.indexed[i].2)?;
                let decision = grser.decide_values(v, dims, &grser.encode_expression(expression)?)?;
                decision.z_positives.context("the decision changed between two readings of the same features")?
            }
        };
        let device = grser.device.clone();
        let mut out = Vec::with_capacity(a.positives.len());
        // A few positives at a time: the first masks go out before the album's last one is made.
        for chunk in a.positives.chunks(MASK_CHUNK) {
            let mut parts = Vec::with_capacity(chunk.len());
            let mut order = Vec::with_capacity(chunk.len());
            for c in chunk {
                let bytes = self.cache.features(c.photo, &self.backbone)?.with_context(|| {
                    format!("features of {} vanished while reading; run the query again", c.path.display())
                })?;
                let feats = codec::decode(&bytes, &device).with_context(|| {
                    format!("cached features of {} are unreadable; delete the cache file to re-index", c.path.display())
                })?;
                parts.push(feats);
                order.push(c.z_row as u32);
            }
            let lat = VisualFeatures::cat(&parts)?.laterals();
            let zc = z.index_select(&Tensor::new(order.as_slice(), z.device())?, 0)?;
            let logits = grser.mask_logits(&zc, &lat)?; // [M, h4, w4]
            for (j, c) in chunk.iter().enumerate() {
                let mask = photo_mask(&logits.get(j)?, &c.path, c.width as usize, c.height as usize)?;
                let p = Positive {
                    path: c.path.clone(),
                    score: c.score,
                    mask_area: mask.iter().filter(|&&m| m != 0).count(),
                    width: c.width,
                    height: c.height,
                    mask,
                };
                on_mask(&p);
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// A positive's mask at its own resolution: the decoder's grid upsampled under the photo's guidance
/// ([`crate::model::upsample`]); bilinearly when the photo cannot be read now or no longer has the
/// indexed size (it changed since; the watcher will re-index it).
fn photo_mask(logits: &Tensor, path: &std::path::Path, width: usize, height: usize) -> Result<Vec<u8>> {
    match crate::library::photo::load(path) {
        Ok(img) if (img.width() as usize, img.height() as usize) == (width, height) => {
            let (gh, gw) = logits.dims2()?;
            let l: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            Ok(crate::model::upsample::guided_mask(&l, gh, gw, img.as_raw(), width, height))
        }
        Ok(_) => {
            tracing::warn!("{} changed size since it was indexed; its mask is not guided by the photo", path.display());
            Ok(grser::mask_at(logits, height, width)?)
        }
        Err(e) => {
            tracing::warn!("{}: {}; its mask is not guided by the photo", path.display(), e.reason());
            Ok(grser::mask_at(logits, height, width)?)
        }
    }
}

/// Positives whose masks are decoded together (one decoder batch).
const MASK_CHUNK: usize = 8;

fn vanished(path: &Path) -> anyhow::Error {
    anyhow::anyhow!("features of {} vanished while reading; run the query again", path.display())
}

impl QueryBackend for Engine {
    fn describe(&self) -> String {
        format!("this process with the model {} ({}, {})", self.model.name, self.backbone, self.model.dir.display())
    }

    fn query(&mut self, request: &QueryRequest) -> Result<QueryResult> {
        self.run(request)
    }

    fn query_streaming(&mut self, request: &QueryRequest, progress: &mut dyn QueryProgress) -> Result<QueryResult> {
        let decided = self.decide(request)?;
        progress.decided(&decided.summary())?;
        // The callback cannot fail the mask loop; the first error stops further calls and is returned.
        let mut failed: Option<anyhow::Error> = None;
        let result = self.masks(decided, |album, p| {
            if failed.is_none() {
                failed = progress.mask(album, p).err();
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(result),
        }
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

//! The query's JSON documents, both ways, in one place: the answer (docs/query.md, `photoseg query
//! --json` and the daemon's `Query` reply) and the summary the daemon's `QueryDecided` signal carries
//! (docs/daemon.md). The daemon writes them and `service::client` reads them with the same types, so the
//! two sides cannot drift apart. Fields keep the documented order; paths travel as (lossy) UTF-8.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::rle::{self, CocoRle};
use super::{AlbumResult, AlbumSummary, Positive, QueryResult, QuerySummary};

/// Version of the answer's JSON; a reader refuses any other.
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct JsonResult {
    version: u32,
    expression: String,
    model: String,
    albums: Vec<JsonAlbum>,
}

#[derive(Serialize, Deserialize)]
struct JsonAlbum {
    album: String,
    name: String,
    photos: usize,
    positives: Vec<JsonPositive>,
    rejected: usize,
    unindexed: usize,
    from_index: bool,
}

#[derive(Serialize, Deserialize)]
struct JsonPositive {
    path: String,
    score: f32,
    mask_area: usize,
    width: u32,
    height: u32,
    mask: CocoRle,
}

#[derive(Serialize, Deserialize)]
struct JsonSummary {
    expression: String,
    albums: Vec<JsonAlbumSummary>,
}

#[derive(Serialize, Deserialize)]
struct JsonAlbumSummary {
    album: String,
    name: String,
    photos: usize,
    positives: Vec<JsonScored>,
    rejected: usize,
    unindexed: usize,
}

#[derive(Serialize, Deserialize)]
struct JsonScored {
    path: String,
    score: f32,
}

fn lossy(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

impl QueryResult {
    /// The documented JSON (docs/query.md), pretty-printed, masks as COCO RLE.
    pub fn to_json(&self) -> Result<String> {
        let albums = self
            .albums
            .iter()
            .map(|a| -> Result<JsonAlbum> {
                let positives = a
                    .positives
                    .iter()
                    .map(|p| -> Result<JsonPositive> {
                        Ok(JsonPositive {
                            path: lossy(&p.path),
                            score: p.score,
                            mask_area: p.mask_area,
                            width: p.width,
                            height: p.height,
                            mask: rle::encode(&p.mask, p.width as usize, p.height as usize)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(JsonAlbum {
                    album: lossy(&a.album),
                    name: a.name.clone(),
                    photos: a.photos,
                    positives,
                    rejected: a.rejected,
                    unindexed: a.unindexed,
                    from_index: a.from_index,
                })
            })
            .collect::<Result<_>>()?;
        let json = JsonResult {
            version: JSON_VERSION,
            expression: self.expression.clone(),
            model: self.model.clone(),
            albums,
        };
        Ok(serde_json::to_string_pretty(&json)?)
    }

    /// [`QueryResult::to_json`] read back, masks decoded; another version or a mask of the wrong size
    /// is refused.
    pub fn from_json(json: &str) -> Result<Self> {
        let r: JsonResult = serde_json::from_str(json)?;
        if r.version != JSON_VERSION {
            bail!(
                "answer version {} (this photoseg reads version {JSON_VERSION}); are daemon and CLI the same build?",
                r.version
            );
        }
        let albums = r
            .albums
            .into_iter()
            .map(|a| -> Result<AlbumResult> {
                let positives = a
                    .positives
                    .into_iter()
                    .map(|p| -> Result<Positive> {
                        if p.mask.size != [p.height as usize, p.width as usize] {
                            bail!("mask of {} is {:?}, the photo {} x {}", p.path, p.mask.size, p.width, p.height);
                        }
                        let mask = rle::decode(&p.mask)?;
                        Ok(Positive {
                            path: PathBuf::from(p.path),
                            score: p.score,
                            mask_area: p.mask_area,
                            width: p.width,
                            height: p.height,
                            mask,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(AlbumResult {
                    album: PathBuf::from(a.album),
                    name: a.name,
                    photos: a.photos,
                    positives,
                    rejected: a.rejected,
                    unindexed: a.unindexed,
                    from_index: a.from_index,
                })
            })
            .collect::<Result<_>>()?;
        Ok(QueryResult { expression: r.expression, model: r.model, albums })
    }
}

impl QuerySummary {
    /// The summary as the daemon's `QueryDecided` signal carries it (docs/daemon.md): the answer's JSON
    /// without `version`, `model`, `from_index` and the positives' masks, sizes and areas.
    pub fn to_json(&self) -> Result<String> {
        let albums = self.albums.iter().map(|a| JsonAlbumSummary {
            album: lossy(&a.album),
            name: a.name.clone(),
            photos: a.photos,
            positives: a
                .positives
                .iter()
                .map(|(path, score)| JsonScored { path: lossy(path), score: *score })
                .collect(),
            rejected: a.rejected,
            unindexed: a.unindexed,
        });
        let json = JsonSummary { expression: self.expression.clone(), albums: albums.collect() };
        Ok(serde_json::to_string(&json)?)
    }

    /// [`QuerySummary::to_json`] read back.
    pub fn from_json(json: &str) -> Result<Self> {
        let s: JsonSummary = serde_json::from_str(json).context("not a query summary (docs/daemon.md)")?;
        let albums = s.albums.into_iter().map(|a| AlbumSummary {
            album: a.album.into(),
            name: a.name,
            photos: a.photos,
            positives: a.positives.into_iter().map(|p| (p.path.into(), p.score)).collect(),
            rejected: a.rejected,
            unindexed: a.unindexed,
        });
        Ok(Self { expression: s.expression, albums: albums.collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> QueryResult {
        QueryResult {
            expression: "my bike".into(),
            model: "grser-64px-f16@0123456789abcdef".into(),
            albums: vec![AlbumResult {
                album: "/p/Paris".into(),
                name: "Paris".into(),
                photos: 3,
                positives: vec![Positive {
                    path: "/p/Paris/a.jpg".into(),
                    score: 0.5,
                    mask_area: 3,
                    width: 3,
                    height: 2,
                    mask: vec![0, 1, 1, 0, 0, 1],
                }],
                rejected: 1,
                unindexed: 1,
                from_index: true,
            }],
        }
    }

    #[test]
    fn answers_round_trip_through_the_json() {
        let result = result();
        let json = result.to_json().unwrap();
        assert_eq!(QueryResult::from_json(&json).unwrap(), result);
        // The documented field order (docs/query.md).
        let at = |k: &str| json.find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("{k} missing: {json}"));
        assert!(at("version") < at("expression") && at("expression") < at("model") && at("model") < at("albums"));
        assert!(at("path") < at("score") && at("score") < at("mask_area") && at("height") < at("mask"));
        let wrong = json.replace("\"version\": 1", "\"version\": 2");
        assert!(QueryResult::from_json(&wrong).unwrap_err().to_string().contains("answer version 2"));
        let bad_mask = json.replace("\"width\": 3", "\"width\": 4");
        assert!(QueryResult::from_json(&bad_mask).unwrap_err().to_string().contains("mask of /p/Paris/a.jpg"));
    }

    #[test]
    fn summaries_round_trip_without_masks() {
        let result = result();
        let summary = QuerySummary {
            expression: result.expression.clone(),
            albums: vec![AlbumSummary {
                album: "/p/Paris".into(),
                name: "Paris".into(),
                photos: 3,
                positives: vec![("/p/Paris/a.jpg".into(), 0.5)],
                rejected: 1,
                unindexed: 1,
            }],
        };
        let json = summary.to_json().unwrap();
        assert!(!json.contains("mask") && !json.contains("version"), "{json}");
        let back = QuerySummary::from_json(&json).unwrap();
        assert_eq!(back, summary);
        assert!(QuerySummary::from_json("{}").is_err());
    }
}

//! How [`Engine::decide`](super::Engine::decide) decides a query's albums: in two stages side by side.
//! The calling thread asks the search index and reads each album's V bytes from SQLite (the engine's
//! `prepare` step); one worker thread decodes them and runs the head, album by album in order, while
//! the next album is read.
//!
//! Why two threads: reading (SQLite, the search index) and deciding (decoding V, the head's arithmetic)
//! are different work, so reading the next album overlaps deciding this one instead of adding to it.
//! One worker, taking the albums in order, so the budget of kept z ([`KEPT_Z_BYTES`]) is spent as by a
//! single thread and the first error in album order is the one returned.
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::decided::{Candidate, DecidedAlbum};
use crate::library::cache::{AlbumEntry, FeatureRow, QueryAlbum};
use crate::model::codec;
use crate::model::grser::{self, EncodedExpression};

/// Bytes of triphasic features [`Engine::decide`](super::Engine::decide) keeps for the masks; albums
/// beyond it are decided again when their masks are made (the paper model's z is ~1.4 MB a positive).
const KEPT_Z_BYTES: usize = 256 << 20;

/// An album to decide: its answer so far and its photos' V as stored (`Engine::read_v_bytes`).
pub(super) struct VJob {
    pub(super) d: DecidedAlbum,
    pub(super) indexed: Vec<(AlbumEntry, FeatureRow)>,
    pub(super) bytes: Vec<u8>,
    pub(super) ranges: Vec<std::ops::Range<usize>>,
}

/// What the reading stage hands on for one album.
pub(super) enum Prepared {
    /// Nothing to compute (no indexed photo, or the search index's answer).
    Done(DecidedAlbum),
    Job(VJob),
}

/// Decides `albums` in order: `prepare` reads one album on this thread (its stored answer, or its V
/// bytes; the expression's encoding is made on first need into the `Option` it is handed), and a
/// worker decodes and decides the jobs. `started`: when the query began, for the debug log. Albums
/// after the first error are not read; that error is returned.
pub(super) fn decide_albums(
    grser: Arc<grser::Grser>,
    albums: Vec<(QueryAlbum, String)>,
    started: std::time::Instant,
    mut prepare: impl FnMut(QueryAlbum, String, &mut Option<EncodedExpression>) -> Result<Prepared>,
) -> Result<Vec<DecidedAlbum>> {
    let count = albums.len();
    let mut results: Vec<Option<Result<DecidedAlbum>>> = (0..count).map(|_| None).collect();
    let mut text: Option<EncodedExpression> = None;
    let t_main = std::time::Instant::now();
    let done = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, VJob, EncodedExpression)>(2);
        let worker = s.spawn(move || {
            let mut kept_z = 0usize;
            let mut done = Vec::new();
            let mut busy = std::time::Duration::ZERO;
            let mut decoding = std::time::Duration::ZERO;
            for (i, job, text) in rx {
                let t = std::time::Instant::now();
                let path = job.d.album.clone();
                let r = decide_job(&grser, &text, job, &mut kept_z, &mut decoding)
                    .with_context(|| format!("answering for album {}", path.display()));
                busy += t.elapsed();
                done.push((i, r));
            }
            (done, busy, decoding)
        });
        let mut read = std::time::Duration::ZERO;
        for (i, (a, name)) in albums.into_iter().enumerate() {
            let path = a.info.path.clone();
            let t = std::time::Instant::now();
            let prepared =
                prepare(a, name, &mut text).with_context(|| format!("answering for album {}", path.display()));
            read += t.elapsed();
            match prepared {
                Ok(Prepared::Done(d)) => results[i] = Some(Ok(d)),
                Ok(Prepared::Job(job)) => {
                    let text = text.clone().expect("encoded before the first job");
                    if tx.send((i, job, text)).is_err() {
                        break; // the worker panicked: join says why
                    }
                }
                Err(e) => {
                    results[i] = Some(Err(e));
                    break;
                }
            }
        }
        drop(tx);
        let t = std::time::Instant::now();
        let done = worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        tracing::debug!(
            "decide: listing albums {:.1} ms, then {:.1} ms: reading (search index, SQLite) {:.1} ms, \
             waiting {:.1} ms for the worker, busy {:.1} ms decoding ({:.1} ms) and deciding",
            (t_main - started).as_secs_f64() * 1e3,
            t_main.elapsed().as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3,
            done.1.as_secs_f64() * 1e3,
            done.2.as_secs_f64() * 1e3
        );
        done.0
    });
    for (i, r) in done {
        results[i] = Some(r);
    }
    let mut out = Vec::with_capacity(count);
    for r in results {
        // Albums after a failed one were never asked: the first error (in album order) ends the loop.
        out.push(r.expect("every album before the first error is answered")?);
    }
    Ok(out)
}

/// Decodes a job's V and decides; `kept_z` counts the bytes of triphasic features kept for masks so far.
/// `decoding` adds up the time spent decoding V (for the debug log).
fn decide_job(
    grser: &grser::Grser,
    text: &EncodedExpression,
    job: VJob,
    kept_z: &mut usize,
    decoding: &mut std::time::Duration,
) -> Result<DecidedAlbum> {
    let VJob { mut d, indexed, bytes, ranges } = job;
    let t = std::time::Instant::now();
    let (v, dims) = decode_v(&bytes, &ranges, |i| &indexed[i].0.path)?;
    *decoding += t.elapsed();
    drop(bytes);
    let decision = grser.decide_values(v, dims, text)?;
    let margin = grser.decision_margin() as f32;
    d.rejected = indexed.len() - decision.positives.len();
    for (j, &i) in decision.positives.iter().enumerate() {
        let e = &indexed[i].0;
        d.positives.push(Candidate {
            path: e.path.clone(),
            score: decision.d_neg[i] - decision.d_pos[i] - margin,
            width: e.width,
            height: e.height,
            photo: e.id,
            z_row: j,
        });
    }
    d.positives.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.path.cmp(&b.path)));
    if let Some(z) = decision.z_positives {
        let bytes = z.elem_count() * z.dtype().size_in_bytes();
        // Kept for the masks up to a budget; beyond it the album's decision is recomputed then.
        if *kept_z + bytes <= KEPT_Z_BYTES {
            *kept_z += bytes;
            d.z = Some(z);
        }
    }
    d.indexed = indexed.into_iter().map(|(e, r)| (e.id, r, e.path)).collect();
    Ok(d)
}

/// Decodes the V prefixes `bytes[ranges[i]]` straight into one stacked buffer: values and
/// `[N, C_v, h, w]`. `path(i)` names photo `i` in errors.
pub(super) fn decode_v<'p>(
    bytes: &[u8],
    ranges: &[std::ops::Range<usize>],
    path: impl Fn(usize) -> &'p Path,
) -> Result<(Vec<f32>, [usize; 4])> {
    let mut values = Vec::new();
    let mut dims: Option<[usize; 4]> = None;
    for (i, r) in ranges.iter().enumerate() {
        let di = codec::decode_v_into(&bytes[r.clone()], &mut values).with_context(|| unreadable(path(i)))?;
        if di[0] != 1 || dims.is_some_and(|d| d[1..] != di[1..]) {
            bail!("{}: its V has shape {di:?}, unlike the album's other photos", unreadable(path(i)));
        }
        if dims.is_none() {
            values.reserve(values.len() * (ranges.len() - 1));
        }
        dims = Some(di);
    }
    let [_, c, h, w] = dims.context("no photo to decode")?;
    Ok((values, [ranges.len(), c, h, w]))
}

pub(super) fn unreadable(path: &Path) -> String {
    format!("cached features of {} are unreadable; delete the cache file to re-index", path.display())
}

//! `photoseg query EXPRESSION`: which photos of each album show it, with masks. Printing and file
//! output only; the answer comes from a [`crate::query::QueryBackend`].
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::library::config::Config;
use crate::library::paths;
use crate::query::render::{self, MASK_SUFFIX, OVERLAY_SUFFIX};
use crate::query::{AlbumSummary, Positive, QueryProgress, QueryRequest, QuerySummary};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// What to look for, e.g. "my bike".
    pub expression: String,
    /// Only albums whose name contains NAME, ignoring case, or, for an absolute path, the albums in
    /// that folder or below it (repeat for several).
    #[arg(long = "album", value_name = "NAME|FOLDER")]
    pub albums: Vec<String>,
    /// Print the answer as JSON (docs/query.md), masks as COCO RLE.
    #[arg(long)]
    pub json: bool,
    /// Write each mask as a PNG (255 = object) to DIR/<album>/<photo>.mask.png; DIR must be outside
    /// the watched folders.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Write each photo with its object outlined and the rest dimmed to DIR/<album>/<photo>.overlay.jpg; DIR
    /// must be outside the watched folders.
    #[arg(long, value_name = "DIR")]
    pub overlays: Option<PathBuf>,
    /// Model directory (default: $PHOTOSEG_MODEL, else the active installed model, `photoseg model list`).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
}

pub fn run(args: QueryArgs) -> Result<()> {
    let request = QueryRequest::new(&args.expression, args.albums.clone())?;
    // Refuse bad output folders before the (slow) query.
    let roots = Config::load(&paths::config_file()?)?.roots;
    let masks = args.masks.as_deref().map(|d| render::prepare_output_dir(d, &roots)).transpose()?;
    let overlays = args.overlays.as_deref().map(|d| render::prepare_output_dir(d, &roots)).transpose()?;

    let mut backend = crate::service::client::connect(args.model.as_deref())?;
    // Text goes out as the answer is made: the list of albums and their counts right after the
    // decision, each positive's line (with its mask's area) and files as soon as its mask exists.
    let mut out = Streamed::new(masks, overlays, (!args.json).then_some(Stdout));
    let result = backend.query_streaming(&request, &mut out)?;
    // On stderr, so the answer on stdout (text or JSON) stays the same whoever answers.
    eprintln!("photoseg: answered by {}", backend.describe());
    if args.json {
        super::print_out(&(result.to_json()? + "\n"))
    } else {
        out.finish()
    }
}

/// Where text lines go: stdout, flushed line by line (a closed pipe ends the output quietly).
struct Stdout;

/// A sink for text lines (stdout, or a buffer in tests).
trait Lines {
    fn line(&mut self, text: &str) -> Result<()>;
}

impl Lines for Stdout {
    fn line(&mut self, text: &str) -> Result<()> {
        super::print_out(&format!("{text}\n"))
    }
}

impl Lines for String {
    fn line(&mut self, text: &str) -> Result<()> {
        self.push_str(text);
        self.push('\n');
        Ok(())
    }
}

/// Writes mask and overlay files as masks come and, given a text sink, prints the answer as it is made.
/// The text is the same whether it streams or not: the albums in order, each positive under its album.
struct Streamed<W> {
    masks: Option<PathBuf>,
    overlays: Option<PathBuf>,
    text: Option<W>,
    summary: Option<QuerySummary>,
    /// The first album not yet printed in full, whether its line is out, and how many of its positives.
    album: usize,
    album_line_out: bool,
    shown: usize,
}

impl<W: Lines> Streamed<W> {
    fn new(masks: Option<PathBuf>, overlays: Option<PathBuf>, text: Option<W>) -> Self {
        Self { masks, overlays, text, summary: None, album: 0, album_line_out: false, shown: 0 }
    }

    /// Prints every album line and count that no longer waits for a mask.
    fn advance(&mut self) -> Result<()> {
        let (Some(text), Some(summary)) = (self.text.as_mut(), self.summary.as_ref()) else { return Ok(()) };
        while let Some(a) = summary.albums.get(self.album) {
            if !self.album_line_out {
                text.line(&album_line(a))?;
                self.album_line_out = true;
            }
            if self.shown < a.positives.len() {
                break;
            }
            (self.album, self.album_line_out, self.shown) = (self.album + 1, false, 0);
        }
        Ok(())
    }

    /// The footer, once every mask is out.
    fn finish(&mut self) -> Result<()> {
        let (Some(text), Some(summary)) = (self.text.as_mut(), self.summary.as_ref()) else { return Ok(()) };
        let unindexed: usize = summary.albums.iter().map(|a| a.unindexed).sum();
        if unindexed > 0 {
            text.line(&format!(
                "\n{unindexed} photos are not indexed for this model yet; run `photoseg index` to include them"
            ))?;
        }
        Ok(())
    }
}

impl<W: Lines> QueryProgress for Streamed<W> {
    fn decided(&mut self, summary: &QuerySummary) -> Result<()> {
        // Albums outside every watched root (the root was unwatched since) are photo folders too.
        let albums: Vec<PathBuf> = summary.albums.iter().map(|a| a.album.clone()).collect();
        for dir in self.masks.iter().chain(&self.overlays) {
            render::prepare_output_dir(dir, &albums)?;
        }
        if let Some(text) = self.text.as_mut() {
            let found: usize = summary.albums.iter().map(|a| a.positives.len()).sum();
            let photos: usize = summary.albums.iter().map(|a| a.photos).sum();
            text.line(&format!(
                "{:?}: found in {found} of {photos} photos, {} albums",
                summary.expression,
                summary.albums.len()
            ))?;
        }
        self.summary = Some(summary.clone());
        self.advance()
    }

    fn mask(&mut self, album: usize, p: &Positive) -> Result<()> {
        let name = self.summary.as_ref().and_then(|s| s.albums.get(album)).map(|a| a.name.clone());
        let name = name.context("a mask came for an album the decision did not list")?;
        if let Some(dir) = &self.masks {
            render::write_mask_png(&render::output_path(dir, &name, &p.path, MASK_SUFFIX), p)?;
        }
        if let Some(dir) = &self.overlays {
            // A photo deleted or changed since indexing: say so and go on with the others.
            if let Err(e) = render::write_overlay(&render::output_path(dir, &name, &p.path, OVERLAY_SUFFIX), p) {
                eprintln!("photoseg: no overlay for {}: {e:#}", p.path.display());
            }
        }
        if let Some(text) = self.text.as_mut() {
            if album != self.album {
                bail!("masks came out of order (album {album} while album {} is not finished)", self.album);
            }
            text.line(&positive_line(p))?;
            self.shown += 1;
        }
        self.advance()
    }
}

fn album_line(a: &AlbumSummary) -> String {
    let mut line =
        format!("\n{}  ({})  {} found, {} rejected", a.name, a.album.display(), a.positives.len(), a.rejected);
    if a.unindexed > 0 {
        line.push_str(&format!(", {} not indexed", a.unindexed));
    }
    line
}

fn positive_line(p: &Positive) -> String {
    let pixels = (p.width as usize * p.height as usize).max(1);
    format!(
        "  {:>7.3}  {}  mask {} px ({:.1}%)",
        p.score,
        p.path.display(),
        p.mask_area,
        100.0 * p.mask_area as f64 / pixels as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn album(name: &str, positives: &[(&str, f32)], rejected: usize, unindexed: usize) -> AlbumSummary {
        AlbumSummary {
            album: PathBuf::from("/photos").join(name),
            name: name.into(),
            photos: positives.len() + rejected + unindexed,
            positives: positives.iter().map(|(p, s)| (PathBuf::from(format!("/photos/{name}/{p}")), *s)).collect(),
            rejected,
            unindexed,
        }
    }

    fn positive(summary: &QuerySummary, album: usize, i: usize, area: usize) -> Positive {
        let (path, score) = summary.albums[album].positives[i].clone();
        Positive { path, score, mask_area: area, width: 10, height: 10, mask: vec![0; 100] }
    }

    #[test]
    fn text_streams_each_line_as_soon_as_nothing_before_it_waits_for_a_mask() -> Result<()> {
        let summary = QuerySummary {
            expression: "the red circle".into(),
            albums: vec![
                album("empty", &[], 3, 0),
                album("two", &[("a.png", 2.5), ("b.png", 0.25)], 1, 0),
                album("none", &[], 2, 1),
                album("one", &[("c.png", 1.0)], 0, 0),
            ],
        };
        let mut out = Streamed::new(None, None, Some(String::new()));
        out.decided(&summary)?;
        // Right after the decision: the totals, the album without positives and the next album's line.
        assert_eq!(
            out.text.as_deref(),
            Some(
                "\"the red circle\": found in 3 of 10 photos, 4 albums\n\n\
                 empty  (/photos/empty)  0 found, 3 rejected\n\n\
                 two  (/photos/two)  2 found, 1 rejected\n"
            )
        );
        out.mask(1, &positive(&summary, 1, 0, 25))?;
        assert!(out.text.as_deref().unwrap().ends_with("    2.500  /photos/two/a.png  mask 25 px (25.0%)\n"));
        assert!(!out.text.as_deref().unwrap().contains("none"), "album 'none' waits for album 'two'");
        out.mask(1, &positive(&summary, 1, 1, 5))?;
        // 'two' is complete: 'none' (no positives) and the line of 'one' follow at once.
        assert!(out.text.as_deref().unwrap().ends_with(
            "    0.250  /photos/two/b.png  mask 5 px (5.0%)\n\n\
             none  (/photos/none)  0 found, 2 rejected, 1 not indexed\n\n\
             one  (/photos/one)  1 found, 0 rejected\n"
        ));
        // A mask for an album already finished is refused, not printed under the wrong album.
        assert!(out.mask(1, &positive(&summary, 1, 0, 25)).is_err());
        out.mask(3, &positive(&summary, 3, 0, 100))?;
        out.finish()?;
        assert!(out.text.as_deref().unwrap().ends_with(
            "    1.000  /photos/one/c.png  mask 100 px (100.0%)\n\n\
             1 photos are not indexed for this model yet; run `photoseg index` to include them\n"
        ));
        Ok(())
    }
}

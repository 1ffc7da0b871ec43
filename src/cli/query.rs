//! `photoseg query EXPRESSION`: which photos of each album show it, with masks. Printing and file
//! output only; the answer comes from a [`crate::query::QueryBackend`].
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::library::config::Config;
use crate::library::paths;
use crate::query::render::{self, MASK_SUFFIX, OVERLAY_SUFFIX};
use crate::query::{self, QueryRequest, QueryResult};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// What to look for, e.g. "my bike".
    pub expression: String,
    /// Only albums whose name contains NAME, ignoring case (repeat for several).
    #[arg(long = "album", value_name = "NAME")]
    pub albums: Vec<String>,
    /// Print the answer as JSON (docs/query.md), masks as COCO RLE.
    #[arg(long)]
    pub json: bool,
    /// Write each mask as a PNG (255 = object) to DIR/<album>/<photo>.mask.png; DIR must be outside
    /// the watched folders.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Write each photo with its mask tinted and outlined to DIR/<album>/<photo>.overlay.jpg; DIR
    /// must be outside the watched folders.
    #[arg(long, value_name = "DIR")]
    pub overlays: Option<PathBuf>,
    /// Model directory (default: $PHOTOSEG_MODEL, else the installed model).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
}

pub fn run(args: QueryArgs) -> Result<()> {
    let request = QueryRequest::new(&args.expression, args.albums.clone())?;
    // Refuse bad output folders before the (slow) query.
    let roots = Config::load(&paths::config_file()?)?.roots;
    let masks = args.masks.as_deref().map(|d| render::prepare_output_dir(d, &roots)).transpose()?;
    let overlays = args.overlays.as_deref().map(|d| render::prepare_output_dir(d, &roots)).transpose()?;

    let mut backend = query::connect(args.model.as_deref())?;
    let result = backend.query(&request)?;

    if let Some(dir) = &masks {
        check_albums_outside(dir, &result)?;
        for a in &result.albums {
            for p in &a.positives {
                render::write_mask_png(&render::output_path(dir, &a.name, &p.path, MASK_SUFFIX), p)?;
            }
        }
    }
    if let Some(dir) = &overlays {
        check_albums_outside(dir, &result)?;
        for a in &result.albums {
            for p in &a.positives {
                // A photo deleted or changed since indexing: say so and go on with the others.
                if let Err(e) = render::write_overlay(&render::output_path(dir, &a.name, &p.path, OVERLAY_SUFFIX), p) {
                    eprintln!("photoseg: no overlay for {}: {e:#}", p.path.display());
                }
            }
        }
    }

    if args.json {
        super::print_out(&(result.to_json()? + "\n"))
    } else {
        super::print_out(&text(&result))
    }
}

/// Albums outside every watched root (the root was unwatched since) are photo folders too.
fn check_albums_outside(dir: &std::path::Path, result: &QueryResult) -> Result<()> {
    let albums: Vec<PathBuf> = result.albums.iter().map(|a| a.album.clone()).collect();
    render::prepare_output_dir(dir, &albums)?;
    Ok(())
}

fn text(result: &QueryResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let found: usize = result.albums.iter().map(|a| a.positives.len()).sum();
    let photos: usize = result.albums.iter().map(|a| a.photos).sum();
    let _ =
        writeln!(out, "{:?}: found in {found} of {photos} photos, {} albums", result.expression, result.albums.len());
    let mut unindexed = 0;
    for a in &result.albums {
        unindexed += a.unindexed;
        let mut line =
            format!("\n{}  ({})  {} found, {} rejected", a.name, a.album.display(), a.positives.len(), a.rejected);
        if a.unindexed > 0 {
            line.push_str(&format!(", {} not indexed", a.unindexed));
        }
        let _ = writeln!(out, "{line}");
        for p in &a.positives {
            let pixels = (p.width as usize * p.height as usize).max(1);
            let _ = writeln!(
                out,
                "  {:>7.3}  {}  mask {} px ({:.1}%)",
                p.score,
                p.path.display(),
                p.mask_area,
                100.0 * p.mask_area as f64 / pixels as f64
            );
        }
    }
    if unindexed > 0 {
        let _ = writeln!(
            out,
            "\n{unindexed} photos are not indexed for this model yet; run `photoseg index` to include them"
        );
    }
    out
}

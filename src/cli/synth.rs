//! `photoseg synth`: write a synthetic group-referring data set.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::synth::{self, Look, SynthConfig};

/// Options of `photoseg synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Folder to write into: missing, empty, or an earlier synth data set (which is replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// Albums in the training split.
    #[arg(long, value_name = "N", default_value_t = SynthConfig::default().albums_train)]
    pub train_albums: usize,
    /// Albums in the validation split (training combinations, new albums).
    #[arg(long, value_name = "N", default_value_t = SynthConfig::default().albums_val)]
    pub val_albums: usize,
    /// Albums in the held-out split (colour-shape combinations training never shows).
    #[arg(long, value_name = "N", default_value_t = SynthConfig::default().albums_heldout)]
    pub heldout_albums: usize,
    /// Number of each split's first album: with N, the albums a larger set of this seed holds from its
    /// N-th on (e.g. a fresh held-out split of the same combinations, for choosing models).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub first_album: usize,
    /// Side of the square photos, in pixels (non-square photos have about as many pixels).
    #[arg(long, value_name = "PX", default_value_t = SynthConfig::default().image_size)]
    pub size: u32,
    /// How photos are drawn: `varied` (many backgrounds, drawing styles, colour jitter, camera
    /// effects) or `classic` (the older single look).
    #[arg(long, value_enum, default_value = "varied")]
    pub look: Look,
    /// Every photo square; without it most photos have a width / height ratio between 3/4 and 4/3.
    #[arg(long)]
    pub square: bool,
    /// Fewest photos in an album.
    #[arg(long, value_name = "N", default_value_t = SynthConfig::default().photos_min)]
    pub photos_min: usize,
    /// Most photos in an album.
    #[arg(long, value_name = "N", default_value_t = SynthConfig::default().photos_max)]
    pub photos_max: usize,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        seed: args.seed,
        albums_train: args.train_albums,
        albums_val: args.val_albums,
        albums_heldout: args.heldout_albums,
        image_size: args.size,
        photos_min: args.photos_min,
        photos_max: args.photos_max,
        first_album: args.first_album,
        look: args.look,
        square: args.square,
        ..SynthConfig::default()
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} albums {pos}/{len} {wide_bar} {elapsed}")
            .expect("valid progress template"),
    );
    let start = Instant::now();
    let manifest = synth::generate(&cfg, &args.out, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let manifest = manifest?;
    let seconds = start.elapsed().as_secs_f64();
    for (split, c) in &manifest.counts {
        if c.albums > 0 {
            println!(
                "{split}: {} albums, {} photos, {} groups ({} positive and {} negative photo-expression pairs)",
                c.albums, c.photos, c.groups, c.positives, c.negatives
            );
        }
    }
    let held: Vec<String> = manifest.heldout_combinations.iter().map(|c| c.to_string()).collect();
    println!("held out: {}", held.join(", "));
    println!("wrote {} in {seconds:.1} s", args.out.display());
    Ok(())
}

//! What the backbone reads, object by object: for a checkpoint of a `features` stage
//! (it holds the training-only decoder `aux.dense.`) and a split of a synth data set, the share of
//! objects whose shape, colour and size the decoder names right, each by a majority vote of the
//! decoder's probabilities over the object's 1/4 cells. Objects whose colour-shape pair training never
//! shows (the data set's held-out combinations) are counted apart: reading them is what lets the model
//! generalise to expressions it was not trained on.
//!
//! `cargo run --release --example feature_probe -- CHECKPOINT DATA [SPLIT] [MAX_PHOTOS]`
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use photoseg::model::checkpoint;
use photoseg::synth::scene::NONE;
use photoseg::synth::{Color, Combo, Shape, Size, SynthDataset};
use photoseg::train::attributes::{majority_labels, DenseDecoder, COLOR_CLASSES, SHAPE_CLASSES};
use photoseg::train::data::{load_image, mask_grid};

/// Photos per Swin pass.
const BATCH: usize = 32;

/// Right answers and objects counted, for objects of seen and of held-out colour-shape pairs.
#[derive(Default)]
struct Tally {
    seen: (usize, usize),
    heldout: (usize, usize),
}

impl Tally {
    fn add(&mut self, heldout: bool, right: bool) {
        let t = if heldout { &mut self.heldout } else { &mut self.seen };
        t.0 += usize::from(right);
        t.1 += 1;
    }

    fn line(&self, name: &str) -> String {
        let pct = |(a, n): (usize, usize)| 100.0 * a as f64 / n.max(1) as f64;
        format!(
            "{name:<6} per object: seen pairs {:.1}% of {}, held-out pairs {:.1}% of {}",
            pct(self.seen),
            self.seen.1,
            pct(self.heldout),
            self.heldout.1
        )
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let ckpt =
        std::path::PathBuf::from(args.get(1).context("usage: feature_probe CHECKPOINT DATA [SPLIT] [MAX_PHOTOS]")?);
    let data = args.get(2).cloned().unwrap_or_else(|| "synth-data".into());
    let split = args.get(3).cloned().unwrap_or_else(|| "val".into());
    let max_photos: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(400);
    let dev = Device::Cpu;
    let model = checkpoint::load_model_dir(&ckpt, &dev)?;
    let cfg = model.cfg.clone();
    let tensors = candle_core::safetensors::load(ckpt.join(checkpoint::WEIGHTS_FILE), &dev)?;
    anyhow::ensure!(
        tensors.keys().any(|k| k.starts_with("aux.dense.classifier.")),
        "{} has no features-stage decoder (aux.dense.): train it with a `features` stage",
        ckpt.display()
    );
    // The model's own trunk when it has one (a referent model), else the decoder's.
    let own = model.dense.is_none();
    let mut tensors = tensors;
    // The decoder runs on the batch's statistics; a checkpoint may predate the running ones.
    for layer in ["d3", "d2"] {
        let Some(w) = tensors.get(&format!("aux.dense.{layer}.norm.weight")).cloned() else { continue };
        tensors.entry(format!("aux.dense.{layer}.norm.running_mean")).or_insert(w.zeros_like()?);
        tensors.entry(format!("aux.dense.{layer}.norm.running_var")).or_insert(w.ones_like()?);
    }
    let vb = checkpoint::var_builder(tensors, DType::F32, &dev);
    let e = cfg.swin.embed_dim;
    let dense = DenseDecoder::new([e, 2 * e, 4 * e], own, vb.pp("aux").pp("dense"))?;
    let ds = SynthDataset::open(&data)?;
    let heldout: Vec<Combo> = ds.manifest().heldout_combinations.clone();
    let n = ds.manifest().image_size;
    let grid = mask_grid(cfg.image_size);
    // (photo path, per-cell object index, objects)
    let mut photos = Vec::new();
    'albums: for album in ds.manifest().splits.get(&split).cloned().unwrap_or_default() {
        let dir = ds.album_dir(&split, &album);
        for (photo, s) in ds.album(&split, &album)?.scenes {
            if photos.len() >= max_photos {
                break 'albums;
            }
            let cells = majority_labels(&s.square_label_map(n, 4 * grid as u32), 4 * grid, grid);
            photos.push((dir.join(photo), cells, s.objects.clone()));
        }
    }
    let (mut shape, mut colour, mut size) = (Tally::default(), Tally::default(), Tally::default());
    for chunk in photos.chunks(BATCH) {
        let imgs: Vec<Tensor> =
            chunk.iter().map(|(p, _, _)| load_image(p, cfg.image_size, &dev)).collect::<Result<_>>()?;
        // The decoder normalises with the batch's statistics, as in training.
        let logits = dense.forward(model.dense.as_ref(), &model.swin.forward_stages(&Tensor::stack(&imgs, 0)?)?)?;
        let probs = |start: usize, classes: usize| -> Result<Vec<Vec<f32>>> {
            let p = candle_nn::ops::softmax(&logits.narrow(1, start, classes)?, 1)?;
            // [N, classes, g*g] -> per photo, class-major
            Ok(p.flatten_from(1)?.to_vec2::<f32>()?)
        };
        let (p_col, p_shape, p_size) = (
            probs(0, COLOR_CLASSES)?,
            probs(COLOR_CLASSES, SHAPE_CLASSES)?,
            probs(COLOR_CLASSES + SHAPE_CLASSES, photoseg::train::attributes::SIZE_CLASSES)?,
        );
        let cells = grid * grid;
        for (b, (_, labels, objects)) in chunk.iter().enumerate() {
            for (k, o) in objects.iter().enumerate() {
                let mine: Vec<usize> = (0..cells).filter(|&c| labels[c] != NONE && labels[c] as usize == k).collect();
                if mine.is_empty() {
                    continue;
                }
                // The class (background excluded) with the highest mean probability over the object's cells.
                let vote = |p: &[f32], classes: usize| -> usize {
                    (1..classes)
                        .max_by(|&a, &c| {
                            let s = |cl: usize| mine.iter().map(|&i| p[cl * cells + i]).sum::<f32>();
                            s(a).total_cmp(&s(c))
                        })
                        .unwrap_or(1)
                        - 1
                };
                let pair = Combo { color: o.color, shape: o.shape };
                let ho = heldout.contains(&pair);
                let truth = (
                    Shape::ALL.iter().position(|&s| s == o.shape),
                    Color::ALL.iter().position(|&c| c == o.color),
                    Size::ALL.iter().position(|&z| z == o.size),
                );
                shape.add(ho, Some(vote(&p_shape[b], SHAPE_CLASSES)) == truth.0);
                colour.add(ho, Some(vote(&p_col[b], COLOR_CLASSES)) == truth.1);
                size.add(ho, Some(vote(&p_size[b], photoseg::train::attributes::SIZE_CLASSES)) == truth.2);
            }
        }
    }
    println!("{} photos of {split} in {data}", photos.len());
    for (name, t) in [("shape", &shape), ("colour", &colour), ("size", &size)] {
        println!("{}", t.line(name));
    }
    Ok(())
}

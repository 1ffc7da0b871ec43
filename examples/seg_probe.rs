//! Where does the built-in model's segmentation stall? Trains the built-in shape on a fixed set of
//! synthetic positives with cross entropy + Dice only, and prints the mIoU (on the decoder's 1/4 grid)
//! on (up to 64 of) those photos and on 32 unseen ones as it goes. Modes, chosen by the first argument:
//!
//! - `oracle`: z's language channel is the ground-truth mask pooled to 1/16 and the visual maps are
//!   zero, so the decoder is told where the object is: tests Swin + neck + decoder + loss alone.
//! - `full`: the real head (TQM, hierarchizer, maps) with the expression, as `photoseg train` runs it.
//!
//! `cargo run --release --example seg_probe -- MODE DATA [STEPS] [LR] [FLAGS...]` (DATA from
//! `photoseg synth`); flags: `center_v`, `position`, `n=32`
//! (training photos). Results are in docs/builtin-model.md.
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use photoseg::model::grser::{Config, Pairs};
use photoseg::synth::SynthDataset;
use photoseg::train::data::{load_image, mask_grid, mask_on_grid};
use photoseg::train::{loss, vocab, TrainConfig, Trainer};

static AUX: std::sync::Mutex<Option<Tensor>> = std::sync::Mutex::new(None);

struct Sample {
    image: Tensor,
    mask: Tensor,
    expression: String,
}

fn samples(ds: &SynthDataset, split: &str, n: usize, size: usize) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let groups = photoseg::data::format::synth_groups(ds.root(), split)?;
    // Round-robin over groups so the set spans many expressions.
    let mut k = 0;
    while out.len() < n {
        let mut added = false;
        for g in &groups {
            let pos: Vec<_> = g.photos.iter().filter_map(|p| p.mask.as_ref().map(|m| (&p.image, m))).collect();
            if let Some((p, m)) = pos.get(k) {
                out.push(Sample {
                    image: load_image(p, size, &Device::Cpu)?,
                    mask: mask_on_grid(m, mask_grid(size), &Device::Cpu)?,
                    expression: g.expression.clone(),
                });
                added = true;
                if out.len() == n {
                    break;
                }
            }
        }
        if !added {
            break;
        }
        k += 1;
    }
    Ok(out)
}

/// Ground truth pooled to `h x w` (the share of each cell that is object).
fn pooled(masks: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, mh, _) = masks.dims3()?;
    let f = mh / h;
    Ok(masks.to_dtype(DType::F32)?.unsqueeze(1)?.avg_pool2d(f)?.reshape(((), 1, h, w))?.narrow(2, 0, h)?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("oracle").to_string();
    let data = args.get(2).cloned().unwrap_or_else(|| "synth-data".into());
    let steps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let lr: f64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1e-3);
    let flags: Vec<&str> = args.iter().skip(5).map(String::as_str).collect();
    let ds = SynthDataset::open(&data)?;
    let tokenizer = vocab::wordpiece_tokenizer(&photoseg::synth::vocabulary())?;
    let mut cfg = Config::builtin(tokenizer.get_vocab_size(true));
    cfg.head.center_v = flags.contains(&"center_v");
    cfg.head.position_grid = flags.contains(&"position").then_some(cfg.image_size / 16);
    let size = cfg.image_size;
    let n_train = flags.iter().find_map(|f| f.strip_prefix("n=")).map(str::parse).transpose()?.unwrap_or(32);
    let train = samples(&ds, "train", n_train, size)?;
    let test = samples(&ds, "val", 32, size)?;
    let mut tc = TrainConfig { steps, ..TrainConfig::default() };
    tc.optim.lr = lr;
    let mut tr = Trainer::new(&cfg, tokenizer, &tc, None, &Device::Cpu)?;
    let batch = 8;
    let forward = |tr: &Trainer, set: &[Sample]| -> Result<Tensor> {
        let images = Tensor::stack(&set.iter().map(|s| s.image.clone()).collect::<Vec<_>>(), 0)?;
        let masks = Tensor::stack(&set.iter().map(|s| s.mask.clone()).collect::<Vec<_>>(), 0)?;
        let feats = tr.model.featurize(&images)?;
        let (n, _, h, w) = feats.v.dims4()?;
        if mode == "oracle" {
            let maps = Tensor::cat(
                &[pooled(&masks, h, w)?, Tensor::zeros((n, cfg.head.k, h, w), DType::F32, &Device::Cpu)?],
                1,
            )?;
            let z = Tensor::cat(&[&feats.v, &maps], 1)?;
            Ok(tr.model.head.decode_z(&z, &feats.laterals())?)
        } else {
            // Each photo is its own group of one (its expression's positive): the maps see only itself.
            let mut out = Vec::new();
            let mut lmaps = Vec::new();
            for (i, s) in set.iter().enumerate() {
                let f = feats.select(&[i])?;
                let (l, a) = tr.model.text.encode_with_anti(&[s.expression.as_str()])?;
                let tri = tr.model.head.triphasic(&f, &l.get(0)?, &a.get(0)?, Pairs::TopK)?;
                out.push(tr.model.head.decode_all(&tri, &f)?);
                lmaps.push(tri.language_map.clone());
            }
            let logits = Tensor::cat(&out, 0)?;
            if mode == "aux" {
                // Deep supervision of the language map: sigmoid(10 cos - 5) against the pooled mask.
                let x = Tensor::cat(&lmaps, 0)?.affine(10.0, -5.0)?; // [N, h, w]
                let y = pooled(&masks, h, w)?.squeeze(1)?;
                let softplus = (x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
                let bce = (softplus - (&y * &x)?)?.mean_all()?;
                *AUX.lock().unwrap() = Some(bce);
            }
            Ok(logits)
        }
    };
    let miou = |tr: &Trainer, set: &[Sample]| -> Result<f32> {
        let mut total = 0f32;
        for chunk in set.chunks(batch) {
            let logits = forward(tr, chunk)?;
            let pred = logits.argmax(1)?.to_dtype(DType::U8)?;
            for (i, s) in chunk.iter().enumerate() {
                let p: Vec<u8> = pred.get(i)?.flatten_all()?.to_vec1()?;
                let y: Vec<u32> = s.mask.flatten_all()?.to_vec1()?;
                let inter = p.iter().zip(&y).filter(|(a, b)| **a == 1 && **b == 1).count() as f32;
                let union = p.iter().zip(&y).filter(|(a, b)| **a == 1 || **b == 1).count() as f32;
                total += if union == 0.0 { 1.0 } else { inter / union };
            }
        }
        Ok(total / set.len() as f32)
    };
    let start = std::time::Instant::now();
    for t in 0..steps {
        let chunk = &train[(t * batch) % train.len()..][..batch];
        let logits = forward(&tr, chunk)?;
        let masks = Tensor::stack(&chunk.iter().map(|s| s.mask.clone()).collect::<Vec<_>>(), 0)?;
        let ce = loss::pixel_ce(&logits, &masks)?;
        let dice = loss::dice(&logits, &masks)?;
        let aux = AUX.lock().unwrap().take();
        let total = match &aux {
            Some(a) => ((&ce + &dice)? + a)?,
            None => (&ce + &dice)?,
        };
        let grads = total.backward()?;
        tr.opt.step(&grads, tc.lr_at(t))?;
        if (t + 1) % 25 == 0 || t == 0 {
            let aux = aux.map(|a| a.to_scalar::<f32>()).transpose()?.unwrap_or(0.0);
            eprintln!(
                "{mode} step {} ce {:.4} dice {:.4} aux {aux:.4} train mIoU {:.3} unseen mIoU {:.3} ({:.0} s)",
                t + 1,
                ce.to_scalar::<f32>()?,
                dice.to_scalar::<f32>()?,
                miou(&tr, &train[..train.len().min(64)])?,
                miou(&tr, &test)?,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

//! Which half of the built-in model is failing, the visual features or the language's grip on them?
//! For a checkpoint of a stage with `attributes` > 0 and a split of a synth data set it prints:
//!
//! - attribute accuracy of the training-only heads (colour per 1/4 cell from stage 1, colour / shape /
//!   size per 1/16 cell from V, on cells an object covers at least half of): do the features know what
//!   is where?
//! - pointing accuracy of the language map: the share of positives whose M_l peaks in a 1/16 cell that
//!   holds some of the referred object (chance is roughly the object's share of cells), and M_l's mean
//!   on the object's cells against elsewhere, on positives and on negatives.
//!
//! - the decision the attribute heads would make by themselves: each photo scored by the best 1/16 cell's
//!   P(the expression's colour) x P(its shape) (x P(its size) when it names one; positions ignored),
//!   and that score's ROC AUC against positives / negatives, beside the paper's d_neg - d_pos on the same
//!   photos. If the heads' score separated the photos much better, the decision head (not the features)
//!   would be what loses the answers.
//!
//! `cargo run --release --example map_probe -- CHECKPOINT DATA [SPLIT] [MAX_GROUPS]`
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use photoseg::model::checkpoint;
use photoseg::model::grser::Pairs;
use photoseg::synth::{Color, Shape, Size, SynthDataset};
use photoseg::train::attributes::{self, AttributeHeads, COLOR_CLASSES, SHAPE_CLASSES};
use photoseg::train::data::{load_image, load_mask, mask_grid};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let ckpt = std::path::PathBuf::from(args.get(1).expect("CHECKPOINT"));
    let data = args.get(2).cloned().unwrap_or_else(|| "synth-data".into());
    let split = args.get(3).cloned().unwrap_or_else(|| "val".into());
    let max_groups: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(40);
    let dev = Device::Cpu;
    let model = checkpoint::load_model_dir(&ckpt, &dev)?;
    let cfg = model.cfg.clone();
    let tensors = candle_core::safetensors::load(ckpt.join(checkpoint::WEIGHTS_FILE), &dev)?;
    // Checkpoints from before the stage-2 shape head lack it: zeros stand in and its line is left out.
    let has_mid = tensors.keys().any(|k| k.starts_with("aux.attributes.mid."));
    let heads = if tensors.keys().any(|k| k.starts_with("aux.attributes.")) {
        let mut tensors = tensors;
        if !has_mid {
            let (c, l) = (SHAPE_CLASSES - 1, cfg.head.lateral);
            tensors.insert("aux.attributes.mid.weight".into(), Tensor::zeros((c, l, 1, 1), DType::F32, &dev)?);
            tensors.insert("aux.attributes.mid.bias".into(), Tensor::zeros(c, DType::F32, &dev)?);
        }
        let vb = checkpoint::var_builder(tensors, DType::F32, &dev);
        Some(AttributeHeads::new(cfg.head.c_v, cfg.head.lateral, vb.pp("aux").pp("attributes"))?)
    } else {
        None
    };
    let ds = SynthDataset::open(&data)?;
    let grid = mask_grid(cfg.image_size);
    let labels = attributes::synth_labels(&ds, &split, grid)?;
    let groups = ds.split(&split)?;
    let (mut fine_ok, mut fine_n) = (0usize, 0usize);
    let mut coarse = [(0usize, 0usize); 3];
    let mut mid = (0usize, 0usize);
    let (mut point_ok, mut point_n, mut chance) = (0usize, 0usize, 0f64);
    let (mut on_obj, mut off_obj, mut on_neg) = (Vec::new(), Vec::new(), Vec::new());
    // Per photo: positive, the heads' score, the paper's score, the expression names a position.
    let mut decisions: Vec<(bool, f32, f32, bool)> = Vec::new();
    for g in groups.iter().take(max_groups) {
        let imgs: Vec<Tensor> =
            g.photos.iter().map(|p| load_image(&p.path, cfg.image_size, &dev)).collect::<Result<_>>()?;
        let feats = model.featurize(&Tensor::stack(&imgs, 0)?)?;
        let text = model.encode_expression(&g.expression)?;
        let tri = model.head.triphasic(&feats, &text.l, &text.anti, Pairs::TopK)?;
        let (_, h, w) = tri.language_map.dims3()?;
        for (j, p) in g.photos.iter().enumerate() {
            let m_l: Vec<f32> = tri.language_map.get(j)?.flatten_all()?.to_vec1()?;
            match &p.mask {
                Some(mask) => {
                    let pooled = photoseg::train::loss::pooled_mask(&load_mask(mask, grid, &dev)?.unsqueeze(0)?, h, w)?;
                    let share: Vec<f32> = pooled.flatten_all()?.to_vec1()?;
                    let peak = m_l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
                    point_ok += usize::from(share[peak] > 0.0);
                    point_n += 1;
                    chance += share.iter().filter(|&&s| s > 0.0).count() as f64 / share.len() as f64;
                    for (v, s) in m_l.iter().zip(&share) {
                        if *s >= 0.5 {
                            on_obj.push(*v);
                        } else if *s == 0.0 {
                            off_obj.push(*v);
                        }
                    }
                }
                None => on_neg.push(m_l.iter().cloned().fold(f32::MIN, f32::max)),
            }
        }
        if let Some(heads) = &heads {
            let l: Vec<&attributes::AttributeLabels> =
                g.photos.iter().map(|p| labels.get(&p.path).expect("labels for every photo")).collect();
            let fine = heads.fine_logits(&feats)?.argmax(1)?; // [N, g, g]
            let truth = Tensor::stack(&l.iter().map(|l| l.color.clone()).collect::<Vec<_>>(), 0)?;
            let (f, t): (Vec<u32>, Vec<u32>) = (fine.flatten_all()?.to_vec1()?, truth.flatten_all()?.to_vec1()?);
            for (a, b) in f.iter().zip(&t) {
                if *b > 0 {
                    fine_ok += usize::from(a == b);
                    fine_n += 1;
                }
            }
            // Shape per 1/8 cell from stage 2: the shape covering at least half of the cell.
            let m = heads.mid_logits(&feats)?; // [N, 6, h8, w8]
            let h8 = m.dim(2)?;
            let pred: Vec<u32> = m.argmax(1)?.flatten_all()?.to_vec1()?;
            let lab = Tensor::stack(&l.iter().map(|l| l.shape.clone()).collect::<Vec<_>>(), 0)?;
            let ids = Tensor::arange(0u32, SHAPE_CLASSES as u32, &dev)?.reshape((1, SHAPE_CLASSES, 1, 1))?;
            let share = lab.unsqueeze(1)?.broadcast_eq(&ids)?.to_dtype(DType::F32)?.avg_pool2d(grid / h8)?;
            let best: Vec<u32> = share.argmax(1)?.flatten_all()?.to_vec1()?;
            let frac: Vec<f32> = share.max(1)?.flatten_all()?.to_vec1()?;
            for ((p, b), fr) in pred.iter().zip(&best).zip(&frac) {
                if *b > 0 && *fr >= 0.5 {
                    mid.0 += usize::from(p + 1 == *b);
                    mid.1 += 1;
                }
            }
            let logits = heads.coarse_logits(&feats)?; // [N, 8 + 7 + 3, h, w]
            {
                let words: Vec<&str> = g.expression.split_whitespace().collect();
                let colour = Color::ALL.iter().position(|c| words.contains(&c.word()));
                let shape = Shape::ALL.iter().position(|c| words.contains(&c.word()));
                let size = Size::ALL.iter().position(|c| c.words().iter().any(|w| words.contains(w)));
                let positioned = ["left", "right", "top", "bottom"].iter().any(|w| words.contains(w));
                let (n, sc) = (SHAPE_CLASSES, attributes::SIZE_CLASSES);
                let p_col = candle_nn::ops::softmax(&logits.narrow(1, 0, COLOR_CLASSES)?, 1)?;
                let p_shape = candle_nn::ops::softmax(&logits.narrow(1, COLOR_CLASSES + 1, n - 1)?, 1)?;
                let p_size = candle_nn::ops::softmax(&logits.narrow(1, COLOR_CLASSES + n + 1, sc - 1)?, 1)?;
                if let (Some(c), Some(sh)) = (colour, shape) {
                    let mut score = (p_col.narrow(1, c + 1, 1)? * p_shape.narrow(1, sh, 1)?)?;
                    if let Some(z) = size {
                        score = (score * p_size.narrow(1, z, 1)?)?;
                    }
                    let best: Vec<f32> = score.flatten_from(1)?.max(1)?.to_vec1()?;
                    let (d_pos, d_neg): (Vec<f32>, Vec<f32>) = (tri.d_pos.to_vec1()?, tri.d_neg.to_vec1()?);
                    for (j, p) in g.photos.iter().enumerate() {
                        decisions.push((p.mask.is_some(), best[j], d_neg[j] - d_pos[j], positioned));
                    }
                }
            }
            let mut start = 0;
            for (k, (classes, pick)) in [
                (COLOR_CLASSES, (|l: &attributes::AttributeLabels| l.color.clone()) as fn(&_) -> Tensor),
                (SHAPE_CLASSES, |l| l.shape.clone()),
                (attributes::SIZE_CLASSES, |l| l.size.clone()),
            ]
            .into_iter()
            .enumerate()
            {
                // Shape and size heads answer "which, given an object": their background logit is unused.
                let first = if k == 0 { 0 } else { 1 };
                let pred: Vec<u32> =
                    logits.narrow(1, start + first, classes - first)?.argmax(1)?.flatten_all()?.to_vec1()?;
                let pred: Vec<u32> = pred.into_iter().map(|p| p + first as u32).collect();
                start += classes;
                // The class covering at least half of each 1/16 cell, from the 1/4 labels.
                let lab = Tensor::stack(&l.iter().map(|l| pick(l)).collect::<Vec<_>>(), 0)?;
                let ids = Tensor::arange(0u32, classes as u32, &dev)?.reshape((1, classes, 1, 1))?;
                let share = lab.unsqueeze(1)?.broadcast_eq(&ids)?.to_dtype(DType::F32)?.avg_pool2d(grid / h)?;
                let (best, frac) = (share.argmax(1)?, share.max(1)?);
                let (best, frac): (Vec<u32>, Vec<f32>) =
                    (best.flatten_all()?.to_vec1()?, frac.flatten_all()?.to_vec1()?);
                for ((p, b), fr) in pred.iter().zip(&best).zip(&frac) {
                    if *b > 0 && *fr >= 0.5 {
                        coarse[k].0 += usize::from(p == b);
                        coarse[k].1 += 1;
                    }
                }
            }
        }
    }
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    let pct = |a: usize, n: usize| 100.0 * a as f64 / n.max(1) as f64;
    println!("{} groups of {split}", groups.len().min(max_groups));
    if heads.is_some() {
        println!("colour per 1/4 object cell (stage 1)   {:.1}% of {fine_n}", pct(fine_ok, fine_n));
        for (name, (a, n)) in ["colour", "shape", "size"].iter().zip(coarse) {
            println!("{name:<6} per 1/16 object cell (V)      {:.1}% of {n}", pct(a, n));
        }
        if has_mid {
            println!("shape  per 1/8 object cell (stage 2)  {:.1}% of {}", pct(mid.0, mid.1), mid.1);
        }
    }
    println!(
        "language map peaks on the referent      {:.1}% of {point_n} positives (chance {:.1}%)",
        pct(point_ok, point_n),
        100.0 * chance / point_n.max(1) as f64
    );
    println!(
        "mean M_l: referent cells {:.3}, other cells of positives {:.3}; max M_l of negatives {:.3}",
        mean(&on_obj),
        mean(&off_obj),
        mean(&on_neg)
    );
    if !decisions.is_empty() {
        for (name, keep) in [("every expression", None), ("no position named", Some(false))] {
            let rows: Vec<_> = decisions.iter().filter(|d| keep.is_none_or(|k| d.3 == k)).collect();
            let heads_auc = auc(&rows.iter().map(|d| (d.1, d.0)).collect::<Vec<_>>());
            let paper_auc = auc(&rows.iter().map(|d| (d.2, d.0)).collect::<Vec<_>>());
            println!(
                "decision AUC, {name:<17} heads' colour x shape {heads_auc:.3}, paper's d_neg - d_pos {paper_auc:.3} ({} photos)",
                rows.len()
            );
        }
    }
    Ok(())
}

/// ROC AUC of a score against labels (ties count half).
fn auc(scored: &[(f32, bool)]) -> f64 {
    let mut s = scored.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = s.iter().filter(|x| x.1).count() as f64;
    let neg = s.len() as f64 - pos;
    let (mut sum, mut negs_below, mut i) = (0.0, 0.0, 0);
    while i < s.len() {
        let mut j = i;
        while j < s.len() && s[j].0 == s[i].0 {
            j += 1;
        }
        let (p, n) = s[i..j].iter().fold((0.0, 0.0), |(p, n), x| if x.1 { (p + 1.0, n) } else { (p, n + 1.0) });
        sum += p * (negs_below + 0.5 * n);
        negs_below += n;
        i = j;
    }
    sum / (pos * neg).max(1.0)
}

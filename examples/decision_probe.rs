//! How well could a model tell positives from negatives, whatever rule it used? For a model directory
//! (or checkpoint) and a split of a synth data set, it scores every photo of every group four ways and
//! prints, for each score, the area under the ROC curve (0.5 = no better than chance, 1 = perfect) and
//! the positives accepted / negatives rejected at the threshold that balances them best (an oracle:
//! the threshold is chosen on the very photos it is scored on, so it is an upper bound, not a result):
//!
//! - `d_neg - d_pos`: the paper's rule (positive when it exceeds the margin m; its own figures too);
//! - `max M_l`: the language map's peak;
//! - `max p(object)`: the decoder's most confident pixel of the 1/4 grid, every photo decoded;
//! - `mask area`: the decoder's object share of the 1/4 grid (p > 0.5).
//!
//! Group-wise, it also scores each photo by the paper's score minus its album's median, and gives the
//! mean of the per-album AUCs: if albums only shifted the score, these would beat the pooled AUC (on the
//! built-in model they do not: docs/builtin-model.md). `PROBE_DUMP=FILE` writes one line per photo
//! (path, expression, positive, d_neg - d_pos) for breakdowns by expression and scene.
//!
//! `cargo run --release --example decision_probe -- MODEL DATA [SPLIT] [MAX_GROUPS]`
use anyhow::Result;
use candle_core::{Device, Tensor};
use photoseg::model::checkpoint;
use photoseg::model::grser::Pairs;
use photoseg::synth::SynthDataset;
use photoseg::train::data::load_image;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("MODEL"));
    let data = args.get(2).cloned().unwrap_or_else(|| "synth-data".into());
    let split = args.get(3).cloned().unwrap_or_else(|| "val".into());
    let max_groups: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(usize::MAX);
    let dev = Device::Cpu;
    let model = checkpoint::load_model_dir(&dir, &dev)?;
    anyhow::ensure!(
        model.referent.is_none(),
        "{} has a referent head: this probe reads the TQM head's maps (photoseg eval reports a referent \
         model's decision AUC)",
        dir.display()
    );
    let cfg = model.cfg.clone();
    let margin = cfg.head.margin as f32;
    let ds = SynthDataset::open(&data)?;
    // Per photo: is it a positive, and its four scores.
    let mut rows: Vec<(bool, [f32; 4])> = Vec::new();
    // PROBE_DUMP=FILE writes a line per photo: path, expression, positive, d_neg - d_pos.
    let mut dump = std::env::var_os("PROBE_DUMP").map(std::fs::File::create).transpose()?;
    // Per album: the first row of the album in `rows`, to score photos against their own album.
    let mut albums: Vec<std::ops::Range<usize>> = Vec::new();
    for g in ds.split(&split)?.iter().take(max_groups) {
        let imgs: Vec<Tensor> =
            g.photos.iter().map(|p| load_image(&p.path, cfg.image_size, &dev)).collect::<Result<_>>()?;
        let mut parts = Vec::new();
        for chunk in imgs.chunks(16) {
            parts.push(model.featurize(&Tensor::stack(chunk, 0)?)?);
        }
        let feats = photoseg::model::neck::VisualFeatures::cat(&parts)?;
        let text = model.encode_expression(&g.expression)?;
        let tri = model.head.triphasic(&feats, &text.l, &text.anti, Pairs::TopK)?;
        let all: Vec<usize> = (0..g.photos.len()).collect();
        albums.push(rows.len()..rows.len() + g.photos.len());
        let logits = model.head.decode(&tri, &feats, &all)?;
        let p_fg = candle_nn::ops::softmax(&logits, 1)?.narrow(1, 1, 1)?.squeeze(1)?.flatten_from(1)?; // [N, hw]
        let p_fg: Vec<Vec<f32>> = p_fg.to_vec2()?;
        let d_pos: Vec<f32> = tri.d_pos.to_vec1()?;
        let d_neg: Vec<f32> = tri.d_neg.to_vec1()?;
        let m_l: Vec<Vec<f32>> = tri.language_map.flatten_from(1)?.to_vec2()?;
        for (j, p) in g.photos.iter().enumerate() {
            let peak = p_fg[j].iter().cloned().fold(0f32, f32::max);
            let area = p_fg[j].iter().filter(|&&x| x > 0.5).count() as f32 / p_fg[j].len() as f32;
            let lm = m_l[j].iter().cloned().fold(f32::MIN, f32::max);
            rows.push((p.mask.is_some(), [d_neg[j] - d_pos[j], lm, peak, area]));
            if let Some(f) = dump.as_mut() {
                use std::io::Write;
                writeln!(f, "{}\t{}\t{}\t{}", p.path.display(), g.expression, p.mask.is_some(), d_neg[j] - d_pos[j])?;
            }
        }
    }
    let positives = rows.iter().filter(|r| r.0).count();
    println!("{} photos ({positives} positives) of {split} in {}", rows.len(), data);
    let paper_pos = rows.iter().filter(|r| r.0 && r.1[0] > margin).count();
    let paper_neg = rows.iter().filter(|r| !r.0 && r.1[0] <= margin).count();
    println!(
        "paper's rule (m = {margin}): positives accepted {:.1} %, negatives rejected {:.1} %",
        100.0 * paper_pos as f64 / positives.max(1) as f64,
        100.0 * paper_neg as f64 / (rows.len() - positives).max(1) as f64
    );
    println!("{:<16} {:>6}  {:>28}", "score", "AUC", "best balanced threshold");
    for (k, name) in ["d_neg - d_pos", "max M_l", "max p(object)", "mask area"].iter().enumerate() {
        let scored: Vec<(f32, bool)> = rows.iter().map(|r| (r.1[k], r.0)).collect();
        let (auc, thr, acc_pos, acc_neg) = roc(&scored);
        println!("{name:<16} {auc:>6.3}  > {thr:>8.4}: {:>5.1} % / {:>5.1} %", 100.0 * acc_pos, 100.0 * acc_neg);
    }
    // Group-wise: the paper's score relative to its album (minus the album's median), and the mean of
    // the per-album AUCs (albums with positives and negatives only).
    let mut relative = Vec::new();
    let mut per_album = Vec::new();
    for r in &albums {
        let mut s: Vec<f32> = rows[r.clone()].iter().map(|x| x.1[0]).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        let median = s[s.len() / 2];
        let scored: Vec<(f32, bool)> = rows[r.clone()].iter().map(|x| (x.1[0] - median, x.0)).collect();
        if scored.iter().any(|x| x.1) && scored.iter().any(|x| !x.1) {
            per_album.push(roc(&scored).0);
        }
        relative.extend(scored);
    }
    let (auc, thr, acc_pos, acc_neg) = roc(&relative);
    println!(
        "{:<16} {auc:>6.3}  > {thr:>8.4}: {:>5.1} % / {:>5.1} %",
        "minus album med",
        100.0 * acc_pos,
        100.0 * acc_neg
    );
    println!(
        "mean per-album AUC of d_neg - d_pos: {:.3} over {} albums",
        per_album.iter().sum::<f64>() / per_album.len().max(1) as f64,
        per_album.len()
    );
    Ok(())
}

/// AUC (ties count half) and the threshold maximising (accepted + rejected) / 2
/// ([`photoseg::eval::run::balanced_cut`]), with both rates at it; AUC 0 where one class is missing.
fn roc(scored: &[(f32, bool)]) -> (f64, f32, f64, f64) {
    let (auc, cut) = photoseg::eval::run::balanced_cut(scored);
    let thr = cut.unwrap_or(f64::MIN) as f32;
    let rate = |positive: bool| {
        let class: Vec<f32> = scored.iter().filter(|s| s.1 == positive).map(|s| s.0).collect();
        let right = class.iter().filter(|&&x| (x > thr) == positive).count();
        right as f64 / class.len().max(1) as f64
    };
    (auc.unwrap_or(0.0), thr, rate(true), rate(false))
}

//! `photoseg eval`: score a model on a data set's groups (mIoU, positive / negative accuracy, Co-SOD metrics).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::format::{DataSource, Format};
use crate::data::Group;
use crate::eval::run::evaluate;
use crate::model::checkpoint;

/// Options of `photoseg eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The data set: a `photoseg synth` folder, a RefCOCO / RefCOCO+ / RefCOCOg refer folder (or its
    /// refs pickle) or a Co-SOD root, as --format says.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// How --data is laid out (docs/training.md).
    #[arg(long, value_enum, default_value_t = Format::Synth)]
    pub format: Format,
    /// The split: `train`, `val` or `heldout` (synth, default `heldout`); `val`, `testA`, `testB`,
    /// `test` or `train` (refcoco, default `val`). A Co-SOD root has none.
    #[arg(long)]
    pub split: Option<String>,
    /// The COCO train2014 folder of a refcoco data set. Default: `images/` or `train2014/` in --data's
    /// folder, or the refer toolkit's `../images/mscoco/images/train2014/` beside it.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Evaluate only the first N groups.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the scores as JSON.
    #[arg(long)]
    pub json: bool,
    /// Decide with this margin m (d_pos + m < d_neg) instead of the model's own: to calibrate a model's
    /// threshold on a validation split (its `config.json` holds the one it ships with).
    #[arg(long, value_name = "M")]
    pub margin: Option<f64>,
    /// Decide with this threshold on the peak score instead of the model's own (models with a referent
    /// head).
    #[arg(long, value_name = "T", conflicts_with = "margin")]
    pub threshold: Option<f64>,
    /// Write the balanced setting found on these groups (the referent head's threshold, or the margin)
    /// into the model's config.json: calibrate on a validation split, never on the one you report.
    #[arg(long)]
    pub calibrate: bool,
    /// Answer albums of N photos instead of the data set's groups: the photos of every group with the
    /// same expression are pooled and cut into albums of N (the last may be smaller). N = 1 answers each
    /// photo alone, which switches the cross-image maps off (a photo sees only its own prototype): the
    /// group's own contribution is the difference.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub album_size: Option<u32>,
    /// Also write every photo's decision to FILE as CSV (photo, expression, holds, accepted, score, iou):
    /// the errors behind the figures, one by one.
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
}

/// Writes `decisions` as CSV to `path` (through a temporary file, so a killed run leaves no half file).
fn write_decisions(path: &std::path::Path, decisions: &[crate::eval::run::PhotoDecision]) -> Result<()> {
    let mut out = String::from("photo,expression,holds,accepted,score,iou\n");
    for d in decisions {
        let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        out.push_str(&format!(
            "{},{},{},{},{:.5},{}\n",
            quoted(&d.photo.to_string_lossy()),
            quoted(&d.expression),
            d.holds,
            d.accepted,
            d.score,
            d.iou.map_or(String::new(), |v| format!("{v:.4}"))
        ));
    }
    let tmp = path.with_extension("csv.partial");
    std::fs::write(&tmp, out).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The photos of every group with the same expression, pooled (in order of first appearance) and cut
/// into albums of at most `n` photos.
fn regroup(groups: Vec<Group>, n: usize) -> Vec<Group> {
    let mut pooled: Vec<Group> = Vec::new();
    for g in groups {
        match pooled.iter_mut().find(|p| p.expression == g.expression) {
            Some(p) => p.photos.extend(g.photos),
            None => pooled.push(g),
        }
    }
    pooled
        .into_iter()
        .flat_map(|g| {
            let expression = g.expression;
            g.photos.chunks(n).map(|c| Group { expression: expression.clone(), photos: c.to_vec() }).collect::<Vec<_>>()
        })
        .collect()
}

fn load_groups(args: &EvalArgs) -> Result<Vec<Group>> {
    let source = DataSource::new(args.format, &args.data, args.images.as_deref())?;
    let groups = source.groups(args.split.as_deref())?;
    if groups.is_empty() {
        let split = args.split.as_deref().or(args.format.default_eval_split()).unwrap_or("all");
        bail!(
            "no groups in split {split:?} of the {} data set {}: nothing to evaluate",
            args.format,
            args.data.display()
        );
    }
    Ok(groups)
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mut groups = load_groups(&args)?;
    let mut model = checkpoint::load_model_dir(&args.model, &Device::Cpu)?;
    if let Some(m) = args.margin {
        if model.referent.is_some() {
            bail!("--margin is for models with the TQM head; this one decides by a threshold (--threshold)");
        }
        model.set_margin(m);
    }
    if let Some(t) = args.threshold {
        if model.referent.is_none() {
            bail!("--threshold is for models with a referent head; this one decides by a margin (--margin)");
        }
        model.set_threshold(t);
    }
    if let Some(n) = args.limit {
        groups.truncate(n);
    }
    if let Some(n) = args.album_size {
        groups = regroup(groups, n as usize);
    }
    let bar = ProgressBar::new(groups.len() as u64);
    bar.set_style(ProgressStyle::with_template("groups {pos}/{len} {wide_bar} {elapsed}<{eta}")?);
    let report = evaluate(&model, &groups, |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    if let Some(path) = &args.decisions {
        write_decisions(path, &report.decisions)?;
    }
    if args.calibrate {
        let setting = report
            .balanced_setting
            .context("calibrating needs groups with both photos that hold the referent and photos that do not")?;
        let mut cfg = model.cfg.clone();
        match cfg.referent.as_mut() {
            Some(r) => r.threshold = setting,
            None => cfg.head.margin = setting,
        }
        checkpoint::write_config(&args.model, &cfg)?;
        eprintln!(
            "wrote the balanced setting {setting:.4} into {}",
            args.model.join(checkpoint::CONFIG_FILE).display()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{:.1}%", 100.0 * v));
    println!("{} groups, {} photos (largest group {})", report.groups, report.photos, report.largest_group);
    println!("mIoU on positives     {}", pct(report.miou_positives));
    println!(
        "  segmentation alone  {} (every true positive decoded, whatever the decision)",
        pct(report.miou_segmentation)
    );
    println!("overall IoU           {:.1}%", 100.0 * report.oiou);
    println!("positives accepted    {}", pct(report.accuracy_positives));
    println!("negatives rejected    {}", pct(report.accuracy_negatives));
    if let (Some(auc), Some(setting)) = (report.decision_auc, report.balanced_setting) {
        println!("decision AUC          {auc:.3} (balanced setting on these groups: {setting:.4})");
    }
    println!(
        "MAE {:.4}  max F {:.4}  S-measure {:.4}  mean E {:.4}",
        report.mae, report.max_f, report.s_measure, report.mean_e
    );
    Ok(())
}

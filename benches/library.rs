//! `cargo bench --bench library`: what the photo library costs on this machine, one figure a line.
//!
//! 1. Indexing throughput of `library::index` with the built-in model on ~200 generated 128 px photos,
//!    and featurize-only throughput of a paper-shaped backbone (Swin-B + neck at 416 px, random weights).
//! 2. Cache bytes per photo (built-in model, f16 and int8; the paper's shape from its dims), and how far
//!    int8 / f16 move the answers from uncached f32 features on the generated photos (decision agreement,
//!    mask mIoU).
//! 3. Query latency over a synthetic cache of 10 000 photos in 100 albums (real built-in model encodings
//!    of a few photos, repeated), first and repeated query, and the peak RSS before and after.
//!
//! Everything is written under a temporary folder (HOME and the XDG folders point there).
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use photoseg::library::cache::NewPhoto;
use photoseg::library::search::SearchIndex;
use photoseg::library::{self, Cache};
use photoseg::model::codec::FeatureCodec;
use photoseg::model::grser::{self, Pairs};
use photoseg::model::neck::{Neck, VisualFeatures};
use photoseg::model::swin;
use photoseg::query::featurizer::{featurize_image, ModelFeaturizer};
use photoseg::query::model::LoadedModel;
use photoseg::query::{Engine, QueryRequest};
use photoseg::synth::{self, SynthConfig, SynthDataset};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Random weights as plain tensors (benches/model.rs): a VarMap's variables take slower paths.
fn inference_weights(init: impl FnOnce(VarBuilder)) -> VarBuilder<'static> {
    let vm = VarMap::new();
    init(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu));
    let tensors = vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

/// A model of the built-in model's shape and tokenizer with random weights, saved and loaded as a model
/// directory (for when the embedded weights do not fit this build's network).
fn random_builtin_shape(dir: &Path) -> anyhow::Result<LoadedModel> {
    let tok_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/builtin/tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).map_err(anyhow::Error::msg)?;
    let cfg = grser::Config::builtin(tok.get_vocab_size(true));
    let varmap = VarMap::new();
    grser::Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    photoseg::model::checkpoint::save_model_dir(&varmap, &cfg, &tok, dir)?;
    LoadedModel::load(dir)
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x != 0 && **y != 0).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x != 0 || **y != 0).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    for (var, dir) in
        [("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")]
    {
        std::fs::create_dir_all(root.join(dir))?;
        std::env::set_var(var, root.join(dir));
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("photoseg library benchmark: CPU, {threads} threads");

    // Generated photos, copied into a library folder (the data set's mask folders are not photos).
    let synth_cfg = SynthConfig {
        seed: 7,
        albums_train: 14,
        albums_val: 0,
        albums_heldout: 0,
        heldout_combos: 0,
        image_size: 128,
        photos_min: 12,
        photos_max: 16,
        ..SynthConfig::default()
    };
    let data_dir = root.join("synth");
    synth::generate(&synth_cfg, &data_dir, |_, _| {})?;
    let data = SynthDataset::open(&data_dir)?;
    let groups = data.split("train")?;
    let lib = root.join("library");
    let mut photo_count = 0;
    for g in &groups {
        let album = lib.join(g.album.file_name().unwrap());
        std::fs::create_dir_all(&album)?;
        for p in &g.photos {
            let to = album.join(p.path.file_name().unwrap());
            if !to.exists() {
                std::fs::copy(&p.path, &to)?;
                photo_count += 1;
            }
        }
    }

    // 1. Indexing with the built-in model.
    let model = match LoadedModel::load(&photoseg::builtin::model_dir()?) {
        Ok(m) => {
            println!("model: the built-in model");
            m
        }
        Err(e) => {
            println!("model: the built-in model does not load ({e:#}); a random model of its shape stands in");
            random_builtin_shape(&root.join("random-builtin"))?
        }
    };
    let cache = Cache::open(&root.join("index.sqlite3"))?;
    let mut featurizer = ModelFeaturizer::new(&model, FeatureCodec::F16);
    let t = Instant::now();
    let report = library::index(&cache, std::slice::from_ref(&lib), &mut featurizer, 16, &mut |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.featurized, photo_count, "{report:?}");
    println!(
        "index built-in model 128 px: {photo_count} photos in {secs:.2} s = {:.1} photos/s",
        photo_count as f64 / secs
    );
    drop(cache);

    let paper = grser::Config::paper();
    {
        let swin_cfg = swin::Config { img_size: Some(416), ..paper.swin.clone() };
        let chans = swin_cfg.stage_channels();
        let vb = inference_weights(|vb| {
            swin::Swin::new(&swin_cfg, vb.pp("swin")).unwrap();
            Neck::new(&chans, paper.head.c_v, paper.head.lateral, vb.pp("neck")).unwrap();
        });
        let backbone = swin::Swin::new(&swin_cfg, vb.pp("swin"))?;
        let neck = Neck::new(&chans, paper.head.c_v, paper.head.lateral, vb.pp("neck"))?;
        let x = Tensor::randn(0f32, 1.0, (1, 3, 416, 416), &Device::Cpu)?;
        neck.forward(&backbone.forward_stages(&x)?)?; // warm-up
        let runs = 3;
        let t = Instant::now();
        for _ in 0..runs {
            neck.forward(&backbone.forward_stages(&x)?)?;
        }
        let per = t.elapsed().as_secs_f64() / runs as f64;
        println!(
            "featurize paper shape (Swin-B + neck, 416 px, random weights): {per:.2} s/photo = {:.2} photos/s",
            1.0 / per
        );
    }

    // 2. Cache bytes per photo and what the codecs do to answers.
    let mut per_photo: Vec<(PathBuf, VisualFeatures)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in &groups {
        for p in &g.photos {
            if seen.insert(p.path.clone()) {
                let img = image::open(&p.path)?.to_rgb8();
                per_photo.push((p.path.clone(), featurize_image(&model.grser, &img)?));
            }
        }
    }
    let one = &per_photo[0].1;
    for codec in [FeatureCodec::F16, FeatureCodec::Int8] {
        println!("cache built-in model {}: {} bytes/photo", codec.name(), one.to_bytes(codec)?.len());
    }
    let s = paper.image_size;
    let (c_v, lat) = (paper.head.c_v, paper.head.lateral);
    let dims = [[1, c_v, s / 16, s / 16], [1, lat, s / 4, s / 4], [1, lat, s / 8, s / 8], [1, lat, s / 32, s / 32]];
    for codec in [FeatureCodec::F16, FeatureCodec::Int8] {
        println!("cache paper shape {}: {} bytes/photo", codec.name(), codec.encoded_len(&dims));
    }
    let feats_of = |path: &Path| per_photo.iter().find(|(p, _)| p == path).map(|(_, f)| f.clone()).unwrap();
    for codec in [FeatureCodec::F16, FeatureCodec::Int8] {
        let (mut same, mut total, mut ious) = (0usize, 0usize, Vec::new());
        for g in &groups {
            let f32s: Vec<VisualFeatures> = g.photos.iter().map(|p| feats_of(&p.path)).collect();
            let coded: Vec<VisualFeatures> = f32s
                .iter()
                .map(|f| VisualFeatures::from_bytes(&f.to_bytes(codec)?, &Device::Cpu))
                .collect::<candle_core::Result<_>>()?;
            let a = model.grser.answer(&VisualFeatures::cat(&f32s)?, &g.expression, Pairs::TopK)?;
            let b = model.grser.answer(&VisualFeatures::cat(&coded)?, &g.expression, Pairs::TopK)?;
            for (x, y) in a.iter().zip(&b) {
                total += 1;
                same += usize::from(x.positive == y.positive);
                if let (Some(lx), Some(ly)) = (&x.mask_logits, &y.mask_logits) {
                    ious.push(iou(&grser::mask_at(lx, 128, 128)?, &grser::mask_at(ly, 128, 128)?));
                }
            }
        }
        let miou = ious.iter().sum::<f64>() / ious.len().max(1) as f64;
        let worst = ious.iter().copied().fold(1.0, f64::min);
        println!(
            "{} vs f32 on {total} photo answers ({} groups): decisions agree {:.2} %, mask mIoU {miou:.4} (worst {worst:.4}, {} masks)",
            codec.name(),
            groups.len(),
            100.0 * same as f64 / total as f64,
            ious.len()
        );
    }

    // 3. Query latency over 10 000 cached photos in 100 albums.
    let rss_before = peak_rss_mib();
    let blobs: Vec<Vec<u8>> =
        per_photo.iter().take(8).map(|(_, f)| f.to_bytes(FeatureCodec::F16)).collect::<candle_core::Result<_>>()?;
    let backbone = model.backbone_id(FeatureCodec::F16);
    let big = root.join("big");
    let db = root.join("big.sqlite3");
    let cache = Cache::open(&db)?;
    let t = Instant::now();
    for a in 0..100 {
        cache.write_batch(|c| {
            for i in 0..100 {
                let path = big.join(format!("album{a:03}/IMG_{i:04}.jpg"));
                let sha = format!("{:064x}", a * 100 + i);
                let id = c.upsert_photo(&NewPhoto {
                    path: &path,
                    size: 1000,
                    mtime_ns: (a * 100 + i) as i64,
                    sha256: &sha,
                    width: 128,
                    height: 128,
                })?;
                c.put_features(id, &backbone, &blobs[(a + i) % blobs.len()])?;
            }
            Ok(())
        })?;
    }
    let stats = cache.stats()?;
    println!(
        "synthetic cache: {} photos, {} albums, {:.0} MB of features, filled in {:.1} s",
        stats.photos,
        stats.albums,
        stats.feature_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let search = SearchIndex::open(&root.join("big-search"))?;
    let mut engine = Engine::new(model.clone(), FeatureCodec::F16, cache, search, vec![big.clone()]);
    let mut expressions: Vec<String> = Vec::new();
    for g in &groups {
        if !expressions.contains(&g.expression) {
            expressions.push(g.expression.clone());
        }
    }
    let run = |engine: &mut Engine, expr: &str| -> anyhow::Result<(f64, usize)> {
        let t = Instant::now();
        let r = engine.run(&QueryRequest::new(expr, vec![])?)?;
        let positives = r.albums.iter().map(|a| a.positives.len()).sum();
        Ok((t.elapsed().as_secs_f64(), positives))
    };
    let (warm, _) = run(&mut engine, &expressions[0])?; // warm-up (also builds the album documents)
    println!("query 10000 photos / 100 albums, warm-up (new expression, album documents built): {:.0} ms", warm * 1e3);
    let mut first = Vec::new();
    let mut positives = 0;
    for e in expressions.iter().skip(1).take(3) {
        let (s, n) = run(&mut engine, e)?;
        first.push(s);
        positives = n;
    }
    println!(
        "query 10000 photos / 100 albums, new expression: median {:.0} ms over {} expressions ({positives} positives in the last)",
        median(first.clone()) * 1e3,
        first.len()
    );
    let repeats: Vec<f64> =
        (0..5).map(|_| run(&mut engine, &expressions[1]).map(|r| r.0)).collect::<anyhow::Result<_>>()?;
    println!(
        "query 10000 photos / 100 albums, repeated expression (search index): median {:.0} ms over 5",
        median(repeats) * 1e3
    );
    println!("peak RSS before the query part: {rss_before:.0} MiB");
    println!("peak RSS after the queries: {:.0} MiB", peak_rss_mib());
    Ok(())
}

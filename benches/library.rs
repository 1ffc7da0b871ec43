//! `cargo bench --bench library [-- PART...]`: what the photo library costs on this machine, one figure
//! a line. PARTs (default: all): `index`, `codec`, `query`, `mask`, `paper`.
//!
//! - `index`: indexing throughput of `library::index` with the built-in model on ~200 generated 128 px
//!   photos.
//! - `codec`: cache bytes per photo of every codec for the built-in model, and how far each moves the
//!   answers from uncached f32 features on the generated photos (decision agreement, distances, mask mIoU
//!   over every photo's mask, not only positives').
//! - `query`: query latency over a synthetic cache of 10 000 photos in 100 albums (real built-in model
//!   encodings of a few photos, repeated), split into the list of positives (`Engine::decide`), the first
//!   mask and all masks (the photos of the masked albums are on disk, so masks are guided by them as in
//!   use); a repeated query; peak RSS.
//! - `mask`: one mask at a phone camera's 4032 x 3024: decoding the JPEG, the guided upsampling as
//!   `photoseg query` runs it (edge band only), the same computed at every pixel, and plain bilinear.
//! - `paper`: the paper's shape (Swin-B at 416 px, BERT-base, C_v 512, K 8, decoder 256; random weights):
//!   indexing photos/s through `library::index`, bytes per photo and answer effect of every codec at
//!   lateral widths 32, 16 and 8 (`PHOTOSEG_BENCH_PAPER_LATERALS=8,4` picks others) against uncached f32
//!   features of the same model, and the time to the list of positives (no masks) over 1 000 cached
//!   photos in 10 albums with f16 and with `PHOTOSEG_BENCH_CODEC`.
//!
//! Everything is written under a temporary folder (HOME and the XDG folders point there).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use photoseg::library::cache::NewPhoto;
use photoseg::library::search::SearchIndex;
use photoseg::library::{self, Cache};
use photoseg::model::codec::{self, FeatureCodec};
use photoseg::model::grser::{self, Grser, Head, Pairs};
use photoseg::model::neck::{Neck, VisualFeatures};
use photoseg::model::preprocess::rgb_to_tensor;
use photoseg::model::text;
use photoseg::query::featurizer::{featurize_image, ModelFeaturizer};
use photoseg::query::model::LoadedModel;
use photoseg::query::{Engine, QueryRequest, DEFAULT_CODEC};
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

fn tokenizer() -> anyhow::Result<tokenizers::Tokenizer> {
    let tok_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/builtin/tokenizer.json");
    tokenizers::Tokenizer::from_file(&tok_path).map_err(anyhow::Error::msg)
}

/// A model of the built-in model's shape and tokenizer with random weights, saved and loaded as a model
/// directory (for when the embedded weights do not fit this build's network).
fn random_builtin_shape(dir: &Path) -> anyhow::Result<LoadedModel> {
    let tok = tokenizer()?;
    let cfg = grser::Config::builtin(tok.get_vocab_size(true));
    let varmap = VarMap::new();
    Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
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

/// Generated photos at `size` px in `dir`, copied into `lib/<album>/` (the data set's mask folders are
/// not photos). Returns the groups and the number of photos copied.
fn generate(
    dir: &Path,
    lib: &Path,
    size: u32,
    albums: usize,
    photos: (usize, usize),
) -> anyhow::Result<(Vec<synth::Group>, usize)> {
    let cfg = SynthConfig {
        seed: 7,
        albums_train: albums,
        albums_val: 0,
        albums_heldout: 0,
        heldout_combos: 0,
        image_size: size,
        photos_min: photos.0,
        photos_max: photos.1,
        ..SynthConfig::default()
    };
    synth::generate(&cfg, dir, |_, _| {})?;
    let groups = SynthDataset::open(dir)?.split("train")?;
    let mut count = 0;
    for g in &groups {
        let album = lib.join(g.album.file_name().unwrap());
        std::fs::create_dir_all(&album)?;
        for p in &g.photos {
            let to = album.join(p.path.file_name().unwrap());
            if !to.exists() {
                std::fs::copy(&p.path, &to)?;
                count += 1;
            }
        }
    }
    Ok((groups, count))
}

/// How far a codec moves one model's answers from its uncached f32 features, over groups.
#[derive(Default)]
struct Effect {
    answers: usize,
    same_decision: usize,
    /// Largest |d_codec - d_f32| / |d_f32| over d_pos and d_neg.
    d_rel: f32,
    ious: Vec<f64>,
    /// Object fraction of the f32 masks (to show they are not all one class).
    fg: Vec<f64>,
    /// IoUs of masks cut at each photo's f32 median logit instead of 0, so every f32 mask is half object:
    /// random weights give masks of mostly one class, whose IoU barely sees a codec's error.
    balanced: Vec<f64>,
    /// Seconds spent encoding whole photos and decoding their V (what a query decodes), over `photos`.
    encode_s: f64,
    decode_v_s: f64,
    photos: usize,
}

impl Effect {
    fn line(&self) -> String {
        let miou = self.ious.iter().sum::<f64>() / self.ious.len().max(1) as f64;
        let worst = self.ious.iter().copied().fold(1.0, f64::min);
        let fg = self.fg.iter().sum::<f64>() / self.fg.len().max(1) as f64;
        let balanced = self.balanced.iter().sum::<f64>() / self.balanced.len().max(1) as f64;
        let b_worst = self.balanced.iter().copied().fold(1.0, f64::min);
        format!(
            "decisions agree {:.2} % of {}, distances within {:.1e} relative, mask mIoU {miou:.4} (worst {worst:.4}, {} masks, f32 masks {:.0} % object); cut at the f32 median (half object) {balanced:.4} (worst {b_worst:.4}); encode {:.2} ms, decode V {:.3} ms a photo",
            100.0 * self.same_decision as f64 / self.answers.max(1) as f64,
            self.answers,
            self.d_rel,
            self.ious.len(),
            100.0 * fg,
            self.encode_s * 1e3 / self.photos.max(1) as f64,
            self.decode_v_s * 1e3 / self.photos.max(1) as f64,
        )
    }
}

/// Decisions, (d_pos then d_neg) distances and mask logits (object minus background, upsampled) of a
/// group's photos.
type Answers = (Vec<bool>, Vec<f32>, Vec<Vec<f32>>);

/// A model's decisions, (d_pos then d_neg) distances and object-minus-background mask logits
/// `[N, h, w]` of every photo (positive or not) of one group.
type Decided = anyhow::Result<(Vec<bool>, Vec<f32>, candle_core::Tensor)>;
type Decide<'a> = dyn Fn(&VisualFeatures, &grser::EncodedExpression) -> Decided + 'a;

/// [`Decide`] through a TQM head alone (the paper-shaped variants).
fn tqm_answers(head: &Head) -> impl Fn(&VisualFeatures, &grser::EncodedExpression) -> Decided + '_ {
    move |feats, text| {
        let tri = head.triphasic_v(&feats.v, &text.l, &text.anti, Pairs::TopK)?;
        let d_pos: Vec<f32> = tri.d_pos.to_vec1()?;
        let d_neg: Vec<f32> = tri.d_neg.to_vec1()?;
        let margin = head.config().margin;
        let decisions = d_pos.iter().zip(&d_neg).map(|(&p, &n)| grser::is_positive(p, n, margin)).collect();
        let logits = head.decode_z(&tri.z, &feats.laterals())?;
        let fg = (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)?;
        Ok((decisions, d_pos.into_iter().chain(d_neg).collect(), fg))
    }
}

/// [`Decide`] through the whole model, whichever head it has (the built-in model).
fn model_answers(model: &Grser) -> impl Fn(&VisualFeatures, &grser::EncodedExpression) -> Decided + '_ {
    move |feats, text| {
        let d = model.decide(&feats.v, text, Pairs::TopK)?;
        let decisions = (0..feats.len()).map(|i| d.positives.contains(&i)).collect();
        let all: Vec<usize> = (0..feats.len()).collect();
        let fg = model.masks_of(feats, text, &all)?;
        Ok((decisions, d.d_pos.into_iter().chain(d.d_neg).collect(), fg))
    }
}

/// Decisions, distances and the mask of every photo (positive or not) of one group, at `size` x `size`.
fn every_answer(
    decide: &Decide<'_>,
    feats: &VisualFeatures,
    text: &grser::EncodedExpression,
    size: usize,
) -> anyhow::Result<Answers> {
    let (decisions, distances, fg) = decide(feats, text)?;
    let mut logits = Vec::new();
    for i in 0..feats.len() {
        let up = fg.get(i)?.unsqueeze(0)?.unsqueeze(0)?.upsample_bilinear2d(size, size, false)?;
        logits.push(up.flatten_all()?.to_vec1()?);
    }
    Ok((decisions, distances, logits))
}

/// How each of `codecs` moves the answers over `groups` (each a list of f32 features).
fn codec_effects(
    decide: &Decide<'_>,
    groups: &[(Vec<VisualFeatures>, grser::EncodedExpression)],
    codecs: &[FeatureCodec],
    size: usize,
) -> anyhow::Result<Vec<Effect>> {
    let mut effects: Vec<Effect> = codecs.iter().map(|_| Effect::default()).collect();
    for (feats, text) in groups {
        let (da, dist_a, ma) = every_answer(decide, &VisualFeatures::cat(feats)?, text, size)?;
        for (e, &codec) in effects.iter_mut().zip(codecs) {
            let t = Instant::now();
            let blobs: Vec<Vec<u8>> =
                feats.iter().map(|f| codec::encode(f, codec)).collect::<candle_core::Result<_>>()?;
            e.encode_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut v = Vec::new();
            for b in &blobs {
                v.clear();
                std::hint::black_box(photoseg::model::codec::decode_v_into(b, &mut v)?);
            }
            e.decode_v_s += t.elapsed().as_secs_f64();
            e.photos += blobs.len();
            let coded: Vec<VisualFeatures> =
                blobs.iter().map(|b| codec::decode(b, &Device::Cpu)).collect::<candle_core::Result<_>>()?;
            let (db, dist_b, mb) = every_answer(decide, &VisualFeatures::cat(&coded)?, text, size)?;
            e.answers += da.len();
            e.same_decision += da.iter().zip(&db).filter(|(a, b)| a == b).count();
            for (a, b) in dist_a.iter().zip(&dist_b) {
                e.d_rel = e.d_rel.max((a - b).abs() / a.abs().max(1e-6));
            }
            let cut = |l: &[f32], t: f32| -> Vec<u8> { l.iter().map(|&x| u8::from(x > t)).collect() };
            for (a, b) in ma.iter().zip(&mb) {
                let (a0, b0) = (cut(a, 0.0), cut(b, 0.0));
                e.ious.push(iou(&a0, &b0));
                e.fg.push(a0.iter().filter(|&&x| x != 0).count() as f64 / a0.len() as f64);
                let mut sorted = a.clone();
                sorted.sort_by(f32::total_cmp);
                let median = sorted[sorted.len() / 2];
                e.balanced.push(iou(&cut(a, median), &cut(b, median)));
            }
        }
    }
    Ok(effects)
}

/// A synthetic cache of `albums` x `per_album` photos whose features cycle through `blobs`.
fn fill_cache(
    db: &Path,
    top: &Path,
    backbone: &str,
    blobs: &[Vec<u8>],
    albums: usize,
    per_album: usize,
) -> anyhow::Result<Cache> {
    let cache = Cache::open(db)?;
    let t = Instant::now();
    for a in 0..albums {
        cache.write_batch(|c| {
            for i in 0..per_album {
                let path = top.join(format!("album{a:03}/IMG_{i:04}.jpg"));
                let sha = format!("{:064x}", a * per_album + i);
                let id = c.upsert_photo(&NewPhoto {
                    path: &path,
                    size: 1000,
                    mtime_ns: (a * per_album + i) as i64,
                    sha256: &sha,
                    width: 128,
                    height: 128,
                })?;
                c.put_features(id, backbone, &blobs[(a + i) % blobs.len()])?;
            }
            Ok(())
        })?;
    }
    let stats = cache.stats()?;
    println!(
        "  synthetic cache: {} photos, {} albums, {:.0} MB of features ({} bytes/photo), filled in {:.1} s",
        stats.photos,
        stats.albums,
        stats.feature_bytes as f64 / 1e6,
        blobs[0].len(),
        t.elapsed().as_secs_f64()
    );
    Ok(cache)
}

/// Query latencies of `engine` over new expressions: (list of positives, first mask, all masks), ms.
/// `albums`: `--album` patterns (empty: every album).
fn time_queries(engine: &mut Engine, label: &str, expressions: &[String], albums: &[&str]) -> anyhow::Result<()> {
    let mut decide = Vec::new();
    let mut first = Vec::new();
    let mut total = Vec::new();
    let mut positives = 0;
    for e in expressions {
        let t = Instant::now();
        let decided = engine.decide(&QueryRequest::new(e, albums.iter().map(|a| a.to_string()).collect())?)?;
        decide.push(t.elapsed().as_secs_f64());
        let mut first_at = None;
        let r = engine.masks(decided, |_, _| {
            first_at.get_or_insert_with(|| t.elapsed().as_secs_f64());
        })?;
        let all = t.elapsed().as_secs_f64();
        total.push(all);
        first.push(first_at.unwrap_or(all));
        positives = r.albums.iter().map(|a| a.positives.len()).sum();
    }
    println!(
        "  query {label}, new expression, median of {}: positives listed {:.0} ms, first mask {:.0} ms, all masks {:.0} ms ({positives} positives in the last)",
        expressions.len(),
        median(decide) * 1e3,
        median(first) * 1e3,
        median(total) * 1e3,
    );
    Ok(())
}

/// The codec the index, query and paper parts store with: `$PHOTOSEG_BENCH_CODEC` (a codec name), else
/// photoseg's default.
fn bench_codec() -> FeatureCodec {
    std::env::var("PHOTOSEG_BENCH_CODEC").ok().and_then(|n| FeatureCodec::from_name(&n)).unwrap_or(DEFAULT_CODEC)
}

fn main() -> anyhow::Result<()> {
    // RUST_LOG=photoseg=debug shows where a query's time goes (the engine's debug lines).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    for (var, dir) in
        [("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")]
    {
        std::fs::create_dir_all(root.join(dir))?;
        std::env::set_var(var, root.join(dir));
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let codec = bench_codec();
    println!(
        "photoseg library benchmark: CPU, {threads} threads, codec {} (photoseg's default: {})",
        codec.name(),
        DEFAULT_CODEC.name()
    );

    let lib = root.join("library");
    let (groups, photo_count) = generate(&root.join("synth"), &lib, 128, 14, (12, 16))?;
    let model = match LoadedModel::load(&photoseg::builtin::model_dir()?) {
        Ok(m) => {
            println!("built-in model: the embedded one");
            m
        }
        Err(e) => {
            println!("built-in model: the embedded one does not load ({e:#}); a random model of its shape stands in");
            random_builtin_shape(&root.join("random-builtin"))?
        }
    };

    if want("index") {
        let cache = Cache::open(&root.join("index.sqlite3"))?;
        let mut featurizer = ModelFeaturizer::new(&model, codec);
        let t = Instant::now();
        let report = library::index(&cache, std::slice::from_ref(&lib), &mut featurizer, 16, &mut |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(report.featurized, photo_count, "{report:?}");
        println!(
            "index, built-in model, 128 px: {photo_count} photos in {secs:.2} s = {:.1} photos/s",
            photo_count as f64 / secs
        );
    }

    let mut per_photo: Vec<(PathBuf, VisualFeatures)> = Vec::new();
    for g in &groups {
        for p in &g.photos {
            if !per_photo.iter().any(|(q, _)| q == &p.path) {
                let img = image::open(&p.path)?.to_rgb8();
                per_photo.push((p.path.clone(), featurize_image(&model.grser, &img)?));
            }
        }
    }
    let feats_of = |path: &Path| per_photo.iter().find(|(p, _)| p == path).map(|(_, f)| f.clone()).unwrap();

    if want("codec") {
        println!("codecs, built-in model (128 px):");
        let mut sets = Vec::new();
        for g in &groups {
            let feats: Vec<VisualFeatures> = g.photos.iter().map(|p| feats_of(&p.path)).collect();
            sets.push((feats, model.grser.encode_expression(&g.expression)?));
        }
        let effects = codec_effects(&model_answers(&model.grser), &sets, &FeatureCodec::ALL, 128)?;
        for (codec, effect) in FeatureCodec::ALL.into_iter().zip(effects) {
            let bytes = codec::encode(&per_photo[0].1, codec)?.len();
            println!(
                "  {:>4}: {bytes} bytes/photo; vs f32 over {} groups: {}",
                codec.name(),
                groups.len(),
                effect.line()
            );
        }
    }

    if want("query") {
        println!("query, built-in model, {} codec:", codec.name());
        let rss_before = peak_rss_mib();
        let blobs: Vec<Vec<u8>> =
            per_photo.iter().take(8).map(|(_, f)| codec::encode(f, codec)).collect::<candle_core::Result<_>>()?;
        let backbone = model.backbone_id(codec);
        let big = root.join("big");
        let cache = fill_cache(&root.join("big.sqlite3"), &big, &backbone, &blobs, 100, 100)?;
        let search = SearchIndex::open(&root.join("big-search"))?;
        let mut engine = Engine::new(model.clone(), codec, cache, search, vec![big.clone()]);
        let mut expressions: Vec<String> = Vec::new();
        for g in &groups {
            if !expressions.contains(&g.expression) {
                expressions.push(g.expression.clone());
            }
        }
        let t = Instant::now();
        engine.run(&QueryRequest::new(&expressions[0], vec![])?)?; // also builds the album documents
        println!("  warm-up (new expression, album documents built): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
        time_queries(&mut engine, "10000 photos / 100 albums", &expressions[1..6], &[])?;
        let repeats: Vec<f64> = (0..5)
            .map(|_| -> anyhow::Result<f64> {
                let t = Instant::now();
                engine.run(&QueryRequest::new(&expressions[1], vec![])?)?;
                Ok(t.elapsed().as_secs_f64())
            })
            .collect::<anyhow::Result<_>>()?;
        println!(
            "  query 10000 photos / 100 albums, repeated expression (search index): median {:.0} ms over 5",
            median(repeats) * 1e3
        );

        // The embedded model rejects every photo (docs/builtin-model.md), which leaves the mask path idle: the
        // same weights with a margin of -1e4 accept every photo; asked over 10 of the albums (1 000 masks).
        let dir = root.join("builtin-all-positive");
        std::fs::create_dir_all(&dir)?;
        for f in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(model.dir.join(f), dir.join(f))?;
        }
        let mut cfg = model.grser.cfg.clone();
        cfg.head.margin = -1e4;
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
        let all = LoadedModel::load(&dir)?;
        let cache = fill_cache(&root.join("big-all.sqlite3"), &big, &all.backbone_id(codec), &blobs, 100, 100)?;
        // The masked albums' photos exist, so each mask decodes its photo and is guided by it.
        for a in 0..10 {
            for i in 0..100 {
                let to = big.join(format!("album{a:03}/IMG_{i:04}.jpg"));
                std::fs::create_dir_all(to.parent().unwrap())?;
                std::fs::copy(&per_photo[(a + i) % blobs.len()].0, to)?;
            }
        }
        let search = SearchIndex::open(&root.join("big-all-search"))?;
        let mut engine = Engine::new(all, codec, cache, search, vec![big.clone()]);
        engine.run(&QueryRequest::new(&expressions[0], vec![])?)?;
        let label = "10000 photos / 100 albums, every photo positive, --album album00 (10 albums, 1000 masks)";
        time_queries(&mut engine, label, &expressions[1..4], &["album00"])?;
        println!("  peak RSS before the query part: {rss_before:.0} MiB, after: {:.0} MiB", peak_rss_mib());
    }

    if want("mask") {
        large_mask(&root, &per_photo[0].0)?;
    }

    if want("paper") {
        paper(&root)?;
    }
    Ok(())
}

/// A phone camera's photo size (12 MP), which the `mask` and `paper` parts scale generated photos up to.
const CAMERA: (u32, u32) = (4032, 3024);

/// `img` scaled up to [`CAMERA`]'s size.
fn camera_sized(img: &image::RgbImage) -> image::RgbImage {
    image::imageops::resize(img, CAMERA.0, CAMERA.1, image::imageops::FilterType::Triangle)
}

/// Replaces every photo under `lib`'s albums with a 4032 x 3024 JPEG of it (quality 90): a phone camera's
/// size, where decoding and resizing cost what they cost in a real library.
fn as_camera_jpegs(lib: &Path) -> anyhow::Result<()> {
    for album in std::fs::read_dir(lib)? {
        for photo in std::fs::read_dir(album?.path())? {
            let path = photo?.path();
            let big = camera_sized(&image::open(&path)?.to_rgb8());
            let mut out = std::io::BufWriter::new(std::fs::File::create(path.with_extension("camera.jpg"))?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&big)?;
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The paper's shape with random weights: indexing, codecs at three lateral widths, query latency.
/// One mask at 4032 x 3024 (a phone camera's 12 MP) from a 32 x 32 grid holding a disc a quarter of
/// the photo wide, the photo a generated one scaled up and stored as JPEG; median of 5 each.
fn large_mask(root: &Path, photo: &Path) -> anyhow::Result<()> {
    use photoseg::model::upsample;
    let (w, h, g) = (CAMERA.0 as usize, CAMERA.1 as usize, 32usize);
    let big = camera_sized(&image::open(photo)?.to_rgb8());
    let path = root.join("large.jpg");
    big.save(&path)?;
    let logits: Vec<f32> = (0..g * g)
        .map(|i| {
            let (y, x) = ((i / g) as f32 + 0.5 - g as f32 / 2.0, (i % g) as f32 + 0.5 - g as f32 / 2.0);
            if x * x + y * y < (g as f32 / 8.0).powi(2) {
                4.0
            } else {
                -4.0
            }
        })
        .collect();
    let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut t = Vec::new();
        for _ in 0..5 {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(t))
    };
    let mut rgb = None;
    let decode = time(&mut || {
        rgb = Some(photoseg::library::photo::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
        Ok(())
    })?;
    let rgb = rgb.unwrap();
    let mut fast = Vec::new();
    let guided = time(&mut || {
        fast = upsample::guided_mask(&logits, g, g, rgb.as_raw(), w, h);
        Ok(())
    })?;
    let mut full = Vec::new();
    let every = time(&mut || {
        full = upsample::guided_probability(&logits, g, g, rgb.as_raw(), w, h)
            .into_iter()
            .map(|p| u8::from(p > 0.5))
            .collect();
        Ok(())
    })?;
    assert_eq!(fast, full, "the edge-band shortcut must not change the mask");
    let grid = candle_core::Tensor::from_vec(logits.clone(), (g, g), &Device::Cpu)?;
    let bilinear = time(&mut || {
        grser::mask_at(&grid, h, w)?;
        Ok(())
    })?;
    println!(
        "mask at {w} x {h} from a {g} x {g} grid, median of 5: JPEG decode {decode:.0} ms, guided (edge band) \
         {guided:.0} ms, guided at every pixel {every:.0} ms, bilinear {bilinear:.0} ms"
    );
    Ok(())
}

fn paper(root: &Path) -> anyhow::Result<()> {
    let codec = bench_codec();
    let tok = tokenizer()?;
    let mut cfg = grser::Config::paper();
    if let Some(l) = std::env::var("PHOTOSEG_BENCH_PAPER_LATERAL").ok().and_then(|v| v.parse().ok()) {
        cfg.head.lateral = l; // the indexing and query parts' lateral width (the codec table measures 32, 16, 8)
    }
    cfg.bert = text::Config { vocab_size: tok.get_vocab_size(true), ..cfg.bert };
    // The codec table's lateral widths: `PHOTOSEG_BENCH_PAPER_LATERALS` (comma-separated), else 32, 16, 8.
    let mut laterals: Vec<usize> = std::env::var("PHOTOSEG_BENCH_PAPER_LATERALS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![32, 16, 8]);
    if !laterals.contains(&cfg.head.lateral) {
        laterals.push(cfg.head.lateral);
    }
    let s = cfg.image_size;
    println!(
        "paper shape (Swin-B {s} px, BERT-base, C_v {}, K {}, decoder {}, preset lateral {}), random weights:",
        cfg.head.c_v, cfg.head.k, cfg.head.decoder_dim, cfg.head.lateral
    );
    let t = Instant::now();
    let chans = cfg.swin.stage_channels();
    let c_l = cfg.bert.hidden_size;
    let vb = inference_weights(|vb| {
        Grser::new(&cfg, tok.clone(), vb.clone()).unwrap();
        for &l in &laterals {
            Neck::new(&chans, cfg.head.c_v, l, vb.pp(format!("neck{l}"))).unwrap();
            Head::new(&grser::HeadConfig { lateral: l, ..cfg.head.clone() }, c_l, vb.pp(format!("head{l}"))).unwrap();
        }
    });
    let model = Grser::new(&cfg, tok.clone(), vb.clone())?;
    let variants: Vec<(usize, Neck, Head)> = laterals
        .iter()
        .map(|&l| -> anyhow::Result<_> {
            Ok((
                l,
                Neck::new(&chans, cfg.head.c_v, l, vb.pp(format!("neck{l}")))?,
                Head::new(&grser::HeadConfig { lateral: l, ..cfg.head.clone() }, c_l, vb.pp(format!("head{l}")))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    println!("  random weights made in {:.1} s", t.elapsed().as_secs_f64());
    let loaded = LoadedModel {
        grser: Arc::new(model),
        dir: root.join("paper-model"),
        name: "paper-model".into(),
        digest: "0".repeat(64),
    };

    // Indexing: the whole `library::index` path (read, hash, decode, resize, Swin-B + neck, encode, SQLite)
    // over photos of a phone camera's size, 4032 x 3024 JPEGs.
    let lib = root.join("paper-library");
    let (_, indexed) = generate(&root.join("paper-synth-index"), &lib, s as u32, 1, (8, 8))?;
    as_camera_jpegs(&lib)?;
    let cache = Cache::open(&root.join("paper-index.sqlite3"))?;
    let mut featurizer = ModelFeaturizer::new(&loaded, codec);
    let t = Instant::now();
    let report = library::index(&cache, std::slice::from_ref(&lib), &mut featurizer, 16, &mut |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.featurized, indexed, "{report:?}");
    println!(
        "  index, Swin-B {s} px, 4032 x 3024 JPEGs: {indexed} photos in {secs:.1} s = {:.3} photos/s ({:.2} s/photo)",
        indexed as f64 / secs,
        secs / indexed as f64
    );
    let (t, f) = (report.times, featurizer.times());
    let stages = [
        ("read and hash", t.read),
        ("decode", t.decode),
        ("resize", f.resize),
        ("forward (Swin-B + neck)", f.forward),
        ("encode features", f.encode),
        ("cache write", t.write),
        (
            "rest (scan, compare, featurizer glue)",
            Duration::from_secs_f64(secs).saturating_sub(t.read + t.decode + t.featurize + t.write)
                + t.featurize.saturating_sub(f.resize + f.forward + f.encode),
        ),
    ];
    for (name, d) in stages {
        println!(
            "    {name:<40} {:>8.1} ms/photo {:>5.1} %",
            d.as_secs_f64() * 1e3 / indexed as f64,
            100.0 * d.as_secs_f64() / secs
        );
    }

    // Codecs: the same photos through Swin-B once, then each lateral width's neck and head.
    let groups_wanted: usize =
        std::env::var("PHOTOSEG_BENCH_PAPER_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let (groups, _) = generate(&root.join("paper-synth"), &root.join("paper-lib2"), s as u32, groups_wanted, (6, 8))?;
    let t = Instant::now();
    let mut sets: Vec<Vec<(Vec<VisualFeatures>, grser::EncodedExpression)>> =
        laterals.iter().map(|_| Vec::new()).collect();
    let mut photos = 0;
    for g in &groups {
        let text = loaded.grser.encode_expression(&g.expression)?;
        let mut per_variant: Vec<Vec<VisualFeatures>> = laterals.iter().map(|_| Vec::new()).collect();
        for p in &g.photos {
            let img = image::open(&p.path)?.to_rgb8();
            let small = image::imageops::resize(&img, s as u32, s as u32, image::imageops::FilterType::Triangle);
            let x = rgb_to_tensor(small.as_raw(), s, s, &Device::Cpu)?.unsqueeze(0)?;
            let stages = loaded.grser.swin.forward_stages(&x)?;
            for (k, (_, neck, _)) in variants.iter().enumerate() {
                per_variant[k].push(neck.forward(&stages)?);
            }
            photos += 1;
        }
        for (k, f) in per_variant.into_iter().enumerate() {
            sets[k].push((f, text.clone()));
        }
    }
    println!("  {photos} photos in {} groups through Swin-B in {:.0} s", groups.len(), t.elapsed().as_secs_f64());
    for (k, (l, _, head)) in variants.iter().enumerate() {
        let effects = codec_effects(&tqm_answers(head), &sets[k], &FeatureCodec::ALL, s)?;
        for (codec, effect) in FeatureCodec::ALL.into_iter().zip(effects) {
            let bytes = codec::encode(&sets[k][0].0[0], codec)?.len();
            println!("  lateral {l:>2} {:>4}: {bytes:>7} bytes/photo; vs f32: {}", codec.name(), effect.line());
        }
    }

    // Query latency over 1 000 cached photos in 10 albums at the preset lateral width: f16, and the
    // bench codec when it is another (so a slow codec shows beside the default in the same run).
    let k = laterals.iter().position(|&l| l == cfg.head.lateral).expect("the preset's lateral width is measured");
    let expressions: Vec<String> = groups.iter().map(|g| g.expression.clone()).collect();
    let mut codecs = vec![FeatureCodec::F16];
    if codec != FeatureCodec::F16 {
        codecs.push(codec);
    }
    for codec in codecs {
        let blobs: Vec<Vec<u8>> = sets[k]
            .iter()
            .flat_map(|(f, _)| f.iter())
            .take(8)
            .map(|f| codec::encode(f, codec))
            .collect::<candle_core::Result<_>>()?;
        let backbone = loaded.backbone_id(codec);
        let top = root.join(format!("paper-big-{}", codec.name()));
        let db = root.join(format!("paper-big-{}.sqlite3", codec.name()));
        let cache = fill_cache(&db, &top, &backbone, &blobs, 10, 100)?;
        let search = SearchIndex::open(&root.join(format!("paper-big-search-{}", codec.name())))?;
        let mut engine = Engine::new(loaded.clone(), codec, cache, search, vec![top]);
        // Decisions only: random weights accept hundreds of these photos, and their masks at this shape
        // (a 256-wide decoder at 104 x 104) would take most of an hour on 2 cores without saying more.
        engine.decide(&QueryRequest::new(&expressions[0], vec![])?)?;
        let mut times = Vec::new();
        let mut positives = 0;
        for e in ["the thing on the left", "a blue one", "my red bike"] {
            let t = Instant::now();
            let decided = engine.decide(&QueryRequest::new(e, vec![])?)?;
            times.push(t.elapsed().as_secs_f64());
            positives = decided.albums.iter().map(|a| a.positives.len()).sum::<usize>();
        }
        println!(
            "  query paper shape, 1000 photos / 10 albums, {}, new expression, median of 3: positives listed \
             {:.0} ms ({positives} positives in the last; their masks are not made here)",
            codec.name(),
            median(times) * 1e3
        );
    }
    println!("  peak RSS: {:.0} MiB", peak_rss_mib());
    Ok(())
}

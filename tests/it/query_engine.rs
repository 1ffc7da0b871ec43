//! The query engine's two halves (`Engine::decide`, then `Engine::masks`) against the reference path
//! (`Grser::answer` on whole decoded features): the engine reads only V for the decision and the lateral
//! maps of positives only, encodes the expression once for all albums and stores every album's answer in
//! one commit; none of that may change an answer. Tiny random model: plumbing, not answer quality.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use image::{Rgb, RgbImage};
use photoseg::library::cache::NewPhoto;
use photoseg::library::search::SearchIndex;
use photoseg::library::Cache;
use photoseg::model::codec::{self, FeatureCodec};
use photoseg::model::grser::{Config, Grser, Pairs};
use photoseg::model::neck::VisualFeatures;
use photoseg::query::featurizer::featurize_image;
use photoseg::query::model::LoadedModel;
use photoseg::query::{Engine, Positive, QueryBackend, QueryProgress, QueryRequest, QuerySummary};

use crate::common;

fn model(margin: f64) -> LoadedModel {
    model_with(margin, |_| {})
}

/// A tiny model whose config `edit` changes, with the same weights in every run ([`common::seed_weights`]):
/// with fresh random weights a mask pixel now and then sits so close to the threshold that the fused
/// CPU path and the tensor path, which round differently, draw it on opposite sides.
fn model_with(margin: f64, edit: impl FnOnce(&mut Config)) -> LoadedModel {
    let varmap = VarMap::new();
    let tok = tokenizers::Tokenizer::from_file(common::fixture("tokenizer/tokenizer.json")).unwrap();
    let mut cfg = Config::tiny(60);
    cfg.head.margin = margin;
    edit(&mut cfg);
    let grser = Grser::new(&cfg, tok, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    common::seed_weights(&varmap, 7);
    LoadedModel {
        grser: Arc::new(grser),
        dir: PathBuf::from("/nonexistent"),
        name: "test".into(),
        digest: "ab".repeat(32),
    }
}

fn photo(seed: u32) -> RgbImage {
    RgbImage::from_fn(40 + seed * 4, 30 + seed, |x, y| {
        if (x as i32 - 15 - seed as i32).pow(2) + (y as i32 - 14).pow(2) < 60 {
            Rgb([230, 20, (seed * 30) as u8])
        } else {
            Rgb([(x * 5) as u8, (y * 3 + seed * 25) as u8, 60])
        }
    })
}

/// Three albums (3, 4 and 2 photos; one photo of the last without features) cached with `codec`; returns
/// each album's photos with their f32-decoded cached features, in path order.
fn fill(
    cache: &Cache,
    m: &LoadedModel,
    codec: FeatureCodec,
    top: &Path,
) -> Vec<Vec<(PathBuf, u32, u32, VisualFeatures)>> {
    let backbone = m.backbone_id(codec);
    let mut albums = Vec::new();
    let mut seed = 0;
    for (a, n) in [3u32, 4, 2].into_iter().enumerate() {
        let mut photos = Vec::new();
        for i in 0..n {
            let img = photo(seed);
            seed += 1;
            let path = top.join(format!("album{a}/p{i}.png"));
            // On disk too: masks are guided by the photo itself.
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            img.save(&path).unwrap();
            let id = cache
                .upsert_photo(&NewPhoto {
                    path: &path,
                    size: 1,
                    mtime_ns: seed as i64,
                    sha256: &format!("{seed:064x}"),
                    width: img.width(),
                    height: img.height(),
                })
                .unwrap();
            if a == 2 && i == 1 {
                continue; // not indexed yet
            }
            let bytes = codec::encode(&featurize_image(&m.grser, &img).unwrap(), codec).unwrap();
            cache.put_features(id, &backbone, &bytes).unwrap();
            let feats = codec::decode(&bytes, &Device::Cpu).unwrap();
            photos.push((path, img.width(), img.height(), feats));
        }
        albums.push(photos);
    }
    albums
}

#[test]
fn decide_then_masks_gives_the_reference_answers() {
    for codec in [FeatureCodec::F16, FeatureCodec::Int8] {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(-1e4); // every photo positive: every mask is compared
        let cache = Cache::open(&tmp.path().join("c.sqlite3")).unwrap();
        let top = tmp.path().join("photos");
        let albums = fill(&cache, &m, codec, &top);
        let search = SearchIndex::open(&tmp.path().join("search")).unwrap();
        let mut engine = Engine::new(m.clone(), codec, cache, search, vec![top.clone()]);
        let request = QueryRequest::new("the red ball", vec![]).unwrap();

        let decided = engine.decide(&request).unwrap();
        assert_eq!(decided.albums.len(), 3);
        let listed: Vec<Vec<PathBuf>> =
            decided.albums.iter().map(|a| a.positives.iter().map(|c| c.path.clone()).collect()).collect();
        let mut streamed = Vec::new();
        let result = engine.masks(decided, |album, p| streamed.push((album, p.path.clone()))).unwrap();

        for (ai, (a, photos)) in result.albums.iter().zip(&albums).enumerate() {
            assert_eq!(a.name, format!("album{ai}"));
            assert_eq!(a.positives.len(), photos.len(), "every indexed photo is positive");
            assert_eq!(a.unindexed, usize::from(ai == 2));
            assert!(!a.from_index);
            let got: Vec<PathBuf> = a.positives.iter().map(|p| p.path.clone()).collect();
            assert_eq!(got, listed[ai], "masks come in the order decide listed");
            let group = VisualFeatures::cat(&photos.iter().map(|p| p.3.clone()).collect::<Vec<_>>()).unwrap();
            let reference = m.grser.answer(&group, "the red ball", Pairs::TopK).unwrap();
            for ((path, w, h, _), r) in photos.iter().zip(&reference) {
                let p = a.positives.iter().find(|p| &p.path == path).unwrap();
                // The grid upsampled under the photo's guidance, as photoseg query makes masks.
                let logits = r.mask_logits.as_ref().unwrap();
                let (gh, gw) = logits.dims2().unwrap();
                let rgb = photoseg::library::photo::load(path).unwrap();
                let want = photoseg::model::upsample::guided_mask(
                    &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    gh,
                    gw,
                    rgb.as_raw(),
                    *w as usize,
                    *h as usize,
                );
                assert_eq!(p.mask, want, "{} ({})", path.display(), codec.name());
                // score = d_neg - d_pos - m with m = -1e4: compare the part that varies (f32 keeps about
                // 1e-3 of a number near 1e4).
                let (got, want) = (p.score - 1e4, r.d_neg - r.d_pos);
                assert!((got - want).abs() <= 5e-3, "{}: score {got} vs d_neg - d_pos {want}", path.display());
            }
        }
        let expected: Vec<(usize, PathBuf)> = result
            .albums
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.positives.iter().map(move |p| (i, p.path.clone())))
            .collect();
        assert_eq!(streamed, expected, "on_mask saw every positive once, album by album");

        // Stored in one commit for every album, and served from there the second time, masks included.
        let again = engine.run(&request).unwrap();
        assert!(again.albums.iter().all(|a| a.from_index));
        assert_eq!(
            again.albums,
            result
                .albums
                .iter()
                .map(|a| photoseg::query::AlbumResult { from_index: true, ..a.clone() })
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn rejected_photos_have_no_masks_and_albums_can_be_picked() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(1e4); // every photo rejected
    let cache = Cache::open(&tmp.path().join("c.sqlite3")).unwrap();
    let top = tmp.path().join("photos");
    fill(&cache, &m, FeatureCodec::F16, &top);
    let search = SearchIndex::open(&tmp.path().join("search")).unwrap();
    let mut engine = Engine::new(m, FeatureCodec::F16, cache, search, vec![top]);
    let decided = engine.decide(&QueryRequest::new("a cat", vec!["ALBUM1".into()]).unwrap()).unwrap();
    assert_eq!(decided.albums.len(), 1);
    assert!(decided.albums[0].positives.is_empty());
    assert_eq!(decided.albums[0].rejected, 4);
    let mut calls = 0;
    let result = engine.masks(decided, |_, _| calls += 1).unwrap();
    assert_eq!(calls, 0);
    assert_eq!(result.albums[0].rejected, 4);
}

#[test]
fn fused_cpu_decision_matches_the_tensor_path() {
    fused_matches_tensor_path(&model(-1e4));
}

#[test]
fn fused_cpu_decision_matches_the_tensor_path_with_standardised_v_and_positions() {
    // Tiny Swin at 64 px: V is 4 x 4.
    let m = model_with(-1e4, |c| {
        c.head.center_v = true;
        c.head.position_grid = Some(4);
    });
    fused_matches_tensor_path(&m);
}

fn fused_matches_tensor_path(m: &LoadedModel) {
    let text = m.grser.encode_expression("the red ball").unwrap();
    // Groups smaller than, equal to and larger than K = 4 (zero-padded maps, then top-K maps).
    for n in [1u32, 2, 4, 9] {
        let feats: Vec<VisualFeatures> = (0..n).map(|i| featurize_image(&m.grser, &photo(i)).unwrap()).collect();
        let group = VisualFeatures::cat(&feats).unwrap();
        let dims: [usize; 4] = group.v.dims4().map(|(a, b, c, d)| [a, b, c, d]).unwrap();
        let values: Vec<f32> = group.v.flatten_all().unwrap().to_vec1().unwrap();
        let reference = m.grser.decide(&group.v, &text, Pairs::TopK).unwrap();
        let fused = m.grser.decide_values(values, dims, &text).unwrap();
        assert_eq!(fused.positives, reference.positives, "n = {n}");
        for (a, b) in fused.d_pos.iter().chain(&fused.d_neg).zip(reference.d_pos.iter().chain(&reference.d_neg)) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "n = {n}: {a} vs {b}");
        }
        let (za, zb) = (fused.z_positives.unwrap(), reference.z_positives.unwrap());
        assert_eq!(za.dims(), zb.dims());
        let diff = (za - zb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "n = {n}: z differs by {diff}");
    }
}

#[test]
fn an_unreadable_album_fails_the_query_with_its_name() {
    // Reading and deciding run on two threads: an error in a middle album still names that album.
    let tmp = tempfile::tempdir().unwrap();
    let m = model(1e4);
    let cache = Cache::open(&tmp.path().join("c.sqlite3")).unwrap();
    let top = tmp.path().join("photos");
    fill(&cache, &m, FeatureCodec::F16, &top);
    let path = top.join("album1/p2.png");
    let id = cache
        .upsert_photo(&NewPhoto {
            path: &path,
            size: 1,
            mtime_ns: 6,
            sha256: &format!("{:064x}", 6),
            width: 48,
            height: 32,
        })
        .unwrap();
    cache.put_features(id, &m.backbone_id(FeatureCodec::F16), b"not features").unwrap();
    let search = SearchIndex::open(&tmp.path().join("search")).unwrap();
    let mut engine = Engine::new(m, FeatureCodec::F16, cache, search, vec![top]);
    let err = format!("{:#}", engine.decide(&QueryRequest::new("a cat", vec![]).unwrap()).unwrap_err());
    assert!(err.contains("album1") && err.contains("unreadable"), "{err}");
}

/// Records what `query_streaming` tells, in order.
#[derive(Default)]
struct Recorder {
    summary: Option<QuerySummary>,
    masks: Vec<(usize, Positive)>,
    /// Fail at this many masks (to check an error stops the query and comes back).
    fail_at: Option<usize>,
}

impl QueryProgress for Recorder {
    fn decided(&mut self, summary: &QuerySummary) -> anyhow::Result<()> {
        assert!(self.summary.is_none(), "decided is told once");
        assert!(self.masks.is_empty(), "the decision comes before any mask");
        self.summary = Some(summary.clone());
        Ok(())
    }

    fn mask(&mut self, album: usize, positive: &Positive) -> anyhow::Result<()> {
        assert!(self.summary.is_some(), "a mask before the decision");
        if self.fail_at == Some(self.masks.len()) {
            anyhow::bail!("disk full at mask {}", self.masks.len());
        }
        self.masks.push((album, positive.clone()));
        Ok(())
    }
}

#[test]
fn streaming_tells_the_decision_first_then_every_mask_in_the_answers_order() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(-1e4); // every photo positive
    let cache = Cache::open(&tmp.path().join("c.sqlite3")).unwrap();
    let top = tmp.path().join("photos");
    fill(&cache, &m, FeatureCodec::F16, &top);
    let search = SearchIndex::open(&tmp.path().join("search")).unwrap();
    let mut engine = Engine::new(m, FeatureCodec::F16, cache, search, vec![top]);
    let request = QueryRequest::new("the red ball", vec![]).unwrap();

    // Fresh answers (masks made now), then the same answers served from the search index.
    for pass in ["fresh", "from the search index"] {
        let mut rec = Recorder::default();
        let result = engine.query_streaming(&request, &mut rec).unwrap();
        assert_eq!(result.albums.iter().all(|a| a.from_index), pass != "fresh", "{pass}");
        assert_eq!(rec.summary.as_ref(), Some(&result.summary()), "{pass}: the decision is the answer's");
        let expected: Vec<(usize, Positive)> = result
            .albums
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.positives.iter().map(move |p| (i, p.clone())))
            .collect();
        assert_eq!(expected.len(), 8, "{pass}");
        assert_eq!(rec.masks, expected, "{pass}: every mask once, album by album, best score first");
    }

    // An error from the caller (a mask file that cannot be written) ends the query with that error.
    let mut rec = Recorder { fail_at: Some(2), ..Default::default() };
    let err = engine.query_streaming(&request, &mut rec).unwrap_err();
    assert!(format!("{err:#}").contains("disk full at mask 2"), "{err:#}");
    assert_eq!(rec.masks.len(), 2, "no mask is told after the error");
}

/// A folder removed while a query runs (the daemon's `RemoveRoot` between the decision and the masks):
/// the query answers from the cache as it was when it started, rather than failing on features that
/// vanished.
#[test]
fn photos_removed_between_decision_and_masks_still_get_their_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(-1e4); // every photo positive
    let file = tmp.path().join("c.sqlite3");
    let cache = Cache::open(&file).unwrap();
    let top = tmp.path().join("photos");
    fill(&cache, &m, FeatureCodec::F16, &top);
    let search = SearchIndex::open(&tmp.path().join("search")).unwrap();
    let mut engine = Engine::new(m, FeatureCodec::F16, cache, search, vec![top.clone()]);
    let decided = engine.decide(&QueryRequest::new("a cat", Vec::new()).unwrap()).unwrap();
    let positives: usize = decided.albums.iter().map(|a| a.positives.len()).sum();
    assert_eq!(positives, 8);

    let other = Cache::open(&file).unwrap(); // the indexer's connection
    assert_eq!(other.write_batch(|c| c.remove_under(&top)).unwrap(), 9);
    let result = engine.masks(decided, |_, _| {}).unwrap();
    assert_eq!(result.albums.iter().map(|a| a.positives.len()).sum::<usize>(), 8);
    // The next query sees the removal.
    let Err(err) = engine.decide(&QueryRequest::new("a cat", Vec::new()).unwrap()) else {
        panic!("an emptied library answered");
    };
    assert!(format!("{err:#}").contains("the library is empty"), "{err:#}");
}

/// A model loaded for answering keeps its last [`EXPRESSIONS_KEPT`] encoded expressions, newest kept,
/// each equal to a fresh encoding; a model whose weights are a training run's variables keeps none.
#[test]
fn a_loaded_model_keeps_its_last_expressions_and_a_training_one_none() {
    use photoseg::model::grser::EXPRESSIONS_KEPT;
    let varmap = VarMap::new();
    let tok = tokenizers::Tokenizer::from_file(common::fixture("tokenizer/tokenizer.json")).unwrap();
    let cfg = Config::tiny(60);
    let training = Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    common::seed_weights(&varmap, 7);
    training.encode_expression("the red ball").unwrap();
    assert_eq!(training.expressions_kept(), 0, "weights that change between calls must be encoded each time");

    let weights: std::collections::HashMap<String, candle_core::Tensor> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
    let loaded = Grser::new(&cfg, tok, VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu)).unwrap();
    let values = |t: &candle_core::Tensor| t.to_vec1::<f32>().unwrap();
    let first = loaded.encode_expression("the red ball").unwrap();
    let again = loaded.encode_expression("the red ball").unwrap();
    assert_eq!(loaded.expressions_kept(), 1);
    let fresh = loaded.encode_expression_uncached("the red ball").unwrap();
    assert_eq!(values(&again.l), values(&fresh.l));
    assert_eq!(values(&first.anti), values(&fresh.anti));
    assert_ne!(values(&loaded.encode_expression("the blue cube").unwrap().l), values(&fresh.l));
    for i in 0..EXPRESSIONS_KEPT + 6 {
        loaded.encode_expression(&format!("the red ball {i}")).unwrap();
    }
    assert_eq!(loaded.expressions_kept(), EXPRESSIONS_KEPT);
    let last = format!("the red ball {}", EXPRESSIONS_KEPT + 5);
    assert_eq!(
        values(&loaded.encode_expression(&last).unwrap().l),
        values(&loaded.encode_expression_uncached(&last).unwrap().l)
    );
}

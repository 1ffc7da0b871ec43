//! RefCOCO / RefCOCO+ / RefCOCOg, read from the refer toolkit's files, and regrouped into G-RefC groups.
//!
//! Inputs: `refs(unc).p` / `refs(umd).p` / `refs(google).p` (Python pickles, protocol 2, written by Python
//! 2: text is a byte string, or unicode where it was not ASCII), the COCO `instances.json` they point into,
//! and the folder of COCO train2014 images.
//!
//! GRSer (ICCV 2023) regroups these data sets "as one sentence vs a group of images, negatives sampled from
//! other groups, positive:negative 1:1" without saying more; the exact rule photoseg uses is
//! [`RefCoco::groups`] and `docs/datasets.md`.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_pickle::{HashableValue, Value};

use super::coco_mask::{Rle, Segmentation};
use super::sample::SplitMix64;
use super::{normalise_expression, Group, GroupPhoto, MaskSource};

/// One referring expression record: an annotated object and the sentences that refer to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ref {
    pub ref_id: u64,
    pub ann_id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// `train`, `val`, `testA`, `testB`, `test` (unc), or `train` / `val` (umd, google).
    pub split: String,
    /// Each sentence's `sent` (the toolkit's lower-cased, tokenised text), as stored.
    pub sentences: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub height: u32,
    pub width: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    pub segmentation: Segmentation,
    #[serde(default)]
    pub iscrowd: u8,
}

/// The parts of a COCO `instances.json` photoseg uses (categories, bboxes and areas are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct CocoInstances {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
}

/// How [`RefCoco::groups`] forms groups.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    /// The refs split to group (`train`, `val`, `testA`...); groups never mix splits.
    pub split: String,
    /// Seeds negative sampling (and positive sampling when `max_positives` caps a group).
    pub seed: u64,
    /// A sentence becomes a group only when it names one object in at least this many images (default 2:
    /// one image is plain RES, not a group).
    pub min_positives: usize,
    /// Keep at most this many positives a group (sampled by seed); `None` keeps all.
    pub max_positives: Option<usize>,
}

impl GroupConfig {
    pub fn new(split: &str, seed: u64) -> GroupConfig {
        GroupConfig { split: split.to_string(), seed, min_positives: 2, max_positives: None }
    }
}

/// A RefCOCO-family data set: refs, the COCO images and annotations they use, and the image folder.
#[derive(Debug)]
pub struct RefCoco {
    pub refs: Vec<Ref>,
    pub images: BTreeMap<u64, CocoImage>,
    pub annotations: HashMap<u64, CocoAnnotation>,
    images_dir: PathBuf,
    instances_path: PathBuf,
    /// Categories of every annotation (crowds too) of each image: what makes an image a true negative.
    image_categories: HashMap<u64, BTreeSet<u64>>,
}

impl RefCoco {
    /// Reads and cross-checks the three inputs: every ref's annotation and image must be in `instances`.
    pub fn open(refs: &Path, instances: &Path, images_dir: &Path) -> Result<RefCoco> {
        let ref_list = read_refs(refs)?;
        let inst = read_instances(instances)?;
        if !images_dir.is_dir() {
            bail!("images folder {} does not exist", images_dir.display());
        }
        let images: BTreeMap<u64, CocoImage> = inst.images.into_iter().map(|i| (i.id, i)).collect();
        let mut image_categories: HashMap<u64, BTreeSet<u64>> = HashMap::new();
        for a in &inst.annotations {
            image_categories.entry(a.image_id).or_default().insert(a.category_id);
        }
        let annotations: HashMap<u64, CocoAnnotation> = inst.annotations.into_iter().map(|a| (a.id, a)).collect();
        for r in &ref_list {
            let Some(ann) = annotations.get(&r.ann_id) else {
                bail!(
                    "ref {} (in {}) names annotation {}, which {} lacks",
                    r.ref_id,
                    refs.display(),
                    r.ann_id,
                    instances.display()
                );
            };
            if ann.image_id != r.image_id {
                bail!(
                    "ref {} (in {}) puts annotation {} in image {}, but {} puts it in image {}",
                    r.ref_id,
                    refs.display(),
                    r.ann_id,
                    r.image_id,
                    instances.display(),
                    ann.image_id
                );
            }
            if !images.contains_key(&r.image_id) {
                bail!(
                    "ref {} (in {}) names image {}, which {} lacks",
                    r.ref_id,
                    refs.display(),
                    r.image_id,
                    instances.display()
                );
            }
        }
        Ok(RefCoco {
            refs: ref_list,
            images,
            annotations,
            images_dir: images_dir.to_path_buf(),
            instances_path: instances.to_path_buf(),
            image_categories,
        })
    }

    /// The annotation's mask, as pycocotools `annToRLE` makes it.
    pub fn mask(&self, ann_id: u64) -> Result<Rle> {
        let ann = self
            .annotations
            .get(&ann_id)
            .ok_or_else(|| anyhow!("no annotation {ann_id} in {}", self.instances_path.display()))?;
        let img = self.images.get(&ann.image_id).ok_or_else(|| {
            anyhow!("annotation {ann_id} is on image {}, which {} lacks", ann.image_id, self.instances_path.display())
        })?;
        ann.segmentation
            .to_rle(img.height, img.width)
            .with_context(|| format!("annotation {ann_id} in {}", self.instances_path.display()))
    }

    /// Regroups one split into G-RefC groups, sorted by expression. The rule (ours; the paper gives only
    /// "one sentence vs a group of images, negatives from other groups, 1:1"):
    ///
    /// 1. Expression = a sentence, normalised (lower case, runs of white space to one space, trimmed).
    /// 2. Positives = the images where exactly one object of the split is referred to by that sentence;
    ///    the mask is that object's. An image where two objects carry the same sentence is ambiguous and
    ///    is neither positive nor negative.
    /// 3. A sentence with fewer than `min_positives` positives makes no group; over `max_positives`, that
    ///    many are sampled.
    /// 4. Negatives = as many images as positives, sampled from the split's other referred images (each the
    ///    image of other sentences, i.e. of other groups) that contain no annotation at all, crowd
    ///    included, of any category the sentence refers to: true negatives. A group with too few such
    ///    images is dropped rather than unbalanced.
    /// 5. Sampling is seeded by (`seed`, split, expression): the same files and config give the same groups.
    ///
    /// Photos are listed positives first, then negatives, each by image id.
    pub fn groups(&self, cfg: &GroupConfig) -> Result<Vec<Group>> {
        // sentence -> image -> the annotations that sentence refers to there
        let mut by_sentence: BTreeMap<String, BTreeMap<u64, BTreeSet<u64>>> = BTreeMap::new();
        let mut split_images: BTreeSet<u64> = BTreeSet::new();
        for r in self.refs.iter().filter(|r| r.split == cfg.split) {
            split_images.insert(r.image_id);
            for s in &r.sentences {
                let key = normalise_expression(s);
                if !key.is_empty() {
                    by_sentence.entry(key).or_default().entry(r.image_id).or_default().insert(r.ann_id);
                }
            }
        }
        if split_images.is_empty() {
            let mut splits: Vec<&str> = self.refs.iter().map(|r| r.split.as_str()).collect();
            splits.sort();
            splits.dedup();
            bail!("no refs in split {:?}; the refs have splits {splits:?}", cfg.split);
        }
        let mut groups = Vec::new();
        let (mut too_few_positives, mut too_few_negatives) = (0usize, 0usize);
        for (expression, images) in &by_sentence {
            let categories: BTreeSet<u64> =
                images.values().flatten().map(|a| self.annotations[a].category_id).collect();
            let mut positives: Vec<(u64, u64)> = images
                .iter()
                .filter(|(_, anns)| anns.len() == 1)
                .map(|(&img, anns)| (img, *anns.first().expect("one annotation")))
                .collect();
            if positives.len() < cfg.min_positives.max(1) {
                too_few_positives += 1;
                continue;
            }
            let mut rng = SplitMix64::for_key(cfg.seed, &format!("{}\0{}", cfg.split, expression));
            if let Some(max) = cfg.max_positives {
                if positives.len() > max {
                    positives = rng.choose(positives, max);
                    positives.sort();
                }
            }
            let candidates: Vec<u64> = split_images
                .iter()
                .copied()
                .filter(|img| self.image_categories.get(img).is_none_or(|cats| cats.is_disjoint(&categories)))
                .collect();
            if candidates.len() < positives.len() {
                too_few_negatives += 1;
                continue;
            }
            let mut negatives = rng.choose(candidates, positives.len());
            negatives.sort();
            let mut photos = Vec::with_capacity(positives.len() * 2);
            for &(img, ann) in &positives {
                photos.push(GroupPhoto {
                    image: self.checked_image_path(img)?,
                    mask: Some(MaskSource::Rle(self.mask(ann)?)),
                });
            }
            for &img in &negatives {
                photos.push(GroupPhoto { image: self.checked_image_path(img)?, mask: None });
            }
            groups.push(Group { expression: expression.clone(), photos });
        }
        tracing::info!(
            split = cfg.split,
            groups = groups.len(),
            too_few_positives,
            too_few_negatives,
            "regrouped refs into G-RefC groups"
        );
        Ok(groups)
    }

    /// The image's file, which must exist (ids come from refs that [`RefCoco::open`] checked).
    fn checked_image_path(&self, image_id: u64) -> Result<PathBuf> {
        let path = self.images_dir.join(&self.images[&image_id].file_name);
        if !path.is_file() {
            bail!("image {} (image {image_id} of {}) does not exist", path.display(), self.instances_path.display());
        }
        Ok(path)
    }
}

/// Reads a COCO `instances.json` (only images and annotations; everything else is skipped).
pub fn read_instances(path: &Path) -> Result<CocoInstances> {
    let bytes = std::fs::read(path).with_context(|| format!("reading coco instances {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing coco instances {}", path.display()))
}

/// Reads a refer-toolkit refs pickle (a list of dicts). Text may be Python 2 byte strings (decoded as UTF-8,
/// or Latin-1 where that fails, as Python 3's `pickle.load(f, encoding="latin1")` would) or unicode.
pub fn read_refs(path: &Path) -> Result<Vec<Ref>> {
    let file = File::open(path).with_context(|| format!("reading refs {}", path.display()))?;
    let value = serde_pickle::value_from_reader(BufReader::new(file), serde_pickle::DeOptions::new())
        .with_context(|| format!("reading refs {}: not a readable pickle", path.display()))?;
    let Value::List(items) = value else {
        bail!("refs {}: expected a list of refs, found {}", path.display(), kind(&value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_ref(item).with_context(|| format!("refs {}: entry {i}", path.display())))
        .collect()
}

fn parse_ref(item: &Value) -> Result<Ref> {
    let Value::Dict(d) = item else { bail!("expected a dict, found {}", kind(item)) };
    let sentences = match field(d, "sentences")? {
        Value::List(l) => l
            .iter()
            .map(|s| match s {
                Value::Dict(sd) => text(field(sd, "sent")?).context("sentence 'sent'"),
                other => bail!("a sentence is {}, not a dict", kind(other)),
            })
            .collect::<Result<Vec<_>>>()?,
        other => bail!("'sentences' is {}, not a list", kind(other)),
    };
    Ok(Ref {
        ref_id: int(field(d, "ref_id")?).context("'ref_id'")?,
        ann_id: int(field(d, "ann_id")?).context("'ann_id'")?,
        image_id: int(field(d, "image_id")?).context("'image_id'")?,
        category_id: int(field(d, "category_id")?).context("'category_id'")?,
        split: text(field(d, "split")?).context("'split'")?,
        sentences,
    })
}

/// A dict entry whose key is the text `key`, as a byte string (Python 2) or unicode (Python 3).
fn field<'a>(d: &'a BTreeMap<HashableValue, Value>, key: &str) -> Result<&'a Value> {
    d.get(&HashableValue::Bytes(key.as_bytes().to_vec()))
        .or_else(|| d.get(&HashableValue::String(key.to_string())))
        .ok_or_else(|| anyhow!("no '{key}' key"))
}

fn text(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bytes(b) => {
            Ok(String::from_utf8(b.clone()).unwrap_or_else(|_| b.iter().map(|&c| char::from(c)).collect()))
        }
        other => bail!("expected text, found {}", kind(other)),
    }
}

fn int(v: &Value) -> Result<u64> {
    match v {
        Value::I64(i) => u64::try_from(*i).map_err(|_| anyhow!("negative id {i}")),
        Value::Int(big) => u64::try_from(big).map_err(|_| anyhow!("id {big} out of range")),
        other => bail!("expected an integer, found {}", kind(other)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an integer",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_byte_strings_still_decode() {
        assert_eq!(text(&Value::Bytes(b"caf\xe9".to_vec())).unwrap(), "caf\u{e9}");
        assert_eq!(text(&Value::Bytes("caf\u{e9}".as_bytes().to_vec())).unwrap(), "caf\u{e9}");
    }
}

//! Which reader a data folder is read with: the `--format` of `photoseg train` and `photoseg eval`, and
//! the split each command takes from it. Every format gives [`Group`]s (photos by path, masks
//! undecoded), so the trainer and the evaluator never see a format.
//!
//! | format | `--data` | training groups | evaluation groups (`--split`) |
//! | --- | --- | --- | --- |
//! | `synth` | a `photoseg synth` folder | split `train` | `heldout` by default, or `train` / `val` |
//! | `refcoco` | the refer folder (`refs(*).p` and `instances.json`), or its refs pickle | split `train`, regrouped as G-RefC | `val` by default, or `testA`, `testB`, `test`, `train` |
//! | `cosod` | a Co-SOD root (CoCA, CoSal2015, CoSOD3k) | every group, negatives added 1:1 | every group, negatives added 1:1 |
//!
//! Group construction (G-RefC regrouping, Co-SOD negatives) is seeded by [`GROUP_SEED`], never by a
//! training stage's seed: every stage of a run, and the evaluation after it, see the same groups.
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::refcoco::{GroupConfig, RefCoco};
use super::{cosod, Group, GroupPhoto, MaskSource};

/// The seed of G-RefC's negative sampling and of the negatives added to Co-SOD groups.
pub const GROUP_SEED: u64 = 0;

/// The split a training run reads (synth, refcoco); a Co-SOD root has no splits and is read whole.
pub const TRAIN_SPLIT: &str = "train";

/// A data set's layout on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A `photoseg synth` data set.
    Synth,
    /// RefCOCO, RefCOCO+ or RefCOCOg (refer toolkit files), regrouped as G-RefC.
    Refcoco,
    /// A Co-SOD root (CoCA, CoSal2015, CoSOD3k), negatives drawn from other groups.
    Cosod,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Synth => "synth",
            Format::Refcoco => "refcoco",
            Format::Cosod => "cosod",
        })
    }
}

impl Format {
    /// The split `photoseg eval` reads when given none (`None`: the format has no splits).
    pub fn default_eval_split(self) -> Option<&'static str> {
        match self {
            Format::Synth => Some("heldout"),
            Format::Refcoco => Some("val"),
            Format::Cosod => None,
        }
    }

    /// Whether the format has the dense attribute labels (colour, shape, size of every object) that the
    /// `features` stage learns from: only the synthetic world does.
    pub fn has_attribute_labels(self) -> bool {
        self == Format::Synth
    }
}

/// A data set: its format, its folder and, for RefCOCO, where the COCO images are.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub format: Format,
    pub data: PathBuf,
    /// The COCO train2014 folder (RefCOCO); `None`: looked for beside the refs ([`RefcocoFiles::find`]).
    pub images: Option<PathBuf>,
}

impl DataSource {
    pub fn new(format: Format, data: &Path, images: Option<&Path>) -> Result<Self> {
        if images.is_some() && format != Format::Refcoco {
            bail!(
                "--images names the COCO image folder of a refcoco data set; a {format} data set holds its own photos"
            );
        }
        Ok(Self { format, data: data.to_path_buf(), images: images.map(Path::to_path_buf) })
    }

    /// The groups a training run reads: split `train`, or a whole Co-SOD root.
    pub fn train_groups(&self) -> Result<Vec<Group>> {
        match self.format {
            Format::Cosod => self.groups(None),
            _ => self.groups(Some(TRAIN_SPLIT)),
        }
    }

    /// The groups of `split` (`None`: the format's default for evaluation). Refused: a split for a
    /// Co-SOD root, which has none.
    pub fn groups(&self, split: Option<&str>) -> Result<Vec<Group>> {
        let split = match (split, self.format.default_eval_split()) {
            (Some(s), Some(_)) => Some(s),
            (None, default) => default,
            (Some(s), None) => bail!("a {} data set has no splits (asked for {s:?}); leave out --split", self.format),
        };
        match self.format {
            Format::Synth => synth_groups(&self.data, split.expect("synth has splits")),
            Format::Refcoco => {
                let files = RefcocoFiles::find(&self.data, self.images.as_deref())?;
                let ds = RefCoco::open(&files.refs, &files.instances, &files.images)?;
                ds.groups(&GroupConfig::new(split.expect("refcoco has splits"), GROUP_SEED))
            }
            Format::Cosod => Ok(cosod::with_negatives(&cosod::read_cosod(&self.data)?, GROUP_SEED)),
        }
    }
}

/// A `photoseg synth` data set's split as [`Group`]s.
pub fn synth_groups(root: &Path, split: &str) -> Result<Vec<Group>> {
    Ok(crate::synth::SynthDataset::open(root)?
        .split(split)?
        .into_iter()
        .map(|g| Group {
            expression: g.expression,
            photos: g
                .photos
                .into_iter()
                .map(|p| GroupPhoto { image: p.path, mask: p.mask.map(MaskSource::Png) })
                .collect(),
        })
        .collect())
}

/// The three inputs of a RefCOCO-family data set (docs/datasets.md).
#[derive(Debug, Clone, PartialEq)]
pub struct RefcocoFiles {
    pub refs: PathBuf,
    pub instances: PathBuf,
    pub images: PathBuf,
}

/// Where the refer toolkit's README puts COCO train2014, relative to a data set's folder
/// (`refer/data/refcoco/` -> `refer/data/images/mscoco/images/train2014/`), after `images/` and
/// `train2014/` inside it.
const IMAGE_FOLDERS: &[&str] = &["images", "train2014", "../images/mscoco/images/train2014"];

impl RefcocoFiles {
    /// `data` is the refer folder of one data set (`refcoco/`, `refcoco+/`, `refcocog/`) holding one
    /// `refs(*).p` and `instances.json`, or the refs pickle itself (RefCOCOg's folder holds two:
    /// `refs(umd).p` and `refs(google).p`). `images` is the COCO train2014 folder; `None` takes the first
    /// of [`IMAGE_FOLDERS`] that exists.
    pub fn find(data: &Path, images: Option<&Path>) -> Result<Self> {
        let (dir, refs) = if data.is_file() {
            (data.parent().unwrap_or(Path::new(".")).to_path_buf(), data.to_path_buf())
        } else if data.is_dir() {
            (data.to_path_buf(), Self::only_refs(data)?)
        } else {
            bail!("refcoco data {} does not exist", data.display());
        };
        let instances = dir.join("instances.json");
        if !instances.is_file() {
            bail!("no instances.json beside {}: the refer toolkit keeps it in the same folder", refs.display());
        }
        let images = match images {
            Some(p) => p.to_path_buf(),
            None => IMAGE_FOLDERS.iter().map(|f| dir.join(f)).find(|p| p.is_dir()).with_context(|| {
                format!(
                    "no COCO train2014 folder found for {} (looked for {} in {}); give it with --images",
                    refs.display(),
                    IMAGE_FOLDERS.join(", "),
                    dir.display()
                )
            })?,
        };
        Ok(Self { refs, instances, images })
    }

    /// The one `refs(*).p` in `dir`.
    fn only_refs(dir: &Path) -> Result<PathBuf> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
            let path = e.with_context(|| format!("reading folder {}", dir.display()))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with("refs(") && name.ends_with(").p") {
                found.push(path);
            }
        }
        found.sort();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "no refs pickle in {} (refs(unc).p, refs(umd).p or refs(google).p, as the refer toolkit names them)",
                dir.display()
            ),
            many => {
                let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
                bail!("{} holds {} refs pickles; give one as --data: {}", dir.display(), many.len(), names.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refer_folder_names_its_one_pickle_its_instances_and_the_images_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/refcocog");
        std::fs::create_dir_all(&dir).unwrap();
        let err = format!("{:#}", RefcocoFiles::find(&dir, None).unwrap_err());
        assert!(err.contains("no refs pickle") && err.contains("refs(unc).p"), "{err}");
        std::fs::write(dir.join("refs(umd).p"), b"").unwrap();
        let err = format!("{:#}", RefcocoFiles::find(&dir, None).unwrap_err());
        assert!(err.contains("no instances.json"), "{err}");
        std::fs::write(dir.join("instances.json"), b"{}").unwrap();
        let err = format!("{:#}", RefcocoFiles::find(&dir, None).unwrap_err());
        assert!(err.contains("--images") && err.contains("train2014"), "{err}");
        // The refer toolkit's own layout.
        let coco = tmp.path().join("data/images/mscoco/images/train2014");
        std::fs::create_dir_all(&coco).unwrap();
        let files = RefcocoFiles::find(&dir, None).unwrap();
        assert_eq!(files.refs, dir.join("refs(umd).p"));
        assert_eq!(files.instances, dir.join("instances.json"));
        assert_eq!(files.images, dir.join("../images/mscoco/images/train2014"));
        // Two pickles: the folder is ambiguous, the file is not.
        std::fs::write(dir.join("refs(google).p"), b"").unwrap();
        let err = format!("{:#}", RefcocoFiles::find(&dir, None).unwrap_err());
        assert!(err.contains("2 refs pickles") && err.contains("refs(google).p"), "{err}");
        let files = RefcocoFiles::find(&dir.join("refs(google).p"), Some(&tmp.path().join("coco"))).unwrap();
        assert_eq!((files.refs, files.images), (dir.join("refs(google).p"), tmp.path().join("coco")));
    }

    #[test]
    fn a_cosod_root_has_no_splits_and_only_refcoco_takes_an_image_folder() {
        let src = DataSource::new(Format::Cosod, Path::new("root"), None).unwrap();
        let err = src.groups(Some("val")).unwrap_err().to_string();
        assert!(err.contains("no splits") && err.contains("--split"), "{err}");
        let err = DataSource::new(Format::Synth, Path::new("d"), Some(Path::new("i"))).unwrap_err().to_string();
        assert!(err.contains("--images") && err.contains("synth"), "{err}");
        assert_eq!(Format::Refcoco.default_eval_split(), Some("val"));
        assert!(Format::Synth.has_attribute_labels() && !Format::Refcoco.has_attribute_labels());
    }
}

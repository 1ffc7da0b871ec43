//! Co-salient object detection sets (CoCA, CoSal2015, CoSOD3k) as GRSer groups.
//!
//! Layout: `<root>/<images>/<group>/<name>.jpg` and `<root>/<masks>/<group>/<name>.png`, where the releases
//! name the folders differently: images in `image/`, `Image/`, `images/` or `img/`; masks in
//! `groundtruth/`, `GroundTruth/`, `gt/`, `binary/` (CoCA), `mask/` or `masks/` (matched ignoring case).
//! The expression is the group folder's name, lower case, underscores as spaces ("Teddy_Bear" -> "teddy
//! bear"), as GRSer uses the category name. Every image of a Co-SOD group holds the co-salient object, so
//! all photos are positives; [`with_negatives`] adds negatives from other groups to measure rejection.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sample::SplitMix64;
use super::{normalise_expression, Group, GroupPhoto, MaskSource};

const IMAGE_DIRS: &[&str] = &["image", "images", "img"];
const MASK_DIRS: &[&str] = &["groundtruth", "gt", "binary", "mask", "masks"];
// No .bmp: photoseg's `image` build has no BMP decoder, and these three sets ship JPEG and PNG.
const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png"];
const MASK_EXTS: &[&str] = &["png"];

/// Reads every group under `root`, sorted by folder name, photos by file name. Each image must have a
/// mask of the same stem; an empty group folder is skipped.
pub fn read_cosod(root: &Path) -> Result<Vec<Group>> {
    let image_root = find_dir(root, IMAGE_DIRS).with_context(|| {
        format!("no image folder in co-sod root {} (looked for {})", root.display(), IMAGE_DIRS.join("/, ") + "/")
    })?;
    let mask_root = find_dir(root, MASK_DIRS).with_context(|| {
        format!("no ground-truth folder in co-sod root {} (looked for {})", root.display(), MASK_DIRS.join("/, ") + "/")
    })?;
    let mut groups = Vec::new();
    for group_dir in sorted_entries(&image_root)?.into_iter().filter(|p| p.is_dir()) {
        let name = group_dir.file_name().expect("entry has a name").to_string_lossy().into_owned();
        let images: Vec<PathBuf> = sorted_entries(&group_dir)?.into_iter().filter(|p| has_ext(p, IMAGE_EXTS)).collect();
        if images.is_empty() {
            continue;
        }
        let mask_dir = mask_root.join(&name);
        if !mask_dir.is_dir() {
            bail!("no ground truth for group {name:?}: {} does not exist", mask_dir.display());
        }
        let mut photos = Vec::with_capacity(images.len());
        for image in images {
            // Built by hand: `with_extension` would cut a stem that holds a dot ("img.001").
            let stem = image.file_stem().expect("file has a name").to_string_lossy().into_owned();
            let mask = MASK_EXTS
                .iter()
                .flat_map(|e| [e.to_string(), e.to_uppercase()])
                .map(|e| mask_dir.join(format!("{stem}.{e}")))
                .find(|p| p.is_file());
            let Some(mask) = mask else {
                bail!(
                    "no ground truth for {}: looked for {}",
                    image.display(),
                    mask_dir.join(format!("{stem}.png")).display()
                );
            };
            photos.push(GroupPhoto { image, mask: Some(MaskSource::Png(mask)) });
        }
        groups.push(Group { expression: expression_of(&name), photos });
    }
    if groups.is_empty() {
        bail!("no groups in co-sod root {}: {} holds no folder of images", root.display(), image_root.display());
    }
    Ok(groups)
}

/// "Teddy_Bear" -> "teddy bear".
pub fn expression_of(group_folder: &str) -> String {
    normalise_expression(&group_folder.replace('_', " "))
}

/// Each group with as many negatives as positives added, sampled (seeded by `seed` and the expression)
/// from the photos of the other groups. Co-SOD labels only each group's own object, so a sampled image may
/// still show this group's category (a dog in the "frisbee" group): rejection scores on Co-SOD are an
/// estimate, RefCOCO's category-checked negatives are exact. With too few other photos, all are taken.
pub fn with_negatives(groups: &[Group], seed: u64) -> Vec<Group> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let pool: Vec<PathBuf> = groups
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, other)| other.photos.iter().filter(|p| p.mask.is_some()).map(|p| p.image.clone()))
                .collect();
            let mut rng = SplitMix64::for_key(seed, &g.expression);
            let mut negatives = rng.choose(pool, g.positives());
            negatives.sort();
            let mut photos = g.photos.clone();
            photos.extend(negatives.into_iter().map(|image| GroupPhoto { image, mask: None }));
            Group { expression: g.expression.clone(), photos }
        })
        .collect()
}

fn find_dir(root: &Path, names: &[&str]) -> Option<PathBuf> {
    let entries = sorted_entries(root).ok()?;
    names.iter().find_map(|n| {
        entries
            .iter()
            .find(|p| p.is_dir() && p.file_name().is_some_and(|f| f.to_string_lossy().eq_ignore_ascii_case(n)))
            .cloned()
    })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        out.push(e.with_context(|| format!("reading folder {}", dir.display()))?.path());
    }
    out.sort();
    Ok(out)
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e.to_string_lossy().eq_ignore_ascii_case(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_become_expressions() {
        assert_eq!(expression_of("Teddy_Bear"), "teddy bear");
        assert_eq!(expression_of("pizza"), "pizza");
        assert_eq!(expression_of("Rubik's_cube__"), "rubik's cube");
    }
}

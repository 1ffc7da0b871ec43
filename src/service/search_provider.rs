//! `org.gnome.Shell.SearchProvider2` at `/org/photoseg/SearchProvider`: typing an expression in the
//! GNOME Shell overview lists the photos that show it (file name, album and score, a thumbnail with the
//! mask drawn on it); activating one opens it. The result ids are the photos' paths.
//!
//! The interface is GNOME's (`org.gnome.ShellSearchProvider2.xml`); its `.ini` lives in `packaging/`.
use std::collections::HashMap;

use zbus::{interface, OwnedVariant, Variant};

use super::desktop::Desktop;
use super::error::{blocking, Error, Result};

/// The GNOME Shell search provider.
#[derive(Debug)]
pub struct SearchProvider {
    desktop: Desktop,
}

impl SearchProvider {
    pub fn new(desktop: Desktop) -> Self {
        SearchProvider { desktop }
    }
}

#[interface(name = "org.gnome.Shell.SearchProvider2")]
impl SearchProvider {
    /// The photos showing what `terms` say, best first.
    #[zbus(out_args("results"))]
    async fn get_initial_result_set(&self, terms: Vec<String>) -> Result<Vec<String>> {
        let desktop = self.desktop.clone();
        blocking(move || Ok(desktop.search(&terms)?.iter().map(|h| h.id()).collect())).await
    }

    /// The photos `terms` find, recomputed as for a new search: `previous_results` are ignored. GNOME
    /// calls this for every key typed after the first, and an expression is not a filter of its prefix
    /// ("y" finds nothing, "yellow circle" finds photos), so narrowing the previous answer would keep
    /// an early empty answer empty. Each answer runs only the head over the cached features.
    #[zbus(out_args("results"))]
    async fn get_subsearch_result_set(&self, previous_results: Vec<String>, terms: Vec<String>) -> Result<Vec<String>> {
        let _ = previous_results;
        self.get_initial_result_set(terms).await
    }

    /// For each id: `id`, `name` (file name), `description` (album and score) and `gicon` (a PNG
    /// thumbnail with the mask drawn on it, under `$XDG_CACHE_HOME/photoseg/thumbnails`).
    #[zbus(out_args("metas"))]
    async fn get_result_metas(&self, identifiers: Vec<String>) -> Result<Vec<HashMap<String, OwnedVariant>>> {
        let desktop = self.desktop.clone();
        blocking(move || {
            identifiers
                .iter()
                .map(|id| {
                    let (expression, hit) = desktop.hit(id).ok_or_else(|| {
                        Error::UnknownPhoto(format!("{id} is not a result of a recent search; search again"))
                    })?;
                    let p = &hit.positive;
                    let name =
                        p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| id.clone());
                    let mut meta = HashMap::new();
                    meta.insert("id".to_string(), variant(id.clone()));
                    meta.insert("name".to_string(), variant(name));
                    meta.insert(
                        "description".to_string(),
                        variant(format!("{} \u{b7} score {:.2} \u{b7} {}", hit.album, p.score, expression)),
                    );
                    if let Some(thumb) = desktop.thumbnail(&expression, &hit) {
                        meta.insert("gicon".to_string(), variant(super::path_string(&thumb)));
                    }
                    Ok(meta)
                })
                .collect()
        })
        .await
    }

    /// Opens the photo in the default viewer (the call succeeds even when no viewer can be started).
    async fn activate_result(&self, identifier: String, terms: Vec<String>, timestamp: u32) -> Result<()> {
        let _ = timestamp;
        let desktop = self.desktop.clone();
        blocking(move || desktop.open(&identifier, false, Some(&terms.join(" ")))).await
    }

    /// Shows every result: overlays written to `$XDG_CACHE_HOME/photoseg/results/<terms>/`, that folder
    /// opened.
    async fn launch_search(&self, terms: Vec<String>, timestamp: u32) -> Result<()> {
        let _ = timestamp;
        let desktop = self.desktop.clone();
        blocking(move || desktop.show_all(&terms)).await
    }
}

/// A plain value as an owned variant (only file descriptors fail to convert).
pub(super) fn variant<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
    OwnedVariant::try_from(v.into()).expect("a value without file descriptors converts")
}

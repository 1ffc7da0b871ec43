//! `org.kde.krunner1` at `/org/photoseg/krunner`: KRunner (Plasma's search) lists the photos that show
//! what the user typed; running a match opens the photo, or its folder with the "open-folder" action.
//! Match ids are the photos' paths; each match carries the thumbnail GNOME shows (mask drawn) as
//! `icon-data`. The interface is KDE's (`kf6/krunner/dbusplugins`); its `.desktop`
//! file lives in `packaging/`.
use std::collections::HashMap;

use zbus::{interface, OwnedVariant};

use super::desktop::Desktop;
use super::error::{blocking, Error, Result};
use super::search_provider::variant;

/// KRunner's match type for a result that may be what the user means (`Plasma::QueryMatch::PossibleMatch`).
pub const POSSIBLE_MATCH: i32 = 30;
/// The one extra action: open the folder holding the photo.
pub const OPEN_FOLDER: &str = "open-folder";

/// The KRunner runner.
#[derive(Debug)]
pub struct KRunner {
    desktop: Desktop,
}

impl KRunner {
    pub fn new(desktop: Desktop) -> Self {
        KRunner { desktop }
    }
}

/// One match: id, text, icon name, type, relevance, properties.
type Match = (String, String, String, i32, f64, HashMap<String, OwnedVariant>);

#[interface(name = "org.kde.krunner1")]
impl KRunner {
    /// The actions every match offers besides running it: (id, text, icon name).
    #[zbus(out_args("matches"))]
    async fn actions(&self) -> Vec<(String, String, String)> {
        vec![(OPEN_FOLDER.into(), "Open containing folder".into(), "folder-open".into())]
    }

    /// The photos showing what `query` says, best first; relevance in (0, 1) grows with the score.
    #[zbus(name = "Match", out_args("matches"))]
    async fn find(&self, query: String) -> Result<Vec<Match>> {
        let desktop = self.desktop.clone();
        blocking(move || {
            let hits = desktop.search(std::slice::from_ref(&query))?;
            Ok(hits
                .iter()
                .map(|h| {
                    let p = &h.positive;
                    let text = p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| h.id());
                    let score = f64::from(p.score.max(0.0));
                    let mut props = HashMap::new();
                    props.insert("subtext".to_string(), variant(format!("{} \u{b7} score {:.2}", h.album, p.score)));
                    props.insert("urls".to_string(), variant(vec![file_url(&h.id())]));
                    props.insert("category".to_string(), variant("Photos"));
                    if let Some(icon) = desktop.thumbnail(&query, h).and_then(|t| icon_data(&t)) {
                        props.insert("icon-data".to_string(), variant(icon));
                    }
                    (h.id(), text, "image-x-generic".to_string(), POSSIBLE_MATCH, score / (1.0 + score), props)
                })
                .collect())
        })
        .await
    }

    /// Opens the photo (`action_id` empty) or its folder (`open-folder`).
    async fn run(&self, match_id: String, action_id: String) -> Result<()> {
        let folder = match action_id.as_str() {
            "" => false,
            OPEN_FOLDER => true,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown action {other:?}; photoseg's matches offer \"\" (open) and {OPEN_FOLDER:?}"
                )))
            }
        };
        let desktop = self.desktop.clone();
        blocking(move || desktop.open(&match_id, folder, None)).await
    }
}

/// Longest side of a match's icon: KRunner shows small icons, and 20 matches of 256 px RGBA would
/// put 3.5 MB on the bus at every keystroke.
pub const ICON_SIZE: u32 = 64;

/// KRunner's `icon-data`: width, height, row stride, has alpha, bits per sample, channels, RGBA bytes.
type IconData = (i32, i32, i32, bool, i32, i32, Vec<u8>);

/// [`IconData`] from a thumbnail file, scaled to [`ICON_SIZE`]; `None` (logged) when it cannot be read.
fn icon_data(thumbnail: &std::path::Path) -> Option<IconData> {
    let img = match image::open(thumbnail) {
        Ok(img) => img,
        Err(e) => {
            tracing::warn!("no icon from {}: {e}", thumbnail.display());
            return None;
        }
    };
    let rgba = img.thumbnail(ICON_SIZE, ICON_SIZE).to_rgba8();
    let (w, h) = (rgba.width() as i32, rgba.height() as i32);
    Some((w, h, w * 4, true, 8, 4, rgba.into_raw()))
}

/// `file://` URL of an absolute path, percent-encoding what a URL may not hold.
fn file_url(path: &str) -> String {
    let mut url = String::from("file://");
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_urls_escape_spaces_and_non_ascii() {
        assert_eq!(super::file_url("/p/My Photos/é.jpg"), "file:///p/My%20Photos/%C3%A9.jpg");
    }
}

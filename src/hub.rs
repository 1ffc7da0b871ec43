//! Files of Hugging Face hub repos, fetched with the `hf-hub` crate into the hub's own cache
//! (`$HF_HOME/hub/models--OWNER--NAME/{blobs,snapshots,refs}`, as Python's `huggingface_hub` lays it
//! out, so either reuses what the other fetched). `HF_ENDPOINT` names another hub or a mirror.
//!
//! A download goes to `blobs/ETAG.part` and is renamed when whole: a dropped connection is retried
//! from where it stopped, and a killed process leaves the part, which the next run resumes with an
//! HTTP range request. A repo whose files are all in the cache is read from it without the network.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};

/// The hub photoseg asks when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How often a download cut short is taken up again, from where it stopped, before giving up.
const RETRIES: usize = 3;

/// Whether `source` names a hub repo (`owner/name` or `name`, optionally `@revision`) rather than a
/// path: it does not exist on disk, has at most one `/`, and does not start like a path (`/`, `.`, `~`)
/// or end like a weights file.
pub fn is_repo_id(source: &str) -> bool {
    let (id, _) = split_revision(source);
    !Path::new(source).exists()
        && !id.is_empty()
        && !id.starts_with(['/', '.', '~'])
        && id.matches('/').count() <= 1
        && ![".safetensors", ".pth", ".pt", ".bin", ".json"].iter().any(|e| id.ends_with(e))
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// `owner/name@revision` as (`owner/name`, `revision`); `main` when none is given.
pub fn split_revision(source: &str) -> (&str, &str) {
    match source.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, rev),
        _ => (source.trim_end_matches('@'), "main"),
    }
}

/// A client of the hub named by `HF_ENDPOINT`, caching under `HF_HOME`.
pub struct Hub {
    api: Api,
    endpoint: String,
}

impl Hub {
    /// The hub of the environment (`HF_ENDPOINT`, `HF_HOME`, the token of `huggingface-cli login`),
    /// with a progress bar on a terminal.
    pub fn from_env() -> Result<Self> {
        let endpoint =
            std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let api = ApiBuilder::from_env()
            .with_endpoint(endpoint.trim_end_matches('/').to_string())
            .with_retries(RETRIES)
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .build()
            .map_err(|e| anyhow!("cannot set up the Hugging Face hub client: {e}"))?;
        Ok(Self { api, endpoint })
    }

    /// The snapshot folder of `repo` (`owner/name[@revision]`) holding every file of `files` and the
    /// first of each group of `one_of` (e.g. `model.safetensors`, else `pytorch_model.bin`) the repo
    /// has; `optional` files are fetched when the repo has them.
    pub fn fetch(&self, repo: &str, files: &[&str], one_of: &[&[&str]], optional: &[&str]) -> Result<PathBuf> {
        let (id, revision) = split_revision(repo);
        let api = self.api.repo(Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string()));
        let mut got: Vec<PathBuf> = Vec::new();
        for file in files {
            got.push(self.get(&api, repo, file)?.ok_or_else(|| missing(&self.endpoint, repo, &[file]))?);
        }
        for group in one_of {
            let mut found = None;
            for file in *group {
                if let Some(path) = self.get(&api, repo, file)? {
                    found = Some(path);
                    break;
                }
            }
            got.push(found.ok_or_else(|| missing(&self.endpoint, repo, group))?);
        }
        for file in optional {
            if let Some(path) = self.get(&api, repo, file)? {
                got.push(path);
            }
        }
        let dir = got.first().and_then(|p| p.parent()).ok_or_else(|| anyhow!("no file of {repo} was asked for"))?;
        if got.iter().any(|p| p.parent() != Some(dir)) {
            bail!("{repo} changed on the hub while its files were fetched; run the command again");
        }
        Ok(dir.to_path_buf())
    }

    /// One file: its path in the cache, `None` when the repo has no such file.
    fn get(&self, api: &hf_hub::api::sync::ApiRepo, repo: &str, file: &str) -> Result<Option<PathBuf>> {
        match api.get(file) {
            Ok(path) => Ok(Some(path)),
            Err(e) => match status(&e) {
                Some(404) => Ok(None),
                Some(401 | 403) => bail!(
                    "the hub at {} refuses {repo} (it is private, gated or does not exist); log in with \
                     `huggingface-cli login` (its token is read from HF_HOME) or check the name",
                    self.endpoint
                ),
                Some(code) => bail!("the hub at {} answered {code} for {file} of {repo}", self.endpoint),
                None if broke_off(&e) => bail!(
                    "fetching {file} of {repo} from {} broke off ({e}); what arrived is kept in the hub's cache \
                     (HF_HOME) and the same command goes on from it",
                    self.endpoint
                ),
                None if unreachable(&e) => bail!(
                    "cannot reach the Hugging Face hub at {} to fetch {file} of {repo} ({e}); check the network \
                     (HF_ENDPOINT names another hub or a mirror), or give a local file or folder instead. A part \
                     already downloaded is kept and the next run goes on from it",
                    self.endpoint
                ),
                None => bail!("fetching {file} of {repo} from {}: {e}", self.endpoint),
            },
        }
    }
}

fn missing(endpoint: &str, repo: &str, files: &[&str]) -> anyhow::Error {
    anyhow!("{repo} on the hub at {endpoint} has no {}", files.join(" or "))
}

/// The HTTP status of a request the hub refused.
fn status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(code, _) => Some(*code),
            ureq::Error::Transport(_) => None,
        },
        ApiError::TooManyRetries(inner) => status(inner),
        _ => None,
    }
}

/// Whether the request never got an answer (no network, a refused connection).
fn unreachable(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if matches!(r.as_ref(), ureq::Error::Transport(_)))
}

/// Whether a download stopped midway, after every retry (the connection broke, or the cache could not
/// be written).
fn broke_off(e: &ApiError) -> bool {
    matches!(e, ApiError::TooManyRetries(_) | ApiError::IoError(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(is_repo_id("bert-base-uncased"));
        assert!(is_repo_id("timm/swin_base_patch4_window12_384.ms_in22k"));
        assert!(is_repo_id("owner/grser@v1"));
        assert!(!is_repo_id("./swin"));
        assert!(!is_repo_id("/nonexistent/swin"));
        assert!(!is_repo_id("swin.safetensors"));
        assert!(!is_repo_id("a/b/c"));
        assert_eq!(split_revision("owner/grser@v1"), ("owner/grser", "v1"));
        assert_eq!(split_revision("owner/grser"), ("owner/grser", "main"));
    }
}

//! The photos collected so far, on disk: one folder per species, `manifest.jsonl` with a line
//! per photo (written after the photo is in place, so a line always names a whole file), and
//! `ATTRIBUTION.md` rebuilt from the manifest. Opening a collection reads the manifest back, so
//! a second run skips what the first one stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Candidate;
use crate::dataset::decode::image_from_bytes;
use crate::{Error, Result, files};

pub const MANIFEST: &str = "manifest.jsonl";
pub const ATTRIBUTION: &str = "ATTRIBUTION.md";

/// One stored photo, as a line of `manifest.jsonl`: what the source said of it, and the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    #[serde(flatten)]
    pub photo: Candidate,
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    /// The photo's file, relative to the collection folder.
    pub file: String,
}

/// What happened to one candidate photo.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Stored(Box<ManifestEntry>),
    /// The same bytes are already stored under this file.
    Duplicate(String),
    /// Not stored, with the reason (not an image, truncated, ...).
    Unusable(String),
}

struct State {
    manifest: std::fs::File,
    ids: HashSet<(String, String)>,
    hashes: HashMap<String, String>,
    per_species: BTreeMap<String, usize>,
}

/// A collection folder, shared by the download threads.
pub struct Collection {
    root: PathBuf,
    state: Mutex<State>,
}

impl Collection {
    /// Opens (or creates) the collection in `root`, reading its manifest and removing the
    /// temporary files of an interrupted run.
    pub fn open(root: &Path) -> Result<Self> {
        files::create_dir(root)?;
        let manifest_path = root.join(MANIFEST);
        let mut ids = HashSet::new();
        let mut hashes = HashMap::new();
        let mut per_species: BTreeMap<String, usize> = BTreeMap::new();
        for entry in read_manifest(root)? {
            // A line whose photo was deleted by hand does not count as collected.
            if root.join(&entry.file).is_file() {
                let photo = &entry.photo;
                ids.insert((photo.source.clone(), photo.id.clone()));
                hashes.insert(entry.sha256.clone(), entry.file.clone());
                *per_species.entry(photo.species.clone()).or_default() += 1;
            }
        }
        files::remove_temporary(root)?;
        drop_cut_line(&manifest_path)?;
        let manifest = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&manifest_path)
            .map_err(|e| Error::io(&manifest_path, e))?;
        Ok(Collection {
            root: root.to_path_buf(),
            state: Mutex::new(State {
                manifest,
                ids,
                hashes,
                per_species,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the photo `id` of `source` is already stored.
    pub fn contains(&self, source: &str, id: &str) -> bool {
        self.state()
            .ids
            .contains(&(source.to_string(), id.to_string()))
    }

    /// Photos of `species` stored so far.
    pub fn count(&self, species: &str) -> usize {
        self.state().per_species.get(species).copied().unwrap_or(0)
    }

    /// Checks that `bytes` are a whole image and stores them, unless the same bytes are
    /// already stored. Only a failure to write is an error: it stops the run.
    pub fn store(&self, candidate: &Candidate, bytes: &[u8]) -> Result<Outcome> {
        // Bytes already stored need no decoding.
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        if let Some(existing) = self.state().hashes.get(&sha256) {
            return Ok(Outcome::Duplicate(existing.clone()));
        }
        let image = match image_from_bytes(bytes, Path::new(&candidate.image_url)) {
            Ok(image) => image,
            Err(Error::Photo { reason, .. }) => return Ok(Outcome::Unusable(reason)),
            Err(other) => return Ok(Outcome::Unusable(other.to_string())),
        };
        let extension = match image::guess_format(bytes) {
            Ok(image::ImageFormat::Png) => "png",
            Ok(image::ImageFormat::WebP) => "webp",
            Ok(image::ImageFormat::Gif) => "gif",
            _ => "jpg",
        };
        let file = format!(
            "{}/{}-{}.{extension}",
            candidate.species,
            candidate.source,
            file_safe(&candidate.id)
        );
        let path = self.root.join(&file);
        if let Some(parent) = path.parent() {
            files::create_dir(parent)?;
        }
        let entry = ManifestEntry {
            photo: candidate.clone(),
            sha256: sha256.clone(),
            bytes: bytes.len() as u64,
            width: image.width(),
            height: image.height(),
            file: file.clone(),
        };
        let mut state = self.state();
        // Checked again under the lock: another thread may have stored the same bytes.
        if let Some(existing) = state.hashes.get(&sha256) {
            return Ok(Outcome::Duplicate(existing.clone()));
        }
        files::write_atomic(&path, bytes)?;
        let mut line = serde_json::to_string(&entry).expect("a manifest entry serialises");
        line.push('\n');
        let manifest_path = self.root.join(MANIFEST);
        state
            .manifest
            .write_all(line.as_bytes())
            .and_then(|()| state.manifest.flush())
            .map_err(|e| Error::io(&manifest_path, e))?;
        state
            .ids
            .insert((entry.photo.source.clone(), entry.photo.id.clone()));
        state.hashes.insert(sha256, file);
        *state
            .per_species
            .entry(entry.photo.species.clone())
            .or_default() += 1;
        Ok(Outcome::Stored(Box::new(entry)))
    }

    /// Rewrites `ATTRIBUTION.md` from the whole manifest.
    pub fn write_attribution(&self) -> Result<PathBuf> {
        let entries = read_manifest(&self.root)?;
        let mut text = String::from(
            "# Attribution\n\nThe photos in this folder were collected by vlinder. Each is used under the licence \
             named here; keep this file with the photos and credit the authors as the licences require.\n",
        );
        let mut by_species: BTreeMap<&str, Vec<&ManifestEntry>> = BTreeMap::new();
        for entry in &entries {
            by_species
                .entry(&entry.photo.species)
                .or_default()
                .push(entry);
        }
        for (species, entries) in by_species {
            let _ = writeln!(text, "\n## {species} ({} photos)\n", entries.len());
            for e in entries {
                let p = &e.photo;
                let title = if p.title.trim().is_empty() {
                    "untitled"
                } else {
                    p.title.trim()
                };
                let _ = writeln!(
                    text,
                    "- `{}`: \"{}\" by {}, {}, {} ({})",
                    e.file.replace('`', "'"),
                    markdown_text(title),
                    markdown_text(&p.author),
                    markdown_text(&p.licence),
                    markdown_text(&p.page_url),
                    markdown_text(&p.source)
                );
            }
        }
        let path = self.root.join(ATTRIBUTION);
        files::write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// `text` as one line of literal Markdown: line breaks become spaces and the characters that
/// Markdown or HTML would act on are escaped, so that a photo's title or author (from a
/// service's answer) cannot add headings, links or markup to `ATTRIBUTION.md`.
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '<' | '>' | '(' | ')' | '#' | '+'
            | '-' | '!' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Every complete line of `root`'s manifest; a line cut short by an interrupted write is
/// left out (its photo, if any, is fetched again).
pub fn read_manifest(root: &Path) -> Result<Vec<ManifestEntry>> {
    let path = root.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// Cuts off a last line without its line break (a run killed while writing it), so that the
/// next line appended starts a line of its own. Its photo, if whole, is downloaded again.
fn drop_cut_line(manifest: &Path) -> Result<()> {
    let bytes = match std::fs::read(manifest) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(manifest, e)),
    };
    if bytes.last().is_none_or(|&b| b == b'\n') {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(manifest)
        .map_err(|e| Error::io(manifest, e))?;
    file.set_len(keep as u64)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(manifest, e))
}

/// An id made safe as part of a file name.
fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::markdown_text;

    #[test]
    fn a_service_answer_cannot_add_markup_to_the_attribution() {
        assert_eq!(
            markdown_text("Jo\n## Pwned [click](http://x) <img src=x>"),
            "Jo \\#\\# Pwned \\[click\\]\\(http://x\\) \\<img src=x\\>"
        );
        assert_eq!(markdown_text("  Anna Smith "), "Anna Smith");
    }
}

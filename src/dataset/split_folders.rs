//! `vlinder split`: divides a folder of species folders into train, validation and optional test
//! folders (or K folds), stratified by species and seeded, with near-duplicate photos always on
//! the same side, so that a copy of a training photo never inflates the validation accuracy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::decode::open_oriented;
use super::folder::{ImageFolder, SkippedPhoto};
use super::near_duplicates;
use crate::{Error, Result, files, progress};

/// Everything that decides a split; saved as `split-config.json` in the output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitFoldersConfig {
    /// A folder with one sub-folder of photos per species.
    pub dir: PathBuf,
    /// The folder to create, with train/, validation/ (and test/) or fold-1/ ... fold-K/ in it.
    pub out: PathBuf,
    /// The share of each species' photos in validation/ (without --folds).
    pub validation: f64,
    /// The share of each species' photos held out in test/ (0: no test folder).
    pub test: f64,
    /// Write K folds instead of one split: fold-i/validation holds fold i, fold-i/train the rest.
    pub folds: Option<usize>,
    pub seed: u64,
    /// How the photos get into the new folders.
    pub files: PhotoFiles,
    /// Photos whose difference hashes differ in at most this many of 64 bits are near-duplicates.
    pub near_duplicate_bits: u32,
}

/// How `split` puts a photo into its part's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum PhotoFiles {
    /// A copy, written atomically.
    Copy,
    /// A hard link to the same file: no extra space, same file system only.
    Link,
}

/// What a split did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitReport {
    /// Photos per part (`train`, `validation`, `test`, or `fold-1/train` ...) and species.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Groups of two or more near-duplicate photos, each kept in one part.
    pub groups_kept_together: usize,
    /// Photos in those groups.
    pub photos_in_groups: usize,
    /// Files that could not be read as photos, with the reason; they are left out.
    pub skipped: Vec<SkippedPhoto>,
}

/// One readable photo: its file, species, path below the species folder and group.
struct Item {
    path: PathBuf,
    species: String,
    relative: PathBuf,
    group: usize,
}

/// Splits `config.dir` into `config.out` and reports what went where.
pub fn split_folders(config: &SplitFoldersConfig) -> Result<SplitReport> {
    validate(config)?;
    if config.out.exists()
        && std::fs::read_dir(&config.out)
            .map_err(|e| Error::io(&config.out, e))?
            .next()
            .is_some()
    {
        return Err(Error::output(
            &config.out,
            "the folder exists and is not empty; choose a new --out",
        ));
    }
    let folder = ImageFolder::scan(&config.dir)?;
    let bar = progress::bar(folder.photos.len(), "hashing photos");
    let hashes: Vec<std::result::Result<u64, String>> = folder
        .photos
        .par_iter()
        .map(|photo| {
            let hash = open_oriented(&photo.path)
                .map(|image| near_duplicates::difference_hash(&image))
                .map_err(|e| e.to_string());
            bar.inc(1);
            hash
        })
        .collect();
    bar.finish_and_clear();
    let mut skipped = folder.skipped.clone();
    let mut readable = Vec::new();
    let mut readable_hashes = Vec::new();
    for (photo, hash) in folder.photos.iter().zip(hashes) {
        match hash {
            Ok(hash) => {
                readable.push(photo);
                readable_hashes.push(hash);
            }
            Err(reason) => skipped.push(SkippedPhoto {
                path: photo.path.clone(),
                reason,
            }),
        }
    }
    let groups = near_duplicates::groups(&readable_hashes, config.near_duplicate_bits);
    let items: Vec<Item> = readable
        .iter()
        .zip(&groups)
        .map(|(photo, &group)| {
            let species = folder.species.name(photo.label).to_string();
            let relative = photo
                .path
                .strip_prefix(config.dir.join(&species))
                .unwrap_or(&photo.path)
                .to_path_buf();
            Item {
                path: photo.path.clone(),
                species,
                relative,
                group,
            }
        })
        .collect();
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for &g in &groups {
        *sizes.entry(g).or_default() += 1;
    }
    let together: Vec<usize> = sizes.values().copied().filter(|&s| s > 1).collect();

    let placements = place(&items, config)?;
    files::create_dir(&config.out)?;
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut listing = String::from("path,species,part,group\n");
    let bar = progress::bar(placements.len(), "writing");
    for (item, part) in &placements {
        let target = config
            .out
            .join(part)
            .join(&item.species)
            .join(&item.relative);
        if let Some(parent) = target.parent() {
            files::create_dir(parent)?;
        }
        match config.files {
            PhotoFiles::Link => std::fs::hard_link(&item.path, &target).map_err(|e| {
                Error::output(
                    &target,
                    format!(
                        "cannot hard-link {} ({e}); use --files copy",
                        item.path.display()
                    ),
                )
            })?,
            PhotoFiles::Copy => files::copy_atomic(&item.path, &target)?,
        }
        *counts
            .entry(part.clone())
            .or_default()
            .entry(item.species.clone())
            .or_default() += 1;
        let _ = writeln!(
            listing,
            "{},{},{},{}",
            files::csv_field(&item.path.display().to_string()),
            files::csv_field(&item.species),
            part,
            item.group
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = SplitReport {
        counts,
        groups_kept_together: together.len(),
        photos_in_groups: together.iter().sum(),
        skipped,
    };
    files::write_atomic(&config.out.join("split.csv"), listing.as_bytes())?;
    files::write_json(&config.out.join("split-config.json"), config)?;
    files::write_json(&config.out.join("split-report.json"), &report)?;
    Ok(report)
}

fn validate(config: &SplitFoldersConfig) -> Result<()> {
    let share = |v: f64| (0.0..1.0).contains(&v);
    if !share(config.test) {
        return Err(Error::invalid(
            "test",
            config.test,
            "a fraction from 0 to 1 exclusive, e.g. 0.1",
        ));
    }
    match config.folds {
        Some(k) if k < 2 => Err(Error::invalid("folds", k, "at least 2")),
        Some(_) => Ok(()),
        None if !(config.validation > 0.0 && config.validation + config.test < 1.0) => {
            Err(Error::invalid(
                "validation",
                config.validation,
                "a fraction above 0 that leaves photos to train on with --test, e.g. 0.2",
            ))
        }
        None => Ok(()),
    }
}

/// The part each item goes to. Per species the near-duplicate groups are shuffled with the
/// seed, then dealt whole: to test and validation until each holds its share, the rest to
/// train; or, with folds, each to the fold with the fewest photos of that species so far.
fn place<'a>(items: &'a [Item], config: &SplitFoldersConfig) -> Result<Vec<(&'a Item, String)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut by_species: BTreeMap<&str, BTreeMap<usize, Vec<&Item>>> = BTreeMap::new();
    for item in items {
        by_species
            .entry(&item.species)
            .or_default()
            .entry(item.group)
            .or_default()
            .push(item);
    }
    let mut placed = Vec::with_capacity(items.len());
    for (species, groups) in by_species {
        let mut groups: Vec<Vec<&Item>> = groups.into_values().collect();
        groups.shuffle(&mut rng);
        let n: usize = groups.iter().map(Vec::len).sum();
        let share = |fraction: f64| (n as f64 * fraction).round() as usize;
        let mut held_out = vec![("test", share(config.test), 0usize)];
        if config.folds.is_none() {
            held_out.push(("validation", share(config.validation), 0));
        }
        let mut rest = Vec::new();
        for group in groups {
            match held_out
                .iter_mut()
                .find(|(_, target, filled)| *filled + group.len() <= *target)
            {
                Some((name, _, filled)) => {
                    *filled += group.len();
                    placed.extend(group.into_iter().map(|item| (item, name.to_string())));
                }
                None => rest.push(group),
            }
        }
        let Some(k) = config.folds else {
            placed.extend(
                rest.into_iter()
                    .flatten()
                    .map(|item| (item, "train".into())),
            );
            continue;
        };
        if rest.len() < k {
            return Err(Error::invalid(
                "folds",
                k,
                format!(
                    "at most the {} groups of photos of {species}; use fewer folds or add photos",
                    rest.len()
                ),
            ));
        }
        let mut folds: Vec<Vec<&Item>> = vec![Vec::new(); k];
        for group in rest {
            let fold = (0..k).min_by_key(|&f| folds[f].len()).unwrap();
            folds[fold].extend(group);
        }
        for (f, members) in folds.iter().enumerate() {
            for other in 0..k {
                let part = if other == f { "validation" } else { "train" };
                let part = format!("fold-{}/{part}", other + 1);
                placed.extend(members.iter().map(|&item| (item, part.clone())));
            }
        }
    }
    Ok(placed)
}

/// The report as a table: photos per species (rows) and part (columns).
pub fn render_report(report: &SplitReport) -> String {
    let parts: Vec<&String> = report.counts.keys().collect();
    let mut species: Vec<&String> = report.counts.values().flat_map(|m| m.keys()).collect();
    species.sort();
    species.dedup();
    let width = species.iter().map(|s| s.len()).max().unwrap_or(7).max(7);
    let mut out = format!("{:width$}", "species");
    for part in &parts {
        let _ = write!(out, "  {part:>14}");
    }
    out.push('\n');
    for name in species {
        let _ = write!(out, "{name:width$}");
        for part in &parts {
            let n = report.counts[*part].get(name).copied().unwrap_or(0);
            let _ = write!(out, "  {n:>14}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "kept {} groups of near-duplicate photos together ({} photos)",
        report.groups_kept_together, report.photos_in_groups
    );
    if !report.skipped.is_empty() {
        let _ = writeln!(out, "skipped {} files:", report.skipped.len());
        for s in &report.skipped {
            let _ = writeln!(out, "  {}: {}", s.path.display(), s.reason);
        }
    }
    out
}

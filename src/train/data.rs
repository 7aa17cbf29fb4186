//! The photos of a training run: found, split, decoded once, and checked before any training.

use std::path::Path;

use super::TrainConfig;
use crate::context::{Observations, Prior};
use crate::dataset::{ImageFolder, Photo, PhotoSet, SkippedPhoto, Species, stratified_split};
use crate::names::{Claim, Names, Resolver};
use crate::{Error, Result};

/// Decoded training and validation photos with the species they are labelled with.
#[derive(Debug)]
pub struct TrainingData {
    pub species: Species,
    pub train: PhotoSet,
    pub validation: PhotoSet,
    /// Photos of other species or of no butterfly (`--others`), all labelled 0.
    pub others: Option<PhotoSet>,
    /// Photos of species the model is not trained on (`--unknown`), all labelled 0: only
    /// measured on.
    pub unknown: Option<PhotoSet>,
    /// Files that were found but could not be used.
    pub skipped: Vec<SkippedPhoto>,
    /// The photos' observation dates and places (`--observations`).
    pub observations: Option<Observations>,
    /// A prior given ready-made (`--prior`), in the species' order.
    pub prior: Option<Prior>,
}

impl TrainingData {
    /// Finds, splits and decodes the photos `config` names.
    pub fn load(config: &TrainConfig) -> Result<Self> {
        let (species, train, validation, mut skipped) =
            match (&config.data, &config.train, &config.validation) {
                (Some(data), None, None) => {
                    let folder = ImageFolder::scan(data)?;
                    require_two_species(&folder)?;
                    let split = stratified_split(
                        &folder.photos,
                        folder.species.len(),
                        config.validation_split,
                        config.seed,
                    )?;
                    (
                        folder.species,
                        split.train,
                        split.validation,
                        folder.skipped,
                    )
                }
                (None, Some(train_dir), Some(validation_dir)) => {
                    let train = ImageFolder::scan(train_dir)?;
                    require_two_species(&train)?;
                    let validation = ImageFolder::scan(validation_dir)?;
                    let photos = relabel(&validation, &train.species)?;
                    let mut skipped = train.skipped;
                    skipped.extend(validation.skipped);
                    (train.species, train.photos, photos, skipped)
                }
                _ => {
                    return Err(Error::invalid(
                        "data",
                        "(none)",
                        "give --data DIR, or --train DIR and --validation DIR",
                    ));
                }
            };
        let (others, unknown) = load_unlabelled(config, &mut skipped)?;
        let mut train = train;
        if let Some(url) = &config.reviewed {
            let reviewed = load_reviewed(url, &species, &train, &validation, &mut skipped)?;
            train.extend(reviewed);
        }
        let (train, bad_train) = PhotoSet::decode(
            &train,
            config.model.image_size,
            config.model.resize,
            "train",
        );
        let (validation, bad_validation) = PhotoSet::decode(
            &validation,
            config.model.image_size,
            config.model.resize,
            "validation",
        );
        skipped.extend(bad_train);
        skipped.extend(bad_validation);
        for (class, count) in train.counts(species.len()).into_iter().enumerate() {
            if count == 0 {
                let root = config
                    .train
                    .as_deref()
                    .or(config.data.as_deref())
                    .unwrap_or(Path::new("."));
                return Err(Error::Layout {
                    path: root.join(species.name(class)),
                    reason: "this species has no readable training photo; add photos or remove the folder".into(),
                });
            }
        }
        if validation.is_empty() {
            let path = config
                .validation
                .as_deref()
                .or(config.data.as_deref())
                .unwrap_or(Path::new("."));
            return Err(Error::Layout {
                path: path.to_path_buf(),
                reason: "the validation set has no readable photo; add photos or raise --validation-split".into(),
            });
        }
        let (observations, prior) = load_context(config, &species)?;
        Ok(TrainingData {
            species,
            train,
            validation,
            others,
            unknown,
            skipped,
            observations,
            prior,
        })
    }
}

/// The photos of records validators confirmed or corrected in the queue at `url`, labelled with
/// their species: those of other species, photos given by URL and photos already among the
/// training or validation photos are skipped with the reason.
fn load_reviewed(
    url: &str,
    species: &Species,
    train: &[Photo],
    validation: &[Photo],
    skipped: &mut Vec<SkippedPhoto>,
) -> Result<Vec<Photo>> {
    let runtime = crate::queue::runtime()?;
    let reviewed =
        runtime.block_on(async { crate::queue::Database::open(url).await?.reviewed().await })?;
    let known: std::collections::HashSet<std::path::PathBuf> = train
        .iter()
        .chain(validation)
        .filter_map(|p| p.path.canonicalize().ok())
        .collect();
    let mut photos = Vec::new();
    // Records stored before names were resolved keep the name as the volunteer wrote it.
    let resolver = Resolver::new(species, &Names::built_in());
    for (photo, name) in reviewed {
        let path = std::path::PathBuf::from(&photo);
        let skip = |reason: String| SkippedPhoto {
            path: path.clone(),
            reason,
        };
        let label = match resolver.resolve(&name).claim() {
            Claim::Species { index } => Some(index),
            _ => None,
        };
        match label {
            _ if photo.starts_with("http://") || photo.starts_with("https://") => skipped.push(
                skip("a reviewed record's photo given by URL; only local photos are added".into()),
            ),
            None => skipped.push(skip(format!(
                "reviewed as {name}, which is not one of the training species"
            ))),
            Some(_) if path.canonicalize().is_ok_and(|p| known.contains(&p)) => skipped.push(skip(
                "a reviewed record's photo that is already a training or validation photo".into(),
            )),
            Some(label) => photos.push(Photo { path, label }),
        }
    }
    eprintln!(
        "{} photos of reviewed records added to the training photos from {}",
        photos.len(),
        crate::queue::database::without_password(url)
    );
    Ok(photos)
}

/// Reads `--observations` and `--prior`, so that a bad file stops the run before training;
/// observations that cannot be used are counted and the first few shown.
pub(crate) fn load_context(
    config: &TrainConfig,
    species: &Species,
) -> Result<(Option<Observations>, Option<Prior>)> {
    let observations = match &config.observations {
        Some(path) => {
            let observations = Observations::read(path)?;
            if !observations.warnings.is_empty() {
                eprintln!(
                    "warning: {} of {}'s rows have a date or place that cannot be used, e.g.:",
                    observations.warnings.len(),
                    path.display()
                );
                for w in observations.warnings.iter().take(3) {
                    eprintln!("  {w}");
                }
            }
            Some(observations)
        }
        None => None,
    };
    let prior = match &config.prior {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let bad = |reason: String| Error::Layout {
                path: path.clone(),
                reason: format!("not a usable prior: {reason}"),
            };
            let prior: Prior = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            Some(prior.for_species(species).map_err(bad)?)
        }
        None => None,
    };
    Ok((observations, prior))
}

/// The photos of `--others` and of `--unknown`, any layout, decoded as the model sees them;
/// a folder that is missing or has no readable photo stops the run before anything is
/// trained. Unreadable files of `--others` are listed among the skipped ones; those of
/// `--unknown`, which trains nothing, are left out.
pub(crate) fn load_unlabelled(
    config: &TrainConfig,
    skipped: &mut Vec<SkippedPhoto>,
) -> Result<(Option<PhotoSet>, Option<PhotoSet>)> {
    let load = |dir: &Option<std::path::PathBuf>, flag: &str, what: &str| -> Result<_> {
        let Some(dir) = dir else {
            return Ok(None);
        };
        if !dir.is_dir() {
            return Err(Error::Layout {
                path: dir.clone(),
                reason: format!("--{flag} must be a folder of photos of {what} (any layout)"),
            });
        }
        let (set, unusable, found) =
            PhotoSet::decode_below(dir, config.model.image_size, config.model.resize, flag)?;
        if set.is_empty() {
            return Err(Error::Layout {
                path: dir.clone(),
                reason: format!(
                    "no readable photo for --{flag} ({found} photo files found); add photos of {what}"
                ),
            });
        }
        Ok(Some((set, unusable)))
    };
    let others = load(&config.others, "others", "other species or of no butterfly")?;
    let unknown = load(
        &config.unknown,
        "unknown",
        "species the model is not trained on",
    )?;
    Ok((
        others.map(|(set, unusable)| {
            skipped.extend(unusable);
            set
        }),
        unknown.map(|(set, _)| set),
    ))
}

/// A classifier needs at least two species folders.
pub(crate) fn require_two_species(folder: &ImageFolder) -> Result<()> {
    if folder.species.len() < 2 {
        return Err(Error::Layout {
            path: folder.root.clone(),
            reason: format!(
                "found {} species folder(s) ({}); a classifier needs at least two",
                folder.species.len(),
                folder.species.names().join(", ")
            ),
        });
    }
    Ok(())
}

/// The photos of `folder` labelled with their index in `species`; a species folder unknown to
/// `species` is an error.
pub fn relabel(folder: &ImageFolder, species: &Species) -> Result<Vec<Photo>> {
    let mut map = Vec::with_capacity(folder.species.len());
    for name in folder.species.names() {
        map.push(
            species
                .index_of(name)
                .ok_or_else(|| Error::UnknownSpecies {
                    species: name.clone(),
                    path: folder.root.join(name),
                    known: species.names().join(", "),
                })?,
        );
    }
    Ok(folder
        .photos
        .iter()
        .map(|p| Photo {
            path: p.path.clone(),
            label: map[p.label],
        })
        .collect())
}

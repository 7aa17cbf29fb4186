//! The photos of a training run: found, split, decoded once, and checked before any training.

use std::path::Path;

use super::TrainConfig;
use crate::dataset::{ImageFolder, Photo, PhotoSet, SkippedPhoto, Species, stratified_split};
use crate::{Error, Result};

/// Decoded training and validation photos with the species they are labelled with.
#[derive(Debug)]
pub struct TrainingData {
    pub species: Species,
    pub train: PhotoSet,
    pub validation: PhotoSet,
    /// Photos of other species or of no butterfly (`--others`), all labelled 0.
    pub others: Option<PhotoSet>,
    /// Files that were found but could not be used.
    pub skipped: Vec<SkippedPhoto>,
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
        let others = load_others(config, &mut skipped)?;
        Ok(TrainingData {
            species,
            train,
            validation,
            others,
            skipped,
        })
    }
}

/// Decodes the photos of `--others`, adding the unreadable ones to `skipped`; a folder without
/// a readable photo is an error, found before any training.
pub(crate) fn load_others(
    config: &TrainConfig,
    skipped: &mut Vec<SkippedPhoto>,
) -> Result<Option<PhotoSet>> {
    let Some(dir) = &config.others else {
        return Ok(None);
    };
    if !dir.is_dir() {
        return Err(Error::Layout {
            path: dir.clone(),
            reason: "--others must be a folder of photos of other species or of no butterfly (any layout)".into(),
        });
    }
    let (set, unusable, found) =
        PhotoSet::decode_below(dir, config.model.image_size, config.model.resize, "others")?;
    skipped.extend(unusable);
    if set.is_empty() {
        return Err(Error::Layout {
            path: dir.clone(),
            reason: format!(
                "no readable photo for --others ({found} photo files found); add photos of other species or of no butterfly"
            ),
        });
    }
    Ok(Some(set))
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

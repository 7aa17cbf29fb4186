//! Species' common names in Dutch and English, from a CSV with the columns `scientific`, `nl`
//! and `en`. vlinder ships one for the Dutch butterflies; species are matched however their
//! folders spell them (`maniola_jurtina`, `Maniola jurtina`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::{Error, Result};

/// The names file built into vlinder: the butterflies of the Netherlands.
pub const BUILT_IN: &str = include_str!("../../assets/names/butterflies-nl.csv");

/// A species' common names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommonNames {
    pub scientific: String,
    pub nl: String,
    pub en: String,
}

/// Common names by species.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    by_key: BTreeMap<String, CommonNames>,
}

/// `Maniola jurtina`, `maniola_jurtina` and `MANIOLA-JURTINA` alike.
fn key(species: &str) -> String {
    species
        .trim()
        .to_lowercase()
        .replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Names {
    /// The built-in names.
    pub fn built_in() -> Names {
        Names::parse(BUILT_IN, Path::new("(built in)")).expect("the built-in names file parses")
    }

    /// Reads a names file.
    pub fn read(path: &Path) -> Result<Names> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Names::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Names> {
        let layout = |reason: String| Error::Layout {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| layout(format!("cannot read the header row: {e}")))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| {
                    layout(format!(
                        "no column {name:?}; a names file has the columns scientific, nl, en"
                    ))
                })
        };
        let (s, nl, en) = (column("scientific")?, column("nl")?, column("en")?);
        let mut by_key = BTreeMap::new();
        for row in reader.records() {
            let row = row.map_err(|e| layout(format!("malformed row ({e})")))?;
            let get = |i: usize| row.get(i).unwrap_or_default().trim().to_string();
            if get(s).is_empty() {
                continue;
            }
            by_key.insert(
                key(&get(s)),
                CommonNames {
                    scientific: get(s),
                    nl: get(nl),
                    en: get(en),
                },
            );
        }
        Ok(Names { by_key })
    }

    /// The names of `species`, if the file has them.
    pub fn of(&self, species: &str) -> Option<&CommonNames> {
        self.by_key.get(&key(species))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_look_alikes_have_their_dutch_and_english_names_however_spelled() {
        let names = Names::built_in();
        for (species, nl, en) in [
            ("maniola_jurtina", "Bruin zandoogje", "Meadow Brown"),
            ("Pyronia tithonus", "Oranje zandoogje", "Gatekeeper"),
            ("COENONYMPHA-PAMPHILUS", "Hooibeestje", "Small Heath"),
            ("aphantopus_hyperantus", "Koevinkje", "Ringlet"),
        ] {
            let found = names.of(species).unwrap();
            assert_eq!((found.nl.as_str(), found.en.as_str()), (nl, en));
        }
        assert_eq!(names.of("heliconius_erato"), None);
        let bad = Names::parse("latin,nl,en\nx,y,z\n", Path::new("n.csv")).unwrap_err();
        assert!(
            bad.to_string().contains("no column \"scientific\""),
            "{bad}"
        );
    }
}

//! Species names as people write them. A names file (CSV with the columns `scientific`, `nl`,
//! `en` and optionally `synonyms`, `|`-separated) gives each species its Dutch and English
//! common names and the scientific names it has been known by; vlinder ships one for the Dutch
//! butterflies. A [`Resolver`] turns the name a volunteer wrote into one of a model's species:
//! the scientific name in any case, spaced, underscored or hyphenated, with an author and year
//! or a subspecies after it, a common name (case and diacritics ignored) or a synonym; a genus
//! alone is a claim at genus level.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::dataset::Species;
use crate::{Error, Result};

/// The names file built into vlinder: the butterflies of the Netherlands.
pub const BUILT_IN: &str = include_str!("../assets/names/butterflies-nl.csv");

/// A species' common names and synonyms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommonNames {
    pub scientific: String,
    pub nl: String,
    pub en: String,
    /// Other scientific names of the species (older combinations, misspellings in use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synonyms: Vec<String>,
}

/// Common names by species.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    by_key: BTreeMap<String, CommonNames>,
}

/// A name as it is compared: diacritics dropped (`é` is `e`), lower case, `_` and `-` as
/// spaces, one space between words. `Maniola jurtina`, `maniola_jurtina` and
/// `MANIOLA-JURTINA` are alike, and so are `Citroenvlinder` and `citroënvlinder`.
pub fn key(name: &str) -> String {
    let plain: String = name
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect();
    plain
        .to_lowercase()
        .replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A folder's species name as a scientific name: `maniola_jurtina` becomes `Maniola jurtina`.
pub fn scientific(folder: &str) -> String {
    let words = key(folder);
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
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

    pub(crate) fn parse(text: &str, path: &Path) -> Result<Names> {
        let layout = |reason: String| Error::Layout {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| layout(format!("cannot read the header row: {e}")))?
            .clone();
        let column = |name: &str| headers.iter().position(|h| h.trim() == name);
        let required = |name: &str| {
            column(name).ok_or_else(|| {
                layout(format!(
                    "no column {name:?}; a names file has the columns scientific, nl, en (and synonyms)"
                ))
            })
        };
        let (s, nl, en) = (required("scientific")?, required("nl")?, required("en")?);
        let synonyms = column("synonyms");
        let mut by_key = BTreeMap::new();
        for row in reader.records() {
            let row = row.map_err(|e| layout(format!("malformed row ({e})")))?;
            let get = |i: usize| row.get(i).unwrap_or_default().trim().to_string();
            if get(s).is_empty() {
                continue;
            }
            let synonyms = synonyms.map_or_else(Vec::new, |i| {
                get(i)
                    .split('|')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            by_key.insert(
                key(&get(s)),
                CommonNames {
                    scientific: get(s),
                    nl: get(nl),
                    en: get(en),
                    synonyms,
                },
            );
        }
        Ok(Names { by_key })
    }

    /// The names of `species`, if the file has them.
    pub fn of(&self, species: &str) -> Option<&CommonNames> {
        self.by_key.get(&key(species))
    }

    /// Every species in the file.
    pub fn species(&self) -> impl Iterator<Item = &CommonNames> {
        self.by_key.values()
    }

    /// The file with `entry` added, or merged into the species' entry when it has one: names
    /// it lacks are filled, synonyms joined.
    pub fn merge(&mut self, entry: CommonNames) {
        match self.by_key.get_mut(&key(&entry.scientific)) {
            Some(known) => {
                if known.nl.is_empty() {
                    known.nl = entry.nl;
                }
                if known.en.is_empty() {
                    known.en = entry.en;
                }
                for synonym in entry.synonyms {
                    if !known.synonyms.iter().any(|s| key(s) == key(&synonym)) {
                        known.synonyms.push(synonym);
                    }
                }
            }
            None => {
                self.by_key.insert(key(&entry.scientific), entry);
            }
        }
    }

    /// The file as CSV, one species a row in the order of their scientific names.
    pub fn to_csv(&self) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        let rows = std::iter::once(["scientific", "nl", "en", "synonyms"].map(String::from)).chain(
            self.by_key.values().map(|n| {
                [
                    n.scientific.clone(),
                    n.nl.clone(),
                    n.en.clone(),
                    n.synonyms.join("|"),
                ]
            }),
        );
        for row in rows {
            out.write_record(&row).expect("writing to memory");
        }
        String::from_utf8(out.into_inner().expect("writing to memory"))
            .expect("UTF-8 in, UTF-8 out")
    }
}

/// What a claimed name is, among a model's species.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum Claim {
    /// One of the model's species, by its index.
    Species { index: usize },
    /// A genus alone ("Maniola sp."): the claim is right if the photo shows any of the model's
    /// species in it.
    Genus { genus: String, members: Vec<usize> },
    /// None of the model's species.
    Unknown,
}

impl Claim {
    /// The calibrated probability that the claim is right: the species', or the sum of its
    /// genus' species; `None` for a name the model does not know.
    pub fn probability(&self, probabilities: &[f32]) -> Option<f32> {
        match self {
            Claim::Species { index } => Some(probabilities[*index]),
            Claim::Genus { members, .. } => Some(members.iter().map(|&i| probabilities[i]).sum()),
            Claim::Unknown => None,
        }
    }

    /// Whether species `index` makes the claim right.
    pub fn includes(&self, index: usize) -> bool {
        match self {
            Claim::Species { index: i } => *i == index,
            Claim::Genus { members, .. } => members.contains(&index),
            Claim::Unknown => false,
        }
    }
}

/// How a written name was understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "resolved", rename_all = "snake_case")]
pub enum Resolution {
    /// A species or genus of the model's.
    Known { claim: Claim, how: Match },
    /// A name that fits two or more of the model's species (a common name shared by them):
    /// refused rather than guessed.
    Ambiguous { species: Vec<usize> },
    /// No species of the model's; the closest name it knows, for a person to compare.
    Unresolved { closest: Option<String> },
}

impl Resolution {
    /// The claim, `Claim::Unknown` for an ambiguous or unresolved name.
    pub fn claim(&self) -> Claim {
        match self {
            Resolution::Known { claim, .. } => claim.clone(),
            _ => Claim::Unknown,
        }
    }
}

/// Which form of the name matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The scientific name (or the model's folder name), in any case or spacing.
    Scientific,
    /// The species' binomial followed by an author, a year or a subspecies.
    Binomial,
    /// The Dutch common name.
    Dutch,
    /// The English common name.
    English,
    /// A synonym from the names file.
    Synonym,
    /// A genus alone.
    Genus,
}

/// What a written name was understood as, for people and for the record's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Understood {
    /// The species' scientific name, or the genus for a claim at genus level.
    pub name: String,
    /// For a species: the model's name for it (its folder's), as rankings name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub species: Option<String>,
    /// Whether the claim is a species' or only its genus'.
    pub level: Level,
    /// Which form of the name matched.
    pub how: Match,
}

/// How much a claim says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Species,
    Genus,
}

/// A name the records give that none of the model's species has, how often, and the closest
/// name the model knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unresolved {
    pub name: String,
    pub records: usize,
    pub closest: Option<String>,
}

/// Written names turned into a model's species.
#[derive(Debug, Clone)]
pub struct Resolver {
    species: Species,
    /// Each species' scientific name, in species order.
    scientific: Vec<String>,
    /// Every known form of a name, by [`key`], with the species it names and how.
    forms: BTreeMap<String, (Vec<usize>, Match)>,
    /// The model's genera: (key, written as in the scientific name, members).
    genera: BTreeMap<String, (String, Vec<usize>)>,
}

/// Words that mark a name as a genus alone ("Maniola sp.").
const GENUS_MARKERS: [&str; 6] = ["sp", "sp.", "spp", "spp.", "spec", "spec."];

impl Resolver {
    /// The forms of `species`' names, from their folder names and `names`.
    pub fn new(species: &Species, names: &Names) -> Resolver {
        let mut forms: BTreeMap<String, (Vec<usize>, Match)> = BTreeMap::new();
        let mut add = |written: &str, index: usize, how: Match| {
            let k = key(written);
            if k.is_empty() {
                return;
            }
            let (found, first) = forms.entry(k).or_insert((Vec::new(), how));
            if !found.contains(&index) {
                found.push(index);
            }
            // A scientific name outranks a common name or synonym that happens to match it.
            if how == Match::Scientific {
                *first = how;
            }
        };
        let mut genera: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
        let mut scientific_names = Vec::with_capacity(species.len());
        for (index, folder) in species.names().iter().enumerate() {
            add(folder, index, Match::Scientific);
            let entry = names.of(folder);
            let name = entry.map_or_else(|| scientific(folder), |n| n.scientific.clone());
            add(&name, index, Match::Scientific);
            scientific_names.push(name.clone());
            if let Some(n) = entry {
                add(&n.nl, index, Match::Dutch);
                add(&n.en, index, Match::English);
                for synonym in &n.synonyms {
                    add(synonym, index, Match::Synonym);
                }
            }
            if let Some(genus) = name.split_whitespace().next() {
                let members = &mut genera
                    .entry(key(genus))
                    .or_insert((genus.into(), Vec::new()))
                    .1;
                members.push(index);
            }
        }
        Resolver {
            species: species.clone(),
            scientific: scientific_names,
            forms,
            genera,
        }
    }

    /// What `written` names among the model's species.
    pub fn resolve(&self, written: &str) -> Resolution {
        let whole = key(written);
        if let Some(found) = self.lookup(&whole) {
            return found;
        }
        // An author and year, a subspecies or a variety after the binomial: the species.
        let words = binomial_words(written);
        if words.len() >= 2 {
            let binomial = words[..2].join(" ");
            if let Some(Resolution::Known { claim, .. }) = self.lookup(&binomial) {
                return Resolution::Known {
                    claim,
                    how: Match::Binomial,
                };
            }
        }
        let genus_alone = match words.as_slice() {
            [genus] => Some(genus),
            [genus, marker] if GENUS_MARKERS.contains(&marker.as_str()) => Some(genus),
            _ => None,
        };
        // A genus with one species of the model's is still a claim at genus level: the record
        // says less than a species, and the genus has species the model never saw.
        if let Some((genus, members)) = genus_alone.and_then(|g| self.genera.get(g)) {
            return Resolution::Known {
                claim: Claim::Genus {
                    genus: genus.clone(),
                    members: members.clone(),
                },
                how: Match::Genus,
            };
        }
        Resolution::Unresolved {
            closest: self.closest(&whole),
        }
    }

    fn lookup(&self, key: &str) -> Option<Resolution> {
        let (species, how) = self.forms.get(key)?;
        Some(match species.as_slice() {
            [index] => Resolution::Known {
                claim: Claim::Species { index: *index },
                how: *how,
            },
            several => Resolution::Ambiguous {
                species: several.to_vec(),
            },
        })
    }

    /// The known form closest to `key` (by edit distance, relative to its length), if any
    /// is reasonably close.
    fn closest(&self, key: &str) -> Option<String> {
        self.forms
            .keys()
            .map(|form| (strsim::normalized_levenshtein(key, form), form))
            .filter(|(similarity, _)| *similarity >= 0.5)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, form)| form.clone())
    }

    /// The scientific name of the model's species `index`: the names file's spelling, else
    /// its folder's.
    pub fn scientific_name(&self, index: usize) -> String {
        self.scientific[index].clone()
    }

    /// What a resolution was understood as, when it names a species or genus of the model's.
    pub fn understood(&self, resolution: &Resolution) -> Option<Understood> {
        let Resolution::Known { claim, how } = resolution else {
            return None;
        };
        let (name, species, level) = match claim {
            Claim::Species { index } => (
                self.scientific_name(*index),
                Some(self.species.name(*index).to_string()),
                Level::Species,
            ),
            Claim::Genus { genus, .. } => (genus.clone(), None, Level::Genus),
            Claim::Unknown => return None,
        };
        Some(Understood {
            name,
            species,
            level,
            how: *how,
        })
    }

    /// Why a name cannot be judged, for a record's error: the species it fits, by name.
    pub fn ambiguity(&self, written: &str, species: &[usize]) -> String {
        let names: Vec<String> = species.iter().map(|&i| self.scientific_name(i)).collect();
        format!(
            "the name {written:?} fits {}; write the scientific name",
            names.join(" and ")
        )
    }

    /// The names of `written` that resolve to none of the model's species, with how many
    /// records give each (names that fit two species are counted too: they are not checked).
    pub fn unresolved<'a>(&self, written: impl IntoIterator<Item = &'a str>) -> Vec<Unresolved> {
        let mut counts: BTreeMap<String, (usize, Option<String>)> = BTreeMap::new();
        for name in written {
            match self.resolve(name) {
                Resolution::Known { .. } => {}
                Resolution::Unresolved { closest } => {
                    counts
                        .entry(name.trim().to_string())
                        .or_insert((0, closest))
                        .0 += 1;
                }
                Resolution::Ambiguous { .. } => {
                    counts.entry(name.trim().to_string()).or_insert((0, None)).0 += 1;
                }
            }
        }
        let mut out: Vec<Unresolved> = counts
            .into_iter()
            .map(|(name, (records, closest))| Unresolved {
                name,
                records,
                closest,
            })
            .collect();
        out.sort_by(|a, b| b.records.cmp(&a.records).then(a.name.cmp(&b.name)));
        out
    }

    pub fn species(&self) -> &Species {
        &self.species
    }
}

/// The words of a written name with bracketed parts ("(Linnaeus, 1758)") and everything from
/// the first word with a digit or a comma on (an author and year) left out, as [`key`]s.
fn binomial_words(written: &str) -> Vec<String> {
    let mut depth = 0usize;
    let unbracketed: String = written
        .chars()
        .filter(|&c| match c {
            '(' | '[' => {
                depth += 1;
                false
            }
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect();
    let mut words = Vec::new();
    for word in key(&unbracketed).split(' ') {
        if word.is_empty() {
            continue;
        }
        if word.chars().any(|c| c.is_ascii_digit()) {
            break;
        }
        let ends = word.ends_with(',');
        words.push(word.trim_end_matches(',').to_string());
        if ends {
            break;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        let species = Species::new(vec![
            "coenonympha_pamphilus".into(),
            "gonepteryx_rhamni".into(),
            "maniola_jurtina".into(),
            "pyronia_tithonus".into(),
        ]);
        Resolver::new(&species, &Names::built_in())
    }

    fn species_of(r: &Resolver, written: &str) -> Option<(String, Match)> {
        match r.resolve(written) {
            Resolution::Known {
                claim: Claim::Species { index },
                how,
            } => Some((r.species().name(index).to_string(), how)),
            _ => None,
        }
    }

    #[test]
    fn every_form_of_a_name_resolves_to_the_species() {
        let r = resolver();
        for (written, how) in [
            ("gonepteryx_rhamni", Match::Scientific),
            ("Gonepteryx rhamni", Match::Scientific),
            ("GONEPTERYX_RHAMNI", Match::Scientific),
            ("gonepteryx-rhamni", Match::Scientific),
            ("  Gonepteryx   rhamni ", Match::Scientific),
            ("Gonepteryx rhamni (Linnaeus, 1758)", Match::Binomial),
            ("Gonepteryx rhamni Linnaeus, 1758", Match::Binomial),
            ("Gonepteryx rhamni rhamni", Match::Binomial),
            ("Citroenvlinder", Match::Dutch),
            ("citroënvlinder", Match::Dutch),
            ("Brimstone", Match::English),
            ("BRIMSTONE", Match::English),
        ] {
            assert_eq!(
                species_of(&r, written),
                Some(("gonepteryx_rhamni".into(), how)),
                "{written}"
            );
        }
        assert_eq!(
            species_of(&r, "Maniola jurtina insularis"),
            Some(("maniola_jurtina".into(), Match::Binomial))
        );
        assert_eq!(
            species_of(&r, "Bruin zandoogje"),
            Some(("maniola_jurtina".into(), Match::Dutch))
        );
    }

    #[test]
    fn a_genus_alone_is_a_claim_at_genus_level_and_strangers_get_the_closest_name() {
        let r = resolver();
        for written in ["Maniola sp.", "Maniola", "maniola spp."] {
            assert_eq!(
                r.resolve(written),
                Resolution::Known {
                    claim: Claim::Genus {
                        genus: "Maniola".into(),
                        members: vec![2]
                    },
                    how: Match::Genus
                },
                "{written}"
            );
        }
        assert_eq!(
            r.resolve("Gonepteryx rhamnii"),
            Resolution::Unresolved {
                closest: Some("gonepteryx rhamni".into())
            }
        );
        assert_eq!(
            r.resolve("Aglais io"),
            Resolution::Unresolved { closest: None }
        );
        assert_eq!(
            Claim::Genus {
                genus: "Maniola".into(),
                members: vec![0, 2]
            }
            .probability(&[0.25, 0.25, 0.5, 0.0]),
            Some(0.75)
        );
    }

    #[test]
    fn a_name_that_fits_two_species_is_ambiguous() {
        let names = Names::parse(
            "scientific,nl,en,synonyms\nManiola jurtina,Zandoogje,Meadow Brown,\nPyronia tithonus,Zandoogje,Gatekeeper,Epinephele tithonus|Pyronia tithonus britanniae\n",
            Path::new("n.csv"),
        )
        .unwrap();
        let species = Species::new(vec!["maniola_jurtina".into(), "pyronia_tithonus".into()]);
        let r = Resolver::new(&species, &names);
        assert_eq!(
            r.resolve("zandoogje"),
            Resolution::Ambiguous {
                species: vec![0, 1]
            }
        );
        assert_eq!(
            species_of(&r, "Epinephele tithonus"),
            Some(("pyronia_tithonus".into(), Match::Synonym))
        );
    }

    #[test]
    fn names_files_read_merge_and_write_back() {
        let mut names = Names::built_in();
        let gatekeeper = names.of("Pyronia tithonus").unwrap().clone();
        assert_eq!(
            (gatekeeper.nl.as_str(), gatekeeper.en.as_str()),
            ("Oranje zandoogje", "Gatekeeper")
        );
        names.merge(CommonNames {
            scientific: "Pyronia tithonus".into(),
            nl: "ignored: the file has one".into(),
            en: String::new(),
            synonyms: vec!["Epinephele tithonus".into()],
        });
        let back = Names::parse(&names.to_csv(), Path::new("back.csv")).unwrap();
        assert_eq!(back, names);
        let merged = back.of("pyronia_tithonus").unwrap();
        assert_eq!(merged.nl, "Oranje zandoogje");
        assert!(merged.synonyms.contains(&"Epinephele tithonus".to_string()));
        let bad = Names::parse("latin,nl,en\nx,y,z\n", Path::new("n.csv")).unwrap_err();
        assert!(
            bad.to_string().contains("no column \"scientific\""),
            "{bad}"
        );
    }
}

//! GBIF: `vlinder fetch gbif` fetches expert-verified observations, `vlinder prior gbif` a
//! country's counts per month and latitude, `vlinder names gbif` species' synonyms and common
//! names from its checklist. For `fetch`: The scientific name is resolved to a
//! taxon key by GBIF's species match, then occurrences with still images are paged 300 at a
//! time within the API's 100,000-record offset limit, filtered by licence (the media's own
//! licence when it has one, as it may be stricter than the record's).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{Fault, Service};
use super::{
    ApiOptions, Candidate, Collection, FetchOptions, FetchReport, SpeciesTally, answer_json,
    coordinates, take, text,
};
use crate::context::Prior;
use crate::context::prior::{BAND_DEGREES, Band};
use crate::{Error, Result};

pub const DEFAULT_URL: &str = "https://api.gbif.org/v1";
/// GBIF's largest page.
const PAGE: u64 = 300;
/// GBIF refuses offset + limit above this; beyond it only the download API helps.
const OFFSET_LIMIT: u64 = 100_000;
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The configuration of `vlinder fetch gbif`; saved beside the photos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbifConfig {
    /// Species by scientific name, e.g. "Maniola jurtina" (into folder maniola_jurtina), or
    /// FOLDER="Scientific name".
    pub species: Vec<String>,
    /// Only observations from this country (ISO 3166 code, e.g. GB).
    pub country: Option<String>,
    /// Only this dataset, e.g. 50c9509d-22c7-4a22-a47d-8c48425ef4a7 (iNaturalist
    /// research-grade) or 8a863029-f435-446a-821e-275f4f641165 (Observation.org).
    pub dataset: Option<String>,
    /// Licences to accept, as GBIF names them.
    pub licenses: Vec<String>,
    /// The API's base URL.
    pub base_url: String,
    pub options: FetchOptions,
}

/// `Maniola jurtina` → (`maniola_jurtina`, `Maniola jurtina`); `mj=Maniola jurtina` → (`mj`, ...).
pub fn parse_species(spec: &str) -> Result<(String, String)> {
    let (folder, name) = match spec.split_once('=') {
        Some((folder, name)) => (folder.trim().to_string(), name.trim().trim_matches('"')),
        None => (
            spec.split_whitespace()
                .collect::<Vec<_>>()
                .join("_")
                .to_lowercase(),
            spec.trim(),
        ),
    };
    super::check_folder_name(&folder)?;
    if name.is_empty() {
        return Err(Error::invalid(
            "species",
            format!("{spec:?}"),
            "a scientific name",
        ));
    }
    Ok((folder, name.to_string()))
}

/// A licence as GBIF's code: `CC_BY_NC_4_0` stays; a Creative Commons URL becomes its code.
pub fn licence_code(licence: &str) -> String {
    let l = licence.trim().to_lowercase();
    if l.contains("publicdomain/zero") || l == "cc0_1_0" || l == "cc0" {
        return "CC0_1_0".into();
    }
    if let Some(rest) = l.split("/licenses/").nth(1) {
        let mut parts = rest.split('/');
        if let (Some(kind), Some(version)) = (parts.next(), parts.next()) {
            return format!(
                "CC_{}_{}",
                kind.to_uppercase().replace('-', "_"),
                version.replace('.', "_")
            );
        }
    }
    licence.trim().to_string()
}

fn json(body: &[u8]) -> std::result::Result<Value, Fault> {
    answer_json(body, "GBIF")
}

/// The taxon key of a scientific name, or a clear error if GBIF does not know it.
fn taxon_key(base_url: &str, service: &Service, name: &str) -> Result<u64> {
    let url = format!("{}/species/match", base_url.trim_end_matches('/'));
    let answer = service
        .retrying(|| {
            json(&service.get(&url, &[("name", name.to_string())], MAX_ANSWER_BYTES, true)?)
        })
        .map_err(|reason| Error::Source {
            service: "gbif",
            reason: format!("species match for {name:?}: {reason}"),
        })?;
    let match_type = text(&answer, "matchType");
    match answer.get("usageKey").and_then(Value::as_u64) {
        Some(key) if match_type != "NONE" && match_type != "HIGHERRANK" => Ok(key),
        _ => Err(Error::Source {
            service: "gbif",
            reason: format!(
                "GBIF does not know the species {name:?} (match: {}); check the scientific name's spelling",
                if match_type.is_empty() {
                    "none"
                } else {
                    &match_type
                }
            ),
        }),
    }
}

/// A species as given, with GBIF's key for it.
#[derive(Debug, Clone)]
struct Taxon {
    folder: String,
    name: String,
    key: u64,
}

/// Each species given with its taxon key. All names are resolved first: a misspelt one stops
/// the run before anything else is asked.
fn resolve(given: &[String], base_url: &str, service: &Service) -> Result<Vec<Taxon>> {
    given
        .iter()
        .map(|s| {
            let (folder, name) = parse_species(s)?;
            let key = taxon_key(base_url, service, &name)?;
            Ok(Taxon { folder, name, key })
        })
        .collect()
}

/// Fetches every configured species into the collection.
pub fn fetch(config: &GbifConfig) -> Result<FetchReport> {
    config.options.validate()?;
    let service = config.options.service();
    let taxa = resolve(&config.species, &config.base_url, &service)?;
    let collection = Collection::open(&config.options.out)?;
    crate::files::write_json(&config.options.out.join("fetch-gbif.json"), config)?;
    let allowed: Vec<String> = config.licenses.iter().map(|l| licence_code(l)).collect();
    let url = format!(
        "{}/occurrence/search",
        config.base_url.trim_end_matches('/')
    );
    let mut report = FetchReport::default();
    'species: for Taxon { folder, name, key } in &taxa {
        let mut tally = SpeciesTally::default();
        let mut offset = 0;
        let mut stopped = None;
        while config.options.wanted(collection.count(folder)) > 0 && offset + PAGE <= OFFSET_LIMIT {
            let mut query = vec![
                ("taxonKey", key.to_string()),
                ("mediaType", "StillImage".to_string()),
                ("limit", PAGE.to_string()),
                ("offset", offset.to_string()),
            ];
            query.extend(allowed.iter().map(|l| ("license", l.clone())));
            if let Some(country) = &config.country {
                query.push(("country", country.clone()));
            }
            if let Some(dataset) = &config.dataset {
                query.push(("datasetKey", dataset.clone()));
            }
            let page = match service
                .retrying(|| json(&service.get(&url, &query, MAX_ANSWER_BYTES, true)?))
            {
                Ok(page) => page,
                Err(reason) => {
                    stopped = Some(format!(
                        "occurrence search for {name} at offset {offset}: {reason}"
                    ));
                    break;
                }
            };
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let offered = results
                .iter()
                .map(|record| {
                    candidate(record, folder, &allowed)
                        .map_err(|reason| (text(record, "key"), reason))
                })
                .collect();
            if let Err(e) = take(
                &service,
                &collection,
                &config.options,
                folder,
                offered,
                &mut tally,
            ) {
                stopped = Some(e.to_string());
                break;
            }
            let end = page
                .get("endOfRecords")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if end || results.is_empty() {
                break;
            }
            offset += PAGE;
        }
        tally.in_folder = collection.count(folder);
        report.species.insert(folder.clone(), tally);
        if stopped.is_some() {
            report.stopped = stopped;
            break 'species;
        }
    }
    report.api_calls = service.api_calls();
    collection.write_attribution()?;
    Ok(report)
}

/// An occurrence's first still image as a candidate, or why it has none that may be used.
fn candidate(
    record: &Value,
    folder: &str,
    allowed: &[String],
) -> std::result::Result<Candidate, String> {
    let media = record
        .get("media")
        .and_then(Value::as_array)
        .and_then(|media| {
            media
                .iter()
                .find(|m| text(m, "type") == "StillImage" && !text(m, "identifier").is_empty())
        })
        .ok_or("no still image")?;
    let licence = Some(text(media, "license"))
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| text(record, "license"));
    let code = licence_code(&licence);
    if !allowed.contains(&code) {
        return Err(format!("licence {code} was not asked for"));
    }
    let key = text(record, "key");
    let author = ["creator", "rightsHolder"]
        .iter()
        .map(|k| text(media, k))
        .chain([text(record, "recordedBy")])
        .find(|a| !a.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let place = coordinates(record, "decimalLatitude", "decimalLongitude");
    Ok(Candidate {
        source: "gbif".into(),
        page_url: format!("https://www.gbif.org/occurrence/{key}"),
        id: key,
        species: folder.to_string(),
        title: text(record, "scientificName"),
        author,
        licence: code,
        image_url: text(media, "identifier"),
        date: text(record, "eventDate"),
        latitude: place.map(|p| p.0),
        longitude: place.map(|p| p.1),
    })
}

/// The configuration of `vlinder prior gbif`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbifPriorConfig {
    /// Species by scientific name, e.g. "Maniola jurtina" (for the model's maniola_jurtina), or
    /// FOLDER="Scientific name".
    pub species: Vec<String>,
    /// The country whose occurrences are counted (ISO 3166 code, e.g. NL).
    pub country: String,
    /// Only this dataset's occurrences.
    pub dataset: Option<String>,
    /// The API's base URL.
    pub base_url: String,
    /// Where the prior goes (JSON, for `vlinder train --prior`).
    pub out: std::path::PathBuf,
    pub api: ApiOptions,
}

/// The occurrence count of a search, and its facets.
fn occurrence_search(
    config: &GbifPriorConfig,
    service: &Service,
    key: u64,
    extra: &[(&str, String)],
) -> std::result::Result<Value, String> {
    let url = format!(
        "{}/occurrence/search",
        config.base_url.trim_end_matches('/')
    );
    let mut query = vec![
        ("taxonKey", key.to_string()),
        ("country", config.country.clone()),
        ("occurrenceStatus", "PRESENT".to_string()),
        ("limit", "0".to_string()),
    ];
    if let Some(d) = &config.dataset {
        query.push(("datasetKey", d.clone()));
    }
    query.extend(extra.iter().cloned());
    service.retrying(|| json(&service.get(&url, &query, MAX_ANSWER_BYTES, true)?))
}

/// Occurrences per month from the `month` facet. A month GBIF leaves out has none; an answer
/// without the facet at all is an error.
fn month_counts(answer: &Value) -> std::result::Result<Vec<f64>, String> {
    let facet = answer
        .get("facets")
        .and_then(Value::as_array)
        .and_then(|f| {
            f.iter()
                .find(|f| text(f, "field").eq_ignore_ascii_case("month"))
        })
        .ok_or("the answer has no month facet")?;
    let mut months = vec![0.0; 12];
    for c in facet
        .get("counts")
        .and_then(Value::as_array)
        .ok_or("the month facet has no counts")?
    {
        let month: usize = text(c, "name")
            .parse()
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| format!("the month facet names month {:?}", text(c, "name")))?;
        let count = c
            .get("count")
            .and_then(Value::as_f64)
            .filter(|n| *n >= 0.0)
            .ok_or_else(|| format!("month {month} has no count"))?;
        months[month - 1] = count;
    }
    Ok(months)
}

/// Occurrences per latitude band of `degrees`: the globe is halved, and each half with records
/// halved again, down to single bands, so that a country takes a few dozen calls, not 180.
fn band_counts(
    config: &GbifPriorConfig,
    service: &Service,
    key: u64,
    degrees: f64,
) -> std::result::Result<Vec<(f64, f64)>, String> {
    let bands = (180.0 / degrees).round() as i64;
    let count = |from: i64, to: i64| -> std::result::Result<f64, String> {
        // GBIF's ranges include both ends; stopping short of the next band counts each record once.
        let (south, north) = (
            -90.0 + from as f64 * degrees,
            -90.0 + to as f64 * degrees - 1e-7,
        );
        let answer = occurrence_search(
            config,
            service,
            key,
            &[("decimalLatitude", format!("{south},{north}"))],
        )?;
        answer
            .get("count")
            .and_then(Value::as_f64)
            .ok_or_else(|| "the answer has no count".to_string())
    };
    let mut found = Vec::new();
    let mut pending = vec![(0, bands)];
    while let Some((from, to)) = pending.pop() {
        let n = count(from, to)?;
        if n == 0.0 {
            continue;
        }
        if to - from == 1 {
            found.push((-90.0 + from as f64 * degrees, n));
        } else {
            let middle = (from + to) / 2;
            pending.extend([(middle, to), (from, middle)]);
        }
    }
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(found)
}

/// Counts every species' occurrences in the country per month and per latitude band and
/// writes them as a prior for `vlinder train --prior`.
pub fn prior(config: &GbifPriorConfig) -> Result<Prior> {
    config.api.validate()?;
    let country = config.country.trim();
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(Error::invalid(
            "country",
            format!("{country:?}"),
            "a two-letter ISO 3166 code, e.g. NL or GB",
        ));
    }
    let service = config.api.service();
    let taxa = resolve(&config.species, &config.base_url, &service)?;
    let failed = |name: &str, reason: String| Error::Source {
        service: "gbif",
        reason: format!("occurrence counts of {name:?}: {reason}"),
    };
    let mut months = Vec::new();
    let mut bands: Vec<Band> = Vec::new();
    let n = taxa.len();
    for (i, &Taxon { ref name, key, .. }) in taxa.iter().enumerate() {
        let answer = occurrence_search(
            config,
            &service,
            key,
            &[("facet", "month".into()), ("facetLimit", "12".into())],
        )
        .map_err(|r| failed(name, r))?;
        let counts = month_counts(&answer).map_err(|r| failed(name, r))?;
        if counts.iter().sum::<f64>() == 0.0 {
            eprintln!("warning: GBIF has no dated occurrence of {name} in {country}");
        }
        months.push(counts);
        for (south, count) in
            band_counts(config, &service, key, BAND_DEGREES).map_err(|r| failed(name, r))?
        {
            Band::at(&mut bands, south, n).counts[i] = count;
        }
        eprintln!(
            "{name}: {:.0} dated occurrences in {country}",
            months[i].iter().sum::<f64>()
        );
    }
    bands.sort_by(|a, b| a.south.total_cmp(&b.south));
    let prior = Prior::from_counts(
        format!(
            "GBIF occurrences in {country}{} ({}), counted with {} calls",
            config
                .dataset
                .as_ref()
                .map_or(String::new(), |d| format!(", dataset {d}")),
            config.base_url,
            service.api_calls()
        ),
        taxa.into_iter().map(|t| t.folder).collect(),
        months,
        bands,
    );
    crate::files::write_json(&config.out, &prior)?;
    Ok(prior)
}

#[cfg(test)]
mod tests {
    use super::month_counts;
    use serde_json::json;

    #[test]
    fn months_missing_from_the_facet_have_none_and_a_bad_facet_is_refused() {
        let answer = json!({"count": 12, "facets": [{"field": "MONTH", "counts": [
            {"name": "7", "count": 9}, {"name": "8", "count": 3}]}]});
        let months = month_counts(&answer).unwrap();
        assert_eq!(months[6..8], [9.0, 3.0]);
        assert_eq!(months.iter().sum::<f64>(), 12.0);
        for (bad, why) in [
            (json!({"count": 3}), "no month facet"),
            (
                json!({"facets": [{"field": "YEAR", "counts": []}]}),
                "no month facet",
            ),
            (json!({"facets": [{"field": "MONTH"}]}), "no counts"),
            (
                json!({"facets": [{"field": "MONTH", "counts": [{"name": "13", "count": 1}]}]}),
                "month \"13\"",
            ),
            (
                json!({"facets": [{"field": "MONTH", "counts": [{"name": "4", "count": -1}]}]}),
                "month 4 has no count",
            ),
        ] {
            let e = month_counts(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}

/// The configuration of `vlinder names gbif`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbifNamesConfig {
    /// Species by scientific name, e.g. "Maniola jurtina".
    pub species: Vec<String>,
    /// A names file to extend: its names are kept and what GBIF adds is merged in (default: a
    /// new file).
    pub extend: Option<std::path::PathBuf>,
    /// The API's base URL.
    pub base_url: String,
    /// Where the names file goes (CSV: scientific, nl, en, synonyms).
    pub out: std::path::PathBuf,
    pub api: ApiOptions,
}

/// Every page of a species' `what` (`synonyms`, `vernacularNames`), up to GBIF's end.
fn species_pages(
    config: &GbifNamesConfig,
    service: &Service,
    key: u64,
    what: &str,
) -> std::result::Result<Vec<Value>, String> {
    let url = format!(
        "{}/species/{key}/{what}",
        config.base_url.trim_end_matches('/')
    );
    let mut results = Vec::new();
    // A species has a few dozen of each at most; the bound stops a server that never ends.
    for page in 0..20u64 {
        let query = [
            ("limit", "100".to_string()),
            ("offset", (page * 100).to_string()),
        ];
        let answer =
            service.retrying(|| json(&service.get(&url, &query, MAX_ANSWER_BYTES, true)?))?;
        let rows = answer
            .get("results")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let empty = rows.is_empty();
        results.extend(rows);
        if empty
            || answer
                .get("endOfRecords")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        {
            break;
        }
    }
    Ok(results)
}

/// A name without its author: GBIF's `canonicalName`, else the scientific name cut before the
/// first word that starts with a capital after the first, a bracket or a digit.
fn canonical(row: &Value) -> String {
    let name = text(row, "canonicalName");
    if !name.is_empty() {
        return name;
    }
    let mut words = Vec::new();
    for (i, word) in text(row, "scientificName").split_whitespace().enumerate() {
        let first = word.chars().next().unwrap_or(' ');
        if i > 0 && (first.is_uppercase() || first == '(' || first.is_ascii_digit()) {
            break;
        }
        words.push(word.to_string());
    }
    words.join(" ")
}

/// The first vernacular name in one of `languages` (GBIF writes ISO 639-2, `nld`, `eng`).
fn vernacular(rows: &[Value], languages: &[&str]) -> String {
    rows.iter()
        .find(|r| languages.contains(&text(r, "language").to_lowercase().as_str()))
        .map(|r| text(r, "vernacularName"))
        .unwrap_or_default()
}

/// Looks each species up in GBIF's checklist (its accepted name, its synonyms, its first Dutch
/// and English names) and writes them as a names file, merged into `--extend`'s when given;
/// names the file already has are kept. Every name is matched before anything is written.
pub fn names(config: &GbifNamesConfig) -> Result<crate::names::Names> {
    config.api.validate()?;
    let mut names = match &config.extend {
        Some(path) => crate::names::Names::read(path)?,
        None => crate::names::Names::default(),
    };
    let service = config.api.service();
    let failed = |name: &str, reason: String| Error::Source {
        service: "gbif",
        reason: format!("names of {name:?}: {reason}"),
    };
    let taxa = config
        .species
        .iter()
        .map(|name| {
            Ok((
                name.trim().to_string(),
                taxon_key(&config.base_url, &service, name)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    for (name, key) in taxa {
        let taxon = service
            .retrying(|| {
                let url = format!("{}/species/{key}", config.base_url.trim_end_matches('/'));
                json(&service.get(&url, &[], MAX_ANSWER_BYTES, true)?)
            })
            .map_err(|r| failed(&name, r))?;
        // A name GBIF holds as a synonym is entered under the species it belongs to.
        let accepted_key = taxon
            .get("acceptedKey")
            .and_then(Value::as_u64)
            .filter(|_| text(&taxon, "taxonomicStatus") != "ACCEPTED")
            .unwrap_or(key);
        let accepted = if accepted_key == key {
            canonical(&taxon)
        } else {
            text(&taxon, "accepted")
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut synonyms: Vec<String> = species_pages(config, &service, accepted_key, "synonyms")
            .map_err(|r| failed(&name, r))?
            .iter()
            .map(canonical)
            .filter(|s| !s.is_empty() && crate::names::key(s) != crate::names::key(&accepted))
            .collect();
        if crate::names::key(&name) != crate::names::key(&accepted) {
            synonyms.insert(0, name.clone());
        }
        synonyms.dedup_by(|a, b| crate::names::key(a) == crate::names::key(b));
        let common = species_pages(config, &service, accepted_key, "vernacularNames")
            .map_err(|r| failed(&name, r))?;
        names.merge(crate::names::CommonNames {
            scientific: accepted,
            nl: vernacular(&common, &["nld", "nl", "dut"]),
            en: vernacular(&common, &["eng", "en"]),
            synonyms,
        });
    }
    crate::files::write_atomic(&config.out, names.to_csv().as_bytes())?;
    Ok(names)
}

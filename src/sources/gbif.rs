//! `vlinder fetch gbif`: expert-verified observations. The scientific name is resolved to a
//! taxon key by GBIF's species match, then occurrences with still images are paged 300 at a
//! time within the API's 100,000-record offset limit, filtered by licence (the media's own
//! licence when it has one, as it may be stricter than the record's).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{Fault, Service};
use super::{
    Candidate, Collection, FetchOptions, FetchReport, SpeciesTally, answer_json, coordinates, take,
    text,
};
use crate::{Error, Result};

pub const DEFAULT_URL: &str = "https://api.gbif.org/v1";
/// GBIF's largest page.
const PAGE: u64 = 300;
/// GBIF refuses offset + limit above this; beyond it only the download API helps.
const OFFSET_LIMIT: u64 = 100_000;
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The configuration of `vlinder fetch gbif`; saved beside the photos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct GbifConfig {
    /// Species by scientific name, e.g. "Maniola jurtina" (into folder maniola_jurtina), or
    /// FOLDER="Scientific name".
    #[arg(value_name = "SPECIES", required = true)]
    pub species: Vec<String>,
    /// Only observations from this country (ISO 3166 code, e.g. GB).
    #[arg(long)]
    pub country: Option<String>,
    /// Only this dataset, e.g. 50c9509d-22c7-4a22-a47d-8c48425ef4a7 (iNaturalist
    /// research-grade) or 8a863029-f435-446a-821e-275f4f641165 (Observation.org).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Licences to accept, as GBIF names them.
    #[arg(long, value_delimiter = ',', default_values_t = ["CC0_1_0".to_string(), "CC_BY_4_0".into(), "CC_BY_NC_4_0".into()])]
    pub licenses: Vec<String>,
    /// The API's base URL.
    #[arg(long, default_value = DEFAULT_URL)]
    pub base_url: String,
    #[command(flatten)]
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
fn taxon_key(config: &GbifConfig, service: &Service, name: &str) -> Result<u64> {
    let url = format!("{}/species/match", config.base_url.trim_end_matches('/'));
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

/// Fetches every configured species into the collection.
pub fn fetch(config: &GbifConfig) -> Result<FetchReport> {
    config.options.validate()?;
    let species: Vec<(String, String)> = config
        .species
        .iter()
        .map(|s| parse_species(s))
        .collect::<Result<_>>()?;
    let service = config.options.service();
    // All names first: a misspelt one stops the run before anything is downloaded.
    let keys: Vec<u64> = species
        .iter()
        .map(|(_, name)| taxon_key(config, &service, name))
        .collect::<Result<_>>()?;
    let collection = Collection::open(&config.options.out)?;
    crate::files::write_json(&config.options.out.join("fetch-gbif.json"), config)?;
    let allowed: Vec<String> = config.licenses.iter().map(|l| licence_code(l)).collect();
    let url = format!(
        "{}/occurrence/search",
        config.base_url.trim_end_matches('/')
    );
    let mut report = FetchReport::default();
    'species: for ((folder, name), key) in species.iter().zip(keys) {
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

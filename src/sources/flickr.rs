//! `vlinder fetch flickr`: the recipe's source. `flickr.photos.search` by keyword with JSON
//! answers, paged; past Flickr's 4,000-results cap by halving the upload-date window until each
//! window is under it, photos de-duplicated by id across windows.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{Fault, Service};
use super::{
    Candidate, Collection, FetchOptions, FetchReport, SpeciesTally, answer_json, coordinates,
    number, take, text,
};
use crate::{Error, Result};

pub const DEFAULT_URL: &str = "https://api.flickr.com/services/rest/";
/// Flickr returns at most this many results for one query.
const RESULT_CAP: u64 = 4000;
/// 2004-01-01, before Flickr's first upload: where the date windows start.
const FIRST_UPLOAD: u64 = 1_072_915_200;
/// A window this short is not split further, even if it holds more than the cap.
const SHORTEST_WINDOW: u64 = 24 * 3600;
/// The largest API answer read.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// The photo size to download, as Flickr's `url_*` extras name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FlickrSize {
    /// 75x75, cropped (`url_sq`).
    Square,
    /// 100 px on the longest side (`url_t`).
    Thumbnail,
    /// 240 px (`url_s`).
    Small,
    /// 500 px (`url_m`).
    Medium,
    /// 1024 px (`url_l`).
    Large,
    /// As uploaded (`url_o`; owners may withhold it).
    Original,
}

impl FlickrSize {
    fn extra(self) -> &'static str {
        match self {
            FlickrSize::Square => "url_sq",
            FlickrSize::Thumbnail => "url_t",
            FlickrSize::Small => "url_s",
            FlickrSize::Medium => "url_m",
            FlickrSize::Large => "url_l",
            FlickrSize::Original => "url_o",
        }
    }
}

/// Flickr's licence ids (`flickr.photos.licenses.getInfo`).
fn licence_name(id: u64) -> String {
    match id {
        0 => "All Rights Reserved",
        1 => "CC BY-NC-SA 2.0",
        2 => "CC BY-NC 2.0",
        3 => "CC BY-NC-ND 2.0",
        4 => "CC BY 2.0",
        5 => "CC BY-SA 2.0",
        6 => "CC BY-ND 2.0",
        7 => "No known copyright restrictions",
        8 => "United States Government Work",
        9 => "CC0 1.0",
        10 => "Public Domain Mark 1.0",
        _ => return format!("Flickr licence {id}"),
    }
    .to_string()
}

/// The configuration of `vlinder fetch flickr`; saved beside the photos, never with the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlickrConfig {
    /// Species as FOLDER=SEARCH TEXT, e.g. maniola_jurtina="meadow brown butterfly".
    pub species: Vec<String>,
    pub size: FlickrSize,
    /// Flickr licence ids to accept (the recipe's: 1 BY-NC-SA, 2 BY-NC, 4 BY, 5 BY-SA).
    pub licenses: Vec<u64>,
    /// A file holding the API key (default: $FLICKR_API_KEY, else ~/.config/vlinder/flickr-api-key).
    pub api_key_file: Option<PathBuf>,
    /// The REST endpoint.
    pub base_url: String,
    /// Results per search page (Flickr allows up to 500).
    pub per_page: u64,
    pub options: FetchOptions,
}

/// Splits `FOLDER=TEXT` into its two parts, the folder checked.
pub fn parse_species(spec: &str) -> Result<(String, String)> {
    let Some((folder, text)) = spec.split_once('=') else {
        return Err(Error::invalid(
            "species",
            format!("{spec:?}"),
            "FOLDER=SEARCH TEXT, e.g. maniola_jurtina=\"meadow brown butterfly\"",
        ));
    };
    let text = text.trim().trim_matches('"').trim();
    super::check_folder_name(folder.trim())?;
    if text.is_empty() {
        return Err(Error::invalid(
            "species",
            format!("{spec:?}"),
            "a search text after '='",
        ));
    }
    Ok((folder.trim().to_string(), text.to_string()))
}

/// The API key: from `--api-key-file`, else `$FLICKR_API_KEY`, else the config file.
fn api_key(config: &FlickrConfig) -> Result<String> {
    let default_file = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|dir| dir.join("vlinder/flickr-api-key"));
    let from_file = |path: &PathBuf| -> Result<String> {
        std::fs::read_to_string(path)
            .map(|k| k.trim().to_string())
            .map_err(|e| Error::io(path, e))
    };
    let key = match (&config.api_key_file, std::env::var("FLICKR_API_KEY")) {
        (Some(file), _) => from_file(file)?,
        (None, Ok(key)) if !key.trim().is_empty() => key.trim().to_string(),
        _ => match default_file.filter(|f| f.is_file()) {
            Some(file) => from_file(&file)?,
            None => String::new(),
        },
    };
    if key.is_empty() {
        return Err(Error::Source {
            service: "flickr",
            reason: "no API key: set FLICKR_API_KEY, or put the key in ~/.config/vlinder/flickr-api-key (never in the repository), or name a file with --api-key-file".into(),
        });
    }
    Ok(key)
}

/// One page of search results.
struct Page {
    photos: Vec<Value>,
    pages: u64,
    total: u64,
}

/// Reads Flickr's answer: its JSON, or what went wrong and whether it may pass.
fn read_answer(body: &[u8]) -> std::result::Result<Page, Fault> {
    let json = answer_json(body, "Flickr")?;
    if text(&json, "stat") != "ok" {
        let code = number(&json, "code");
        let message = text(&json, "message");
        return Err(match code {
            100 => Fault::Permanent(format!(
                "Flickr rejected the API key (error 100: {message}); check FLICKR_API_KEY or --api-key-file"
            )),
            105 | 10 => Fault::transient(format!("Flickr error {code}: {message}")),
            _ => Fault::Permanent(format!("Flickr error {code}: {message}")),
        });
    }
    let photos = json
        .get("photos")
        .ok_or_else(|| Fault::transient("Flickr's answer has no photos"))?;
    Ok(Page {
        photos: photos
            .get("photo")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        pages: number(photos, "pages"),
        total: number(photos, "total"),
    })
}

struct Search<'a> {
    config: &'a FlickrConfig,
    service: &'a Service,
    key: &'a str,
    text: &'a str,
}

impl Search<'_> {
    fn page(&self, (from, to): (u64, u64), page: u64) -> std::result::Result<Page, String> {
        let licences: Vec<String> = self.config.licenses.iter().map(u64::to_string).collect();
        let query = [
            ("method", "flickr.photos.search".to_string()),
            ("api_key", self.key.to_string()),
            ("format", "json".into()),
            ("nojsoncallback", "1".into()),
            ("text", self.text.to_string()),
            ("license", licences.join(",")),
            ("content_type", "1".into()),
            ("media", "photos".into()),
            ("sort", "date-posted-desc".into()),
            ("min_upload_date", from.to_string()),
            ("max_upload_date", to.to_string()),
            (
                "extras",
                format!(
                    "license,owner_name,date_upload,date_taken,geo,{}",
                    self.config.size.extra()
                ),
            ),
            ("per_page", self.config.per_page.to_string()),
            ("page", page.to_string()),
        ];
        self.service
            .retrying(|| {
                let body =
                    self.service
                        .get(&self.config.base_url, &query, MAX_ANSWER_BYTES, true)?;
                read_answer(&body)
            })
            // The key is in the query; no message may carry it.
            .map_err(|e| {
                format!("flickr.photos.search page {page}: {e}").replace(self.key, "[API key]")
            })
    }

    /// Visits the pages of the window `[from, to]` (upload dates, inclusive), halving it while
    /// it holds more than the cap; stops when `visit` says it has enough.
    fn walk(
        &self,
        (from, to): (u64, u64),
        visit: &mut dyn FnMut(Vec<Value>) -> std::result::Result<bool, String>,
    ) -> std::result::Result<bool, String> {
        let first = self.page((from, to), 1)?;
        if first.total > RESULT_CAP && to - from > SHORTEST_WINDOW {
            let middle = from + (to - from) / 2;
            return Ok(self.walk((middle + 1, to), visit)? && self.walk((from, middle), visit)?);
        }
        let last = first
            .pages
            .min(RESULT_CAP.div_ceil(self.config.per_page.max(1)));
        if !visit(first.photos)? {
            return Ok(false);
        }
        for page in 2..=last {
            if !visit(self.page((from, to), page)?.photos)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Fetches every configured species into the collection; the report says what was stored and
/// skipped, and why the run stopped early if it did.
pub fn fetch(config: &FlickrConfig) -> Result<FetchReport> {
    config.options.validate()?;
    if !(1..=500).contains(&config.per_page) {
        return Err(Error::invalid(
            "per-page",
            config.per_page,
            "between 1 and 500",
        ));
    }
    if let Some(bad) = config.licenses.iter().find(|&&l| l > 16) {
        return Err(Error::invalid(
            "licenses",
            bad,
            "Flickr licence ids, e.g. 1,2,4,5",
        ));
    }
    let species: Vec<(String, String)> = config
        .species
        .iter()
        .map(|s| parse_species(s))
        .collect::<Result<_>>()?;
    let key = api_key(config)?;
    let collection = Collection::open(&config.options.out)?;
    crate::files::write_json(&config.options.out.join("fetch-flickr.json"), config)?;
    let service = config.options.service();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(FIRST_UPLOAD);
    let mut report = FetchReport::default();
    for (folder, search_text) in &species {
        let mut tally = SpeciesTally::default();
        let search = Search {
            config,
            service: &service,
            key: &key,
            text: search_text,
        };
        let mut seen = HashSet::new();
        let mut visit = |photos: Vec<Value>| -> std::result::Result<bool, String> {
            let mut offered = Vec::new();
            for photo in photos {
                let id = text(&photo, "id");
                if id.is_empty() || !seen.insert(id.clone()) {
                    continue;
                }
                offered.push(candidate(config, folder, &photo).map_err(|reason| (id, reason)));
            }
            take(
                &service,
                &collection,
                &config.options,
                folder,
                offered,
                &mut tally,
            )
            .map_err(|e| e.to_string())
        };
        let walked = if config.options.wanted(collection.count(folder)) > 0 {
            search.walk((FIRST_UPLOAD, now), &mut visit)
        } else {
            Ok(false)
        };
        tally.in_folder = collection.count(folder);
        report.species.insert(folder.clone(), tally);
        if let Err(reason) = walked {
            report.stopped = Some(reason);
            break;
        }
    }
    report.api_calls = service.api_calls();
    collection.write_attribution()?;
    Ok(report)
}

/// A search result as a candidate photo, or why it cannot be one.
fn candidate(
    config: &FlickrConfig,
    folder: &str,
    photo: &Value,
) -> std::result::Result<Candidate, String> {
    let licence = number(photo, "license");
    if !config.licenses.contains(&licence) {
        return Err(format!(
            "licence {} was not asked for",
            licence_name(licence)
        ));
    }
    let image_url = text(photo, config.size.extra());
    if image_url.is_empty() {
        return Err(format!(
            "the owner does not offer the {} size",
            config.size.extra()
        ));
    }
    let id = text(photo, "id");
    let owner = text(photo, "owner");
    let author = Some(text(photo, "ownername"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| owner.clone());
    let date = Some(text(photo, "datetaken"))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| text(photo, "dateupload"));
    let place = coordinates(photo, "latitude", "longitude");
    Ok(Candidate {
        source: "flickr".into(),
        page_url: format!("https://www.flickr.com/photos/{owner}/{id}/"),
        id,
        species: folder.to_string(),
        title: text(photo, "title"),
        author,
        licence: licence_name(licence),
        image_url,
        date,
        latitude: place.map(|p| p.0),
        longitude: place.map(|p| p.1),
    })
}

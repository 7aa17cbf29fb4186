//! The observations behind training photos (`vlinder train --observations FILE`): a CSV with a
//! row per photo, like `inat_uk_3species_csellwood.observations.csv`, or a collection's
//! `manifest.jsonl` as `vlinder fetch` writes it.
//!
//! A photo is matched by its species folder and file name (`species/file.jpg`), so the same file
//! serves a `--data` folder, its split copies and cross-validation alike.

use std::collections::HashMap;
use std::path::Path;

use super::Context;
use crate::sources::collection::ManifestEntry;
use crate::{Error, Result};

/// Column names tried, in order, for each field of an observations CSV.
const FILE_COLUMNS: [&str; 3] = ["file", "photo", "path"];
const DATE_COLUMNS: [&str; 4] = ["observed_on", "date", "eventDate", "datum"];
const LATITUDE_COLUMNS: [&str; 3] = ["latitude", "decimalLatitude", "lat"];
const LONGITUDE_COLUMNS: [&str; 4] = ["longitude", "decimalLongitude", "lon", "lng"];

/// Every photo's context, by `species/file`.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    by_photo: HashMap<String, Context>,
    /// What could not be used, one line per row (the first few are shown to the user).
    pub warnings: Vec<String>,
}

/// The key of a photo: its folder's name and its file name.
fn key(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match path.parent().and_then(Path::file_name) {
        Some(folder) => format!("{}/{name}", folder.to_string_lossy()),
        None => name.into_owned(),
    }
}

impl Observations {
    /// Reads `path`: JSON lines if it ends in `.jsonl`, else a CSV with a header row.
    pub fn read(path: &Path) -> Result<Observations> {
        let observations = if path.extension().is_some_and(|e| e == "jsonl") {
            Self::read_manifest(path)?
        } else {
            Self::read_csv(path)?
        };
        if observations.by_photo.is_empty() {
            return Err(Error::Layout {
                path: path.to_path_buf(),
                reason: "names no photo; give a CSV with a row per photo (file, observed_on, latitude, longitude) or a manifest.jsonl".into(),
            });
        }
        Ok(observations)
    }

    fn insert(&mut self, photo: &Path, date: &str, lat: &str, lon: &str, line: u64) {
        let (context, warnings) = Context::parse(date, lat, lon);
        let shown = photo.display();
        self.warnings.extend(
            warnings
                .into_iter()
                .map(|w| format!("line {line} ({shown}): {w}")),
        );
        self.by_photo.insert(key(photo), context);
    }

    fn read_manifest(path: &Path) -> Result<Observations> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut observations = Observations::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: ManifestEntry = serde_json::from_str(line).map_err(|e| Error::Layout {
                path: path.to_path_buf(),
                reason: format!("line {} is not a manifest entry: {e}", i + 1),
            })?;
            let number = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
            observations.insert(
                Path::new(&entry.file),
                &entry.photo.date,
                &number(entry.photo.latitude),
                &number(entry.photo.longitude),
                i as u64 + 1,
            );
        }
        Ok(observations)
    }

    fn read_csv(path: &Path) -> Result<Observations> {
        let layout = |reason: String| Error::Layout {
            path: path.to_path_buf(),
            reason,
        };
        let (mut reader, headers) = crate::files::csv_with_header(path)?;
        let find = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| headers.iter().position(|h| h.trim() == *n))
        };
        let file = find(&FILE_COLUMNS).ok_or_else(|| {
            layout(format!(
                "no column naming the photo file (one of {}); columns: {}",
                FILE_COLUMNS.join(", "),
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let species = find(&["species"]);
        let (date, lat, lon) = (
            find(&DATE_COLUMNS),
            find(&LATITUDE_COLUMNS),
            find(&LONGITUDE_COLUMNS),
        );
        if date.is_none() && lat.is_none() {
            return Err(layout(format!(
                "no date column ({}) and no latitude column ({}): nothing to learn a prior from",
                DATE_COLUMNS.join(", "),
                LATITUDE_COLUMNS.join(", ")
            )));
        }
        let mut observations = Observations::default();
        for (i, row) in reader.records().enumerate() {
            let row = row.map_err(|e| layout(format!("malformed CSV row: {e}")))?;
            let line = row.position().map_or(i as u64 + 2, |p| p.line());
            let field = |column: Option<usize>| column.and_then(|c| row.get(c)).unwrap_or("");
            let name = field(Some(file)).trim();
            if name.is_empty() {
                observations
                    .warnings
                    .push(format!("line {line}: no photo file; row skipped"));
                continue;
            }
            // A bare file name lies in its species' folder.
            let photo = match species.map(|c| field(Some(c)).trim()) {
                Some(folder) if !name.contains('/') && !folder.is_empty() => {
                    Path::new(folder).join(name)
                }
                _ => Path::new(name).to_path_buf(),
            };
            observations.insert(&photo, field(date), field(lat), field(lon), line);
        }
        Ok(observations)
    }

    /// The context of the photo at `path`, if the file names it.
    pub fn of(&self, path: &Path) -> Option<&Context> {
        self.by_photo.get(&key(path))
    }

    /// The contexts of `paths`, empty where the file has none.
    pub fn contexts(&self, paths: &[std::path::PathBuf]) -> Vec<Context> {
        paths
            .iter()
            .map(|p| self.of(p).copied().unwrap_or_default())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_and_manifest_lines_are_found_by_species_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("obs.csv");
        std::fs::write(
            &csv,
            "species,file,observed_on,latitude,longitude\n\
             anthocharis_cardamines,spp_1.jpg,2021-04-24,51.84,-2.18\n\
             celastrina_argiolus,spp_1.jpg,2020-07-31,,\n\
             celastrina_argiolus,spp_2.jpg,2020-02-30,52.0,-1.0\n",
        )
        .unwrap();
        let obs = Observations::read(&csv).unwrap();
        let c = obs
            .of(Path::new("/data/x/anthocharis_cardamines/spp_1.jpg"))
            .unwrap();
        assert_eq!(c.date.unwrap().month, 4);
        assert_eq!(c.latitude, Some(51.84));
        let c = obs.of(Path::new("celastrina_argiolus/spp_1.jpg")).unwrap();
        assert_eq!((c.date.unwrap().month, c.latitude), (7, None));
        let c = obs.of(Path::new("celastrina_argiolus/spp_2.jpg")).unwrap();
        assert_eq!((c.date, c.latitude), (None, Some(52.0)));
        assert_eq!(obs.warnings.len(), 1);
        assert!(
            obs.warnings[0].starts_with("line 4 (celastrina_argiolus/spp_2.jpg): date ignored")
        );
        assert!(obs.of(Path::new("gonepteryx_rhamni/spp_1.jpg")).is_none());

        let manifest = dir.path().join("manifest.jsonl");
        std::fs::write(
            &manifest,
            r#"{"source":"gbif","id":"1","species":"maniola_jurtina","title":"t","author":"a","licence":"CC0","page_url":"p","image_url":"i","date":"2021-07-02T10:00:00","latitude":52.1,"longitude":5.2,"sha256":"s","bytes":1,"width":1,"height":1,"file":"maniola_jurtina/gbif-1.jpg"}"#,
        )
        .unwrap();
        let obs = Observations::read(&manifest).unwrap();
        let c = obs.of(Path::new("d/maniola_jurtina/gbif-1.jpg")).unwrap();
        assert_eq!((c.date.unwrap().month, c.longitude), (7, Some(5.2)));

        std::fs::write(&csv, "species,file,observer\nx,y.jpg,z\n").unwrap();
        let e = Observations::read(&csv).unwrap_err().to_string();
        assert!(e.contains("no date column"), "{e}");
        std::fs::write(&csv, "species,observed_on\nx,2020-01-01\n").unwrap();
        let e = Observations::read(&csv).unwrap_err().to_string();
        assert!(e.contains("no column naming the photo file"), "{e}");
        std::fs::write(&csv, "file,observed_on\n").unwrap();
        let e = Observations::read(&csv).unwrap_err().to_string();
        assert!(e.contains("names no photo"), "{e}");
    }
}

//! Builds `assets/sample/`, the small set of openly licensed photos that a fresh clone trains and tests
//! on: the first photos (by file name) of each species of `inat_uk_3species_csellwood` whose
//! licence is CC0, CC BY or CC BY-NC, scaled down, stored through vlinder's own collection so that
//! `manifest.jsonl` and `ATTRIBUTION.md` credit each observer.
//!
//!     cargo run --release --example sample -- ../shared/data assets/sample
//!
//! Running it again gives the same files. It also writes `records.csv`, the sample's photos as a
//! volunteers' export for `vlinder check` (see [`write_records`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vlinder::sources::{Candidate, Collection, Outcome};

const DATASET: &str = "inat_uk_3species_csellwood";
/// Photos per species: enough for the tests that train a model to beat chance clearly.
const PER_SPECIES: usize = 80;
/// The longest side after scaling: above the recipe's 75 pixels, small enough to keep in git.
const LONGEST_SIDE: u32 = 128;
const LICENCES: [&str; 3] = ["CC0", "CC-BY", "CC-BY-NC"];

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [data, out] = args.as_slice() else {
        bail!("usage: sample SHARED_DATA_DIR OUT_DIR");
    };
    let observations = data.join(format!("{DATASET}.observations.csv"));
    let mut rows: Vec<csv::StringRecord> = csv::Reader::from_path(&observations)
        .with_context(|| format!("reading {}", observations.display()))?
        .records()
        .collect::<Result<_, _>>()?;
    // Sorted as the tests list a folder: by species, then by file name.
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    let collection = Collection::open(out)?;
    let mut species: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    species.dedup();
    for name in species {
        let chosen = rows
            .iter()
            .filter(|r| &r[0] == name && LICENCES.contains(&&r[9]))
            .take(PER_SPECIES);
        let mut stored = 0;
        for row in chosen {
            let source = data.join(DATASET).join(name).join(&row[1]);
            let candidate = Candidate {
                source: "inaturalist".into(),
                id: row[2].into(),
                species: name.into(),
                title: format!("observation {} ({})", &row[2], &row[1]),
                author: row[8].into(),
                licence: row[9].into(),
                page_url: row[11].into(),
                image_url: row[12].into(),
                date: row[3].into(),
                latitude: row[4].parse().ok(),
                longitude: row[5].parse().ok(),
            };
            match collection.store(&candidate, &scaled_jpeg(&source)?)? {
                Outcome::Stored(_) | Outcome::Duplicate(_) => stored += 1,
                Outcome::Unusable(why) => bail!("{}: {why}", source.display()),
            }
        }
        println!("{name}: {stored} photos");
    }
    collection.write_attribution()?;
    write_records(out)?;
    Ok(())
}

/// The species' names as volunteers write them, one form after another: scientific with and
/// without author, Dutch (with and without its diaeresis), English, the folder's spelling,
/// capitals, an old combination, a genus alone.
fn written_forms(folder: &str) -> anyhow::Result<Vec<String>> {
    let (scientific, nl, en, old) = match folder {
        "anthocharis_cardamines" => (
            "Anthocharis cardamines",
            "Oranjetipje",
            "Orange-tip",
            "Papilio cardamines",
        ),
        "celastrina_argiolus" => (
            "Celastrina argiolus",
            "Boomblauwtje",
            "Holly Blue",
            "Papilio argiolus",
        ),
        "gonepteryx_rhamni" => (
            "Gonepteryx rhamni",
            "Citroënvlinder",
            "Brimstone",
            "Papilio rhamni",
        ),
        other => bail!("no written names for {other}"),
    };
    let genus = scientific.split(' ').next().unwrap_or(scientific);
    Ok(vec![
        scientific.to_string(),
        nl.to_string(),
        en.to_string(),
        format!("{scientific} (Linnaeus, 1758)"),
        folder.to_string(),
        nl.replace('ë', "e"),
        en.to_lowercase(),
        scientific.to_uppercase(),
        old.to_string(),
        format!("{genus} sp."),
    ])
}

/// `records.csv`: every sample photo as a record (id, photo, species, date) in a seeded random
/// order, every fifth naming one of the other two species, names in the forms of
/// [`written_forms`], and two with a misspelt name, which `check` lists before it starts.
fn write_records(out: &Path) -> anyhow::Result<()> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut entries = vlinder::sources::collection::read_manifest(out)?;
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    let species: Vec<String> = {
        let mut s: Vec<String> = entries.iter().map(|e| e.photo.species.clone()).collect();
        s.dedup();
        s
    };
    entries.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2026));
    let mut csv = csv::Writer::from_path(out.join("records.csv"))?;
    csv.write_record(["id", "photo", "species", "date"])?;
    for (i, entry) in entries.iter().enumerate() {
        let own = species
            .iter()
            .position(|s| *s == entry.photo.species)
            .unwrap_or(0);
        let claimed = if i % 5 == 4 {
            &species[(own + 1 + i / 5 % 2) % species.len()]
        } else {
            &species[own]
        };
        let name = match i {
            17 => "Boomblauwje".to_string(),
            88 => "Gonepterix rhamni".to_string(),
            _ => {
                let forms = written_forms(claimed)?;
                forms[i / 3 % forms.len()].clone()
            }
        };
        csv.write_record([
            format!("inat-{}", entry.photo.id),
            entry.file.clone(),
            name,
            entry.photo.date.clone(),
        ])?;
    }
    csv.flush()?;
    println!("records.csv: {} records", entries.len());
    Ok(())
}

/// The photo at `path` with its longest side scaled to [`LONGEST_SIDE`], as a JPEG.
fn scaled_jpeg(path: &Path) -> anyhow::Result<Vec<u8>> {
    let photo = vlinder::dataset::decode::open_oriented(path)?.to_rgb8();
    let (w, h) = photo.dimensions();
    let scale = LONGEST_SIDE as f64 / w.max(h) as f64;
    let (w, h) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let small = image::imageops::resize(&photo, w, h, image::imageops::FilterType::Lanczos3);
    let mut bytes = Vec::new();
    small.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut bytes, 85,
    ))?;
    Ok(bytes)
}

//! Records as organisations have them: species names written any way a person writes them,
//! CSVs as Excel saves them, workbooks, Darwin Core Archives and several photos a record; every
//! form gives the verdicts the tidy CSV gives.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use vlinder::check::records::{Columns, Reader, Record};
use vlinder::check::table::TableOptions;
use vlinder::check::{self, CheckConfig, CheckResults};
use vlinder::dataset::ImageFolder;
use vlinder::names::{Names, Resolution, Resolver};
use vlinder::train;

const PAIR: [&str; 2] = ["celastrina_argiolus", "gonepteryx_rhamni"];

/// A quick model of the two species and its validation photos, by species.
fn model(dir: &Path) -> (PathBuf, Vec<(PathBuf, usize)>) {
    let data = common::subset(dir, &PAIR, 60);
    let model = dir.join("model");
    {
        let _serial = common::training_lock();
        train::train(&common::quick_config(&data, 8), &model).unwrap();
    }
    let split = std::fs::read_to_string(model.join("split.csv")).unwrap();
    let photos = split
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",validation"))
        .map(|l| {
            let mut parts = l.split(',');
            let path = PathBuf::from(parts.next().unwrap());
            let name = parts.next().unwrap();
            let species = PAIR.iter().position(|s| *s == name).unwrap();
            (path, species)
        })
        .collect();
    (model, photos)
}

/// Each record's verdict and doubt by id.
fn verdicts(results: &CheckResults) -> BTreeMap<String, (String, String)> {
    results
        .records
        .iter()
        .map(|r| {
            (
                r.record.id.clone(),
                (r.verdict_label(), format!("{:.6}", r.doubt)),
            )
        })
        .collect()
}

fn check_file(
    model: &Path,
    records: &Path,
    out: &str,
    change: impl FnOnce(&mut CheckConfig),
) -> CheckResults {
    let mut config = common::check_config(model, records);
    config.out = Some(records.parent().unwrap().join(out));
    change(&mut config);
    check::check(&config).unwrap()
}

/// Every photo named as its own species (`right`) or the other one, in the written `form`.
fn records_csv(
    photos: &[(PathBuf, usize)],
    form: &dyn Fn(usize) -> String,
    separator: char,
) -> String {
    let mut csv = format!("id{separator}photo{separator}species\n");
    for (i, (path, species)) in photos.iter().enumerate() {
        // Every fifth record names the other species.
        let claimed = if i % 5 == 4 { 1 - species } else { *species };
        let _ = writeln!(
            csv,
            "r{i}{separator}{}{separator}\"{}\"",
            path.display(),
            form(claimed).replace('"', "\"\"")
        );
    }
    csv
}

#[test]
fn the_same_records_with_names_written_any_way_get_identical_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, photos) = model(tmp.path());
    let forms: [[&str; 2]; 9] = [
        ["celastrina_argiolus", "gonepteryx_rhamni"],
        ["Celastrina argiolus", "Gonepteryx rhamni"],
        ["CELASTRINA ARGIOLUS", "GONEPTERYX_RHAMNI"],
        ["celastrina-argiolus", "  gonepteryx   rhamni "],
        [
            "Celastrina argiolus (Linnaeus, 1758)",
            "Gonepteryx rhamni Linnaeus, 1758",
        ],
        ["Celastrina argiolus britanna", "Gonepteryx rhamni rhamni"],
        ["Boomblauwtje", "Citroënvlinder"],
        ["holly blue", "BRIMSTONE"],
        ["Papilio argiolus", "Papilio rhamni"],
    ];
    let mut baseline = None;
    for (k, form) in forms.iter().enumerate() {
        let records = tmp.path().join(format!("records-{k}.csv"));
        std::fs::write(
            &records,
            records_csv(&photos, &|s| form[s].to_string(), ','),
        )
        .unwrap();
        let results = check_file(&model, &records, &format!("out-{k}"), |_| {});
        assert!(
            results.unresolved_names.is_empty(),
            "{form:?}: {:?}",
            results.unresolved_names
        );
        assert_eq!(
            results.totals.errors,
            0,
            "{:?}",
            results.records.iter().find_map(|r| r.error.as_ref())
        );
        let got = verdicts(&results);
        assert!(
            got.values().all(|(v, _)| v != "unknown species"),
            "{form:?}"
        );
        match &baseline {
            None => baseline = Some(got),
            Some(want) => assert_eq!(&got, want, "{form:?}"),
        }
        // Counted under the species' scientific name, however written.
        let totals: Vec<&String> = results.totals.by_claimed_species.keys().collect();
        assert_eq!(
            totals,
            ["Celastrina argiolus", "Gonepteryx rhamni"],
            "{form:?}"
        );
    }

    // A genus alone is a claim at genus level, and says so; a name none of the species has
    // gets `unknown species` and is listed with the closest known name; one that fits two
    // species is refused naming both.
    let names = tmp.path().join("names.csv");
    std::fs::write(
        &names,
        "scientific,nl,en,synonyms\nCelastrina argiolus,Blauwtje,Holly Blue,\nGonepteryx rhamni,Blauwtje,Brimstone,\n",
    )
    .unwrap();
    let (photo, _) = &photos[0];
    let odd = tmp.path().join("odd.csv");
    std::fs::write(
        &odd,
        format!(
            "id,photo,species\ng,{p},Gonepteryx sp.\nu,{p},Gonepteryx rhamnii\nv,{p},Gonepteryx rhamnii\na,{p},blauwtje\n",
            p = photo.display()
        ),
    )
    .unwrap();
    let results = check_file(&model, &odd, "odd-out", |c| {
        c.input.names = Some(names.clone())
    });
    let by_id: BTreeMap<&str, &check::CheckedRecord> = results
        .records
        .iter()
        .map(|r| (r.record.id.as_str(), r))
        .collect();
    assert!(
        by_id["g"].verdict_label().ends_with("at genus level"),
        "{}",
        by_id["g"].verdict_label()
    );
    assert_eq!(by_id["u"].verdict_label(), "unknown species");
    let error = by_id["a"].error.as_deref().unwrap();
    assert!(
        error.contains("Celastrina argiolus") && error.contains("Gonepteryx rhamni"),
        "{error}"
    );
    assert_eq!(
        results.unresolved_names.len(),
        2,
        "{:?}",
        results.unresolved_names
    );
    let unresolved = &results.unresolved_names[0];
    assert_eq!(
        (
            unresolved.name.as_str(),
            unresolved.records,
            unresolved.closest.as_deref()
        ),
        ("Gonepteryx rhamnii", 2, Some("gonepteryx rhamni"))
    );

    // The command line lists the names first, and --strict-names stops before checking.
    let (model_s, odd_s) = (model.to_str().unwrap(), odd.to_str().unwrap());
    let out = tmp.path().join("strict-out");
    let (ok, _, stderr) = common::vlinder(&[
        "check",
        "--model",
        model_s,
        odd_s,
        "--strict-names",
        "--photos-root",
        "/",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("Gonepteryx rhamnii") && stderr.contains("gonepteryx rhamni"),
        "{stderr}"
    );
    assert!(stderr.contains("--strict-names"), "{stderr}");
    assert!(!out.exists(), "nothing is checked or written");

    // Without it, the check goes on and prints the most doubtful records under the totals:
    // the two unresolved names (doubt 1), not the record that could not be checked.
    let (ok, stdout, _) = common::vlinder(&[
        "check",
        "--model",
        model_s,
        odd_s,
        "--names",
        names.to_str().unwrap(),
        "--photos-root",
        "/",
        "--top",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "a record with an ambiguous name is an error");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("the 2 most doubtful records:"))
        .skip(2)
        .take_while(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(table.len(), 2, "{stdout}");
    assert!(
        table.iter().all(|l| l.starts_with("1.000")
            && l.contains("unknown species")
            && l.contains("Gonepteryx rhamnii")),
        "{stdout}"
    );
    assert!(
        table[0].ends_with("u (line 3)") && table[1].ends_with("v (line 4)"),
        "{stdout}"
    );
}

/// The sample's records file, the main job's example, is what its README says: every photo of
/// the sample once, a fifth of them named as another species, names in many written forms, of
/// which all but two misspellings resolve.
#[test]
fn the_sample_records_name_every_photo_a_fifth_wrongly() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample");
    let records: Vec<Record> = Reader::open(
        &sample.join("records.csv"),
        &Columns::default(),
        &TableOptions::default(),
    )
    .unwrap()
    .map(|r| r.unwrap())
    .collect();
    let folder = ImageFolder::scan(&sample).unwrap();
    assert_eq!(records.len(), folder.photos.len());
    let resolver = Resolver::new(&folder.species, &Names::built_in());
    let (mut wrong, mut unresolved, mut forms) = (0, Vec::new(), std::collections::BTreeSet::new());
    for r in &records {
        let shown = r.photos[0].split('/').next().unwrap();
        let shown = folder.species.index_of(shown).unwrap();
        forms.insert(r.claimed.clone());
        match resolver.resolve(&r.claimed) {
            Resolution::Known { claim, .. } => wrong += usize::from(!claim.includes(shown)),
            _ => unresolved.push(r.claimed.as_str()),
        }
    }
    assert_eq!(unresolved, ["Boomblauwje", "Gonepterix rhamni"]);
    assert_eq!(wrong, 48, "a fifth of 240");
    assert!(forms.len() >= 25, "{forms:?}");
    // Each record's observation date, for a model with a date and place prior.
    let dated = Reader::open(
        &sample.join("records.csv"),
        &Columns {
            date_column: Some("date".into()),
            ..Columns::default()
        },
        &TableOptions::default(),
    )
    .unwrap()
    .filter(|r| r.as_ref().unwrap().context.date.is_some())
    .count();
    assert_eq!(dated, 240);
}

/// `text` in Windows-1252 (the characters these tests use are all in it).
fn windows_1252(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

#[test]
fn excel_exports_give_the_verdicts_of_the_tidy_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, photos) = model(tmp.path());
    let dutch = |s: usize| ["Boomblauwtje", "Citroënvlinder"][s].to_string();
    let tidy = tmp.path().join("tidy.csv");
    std::fs::write(&tidy, records_csv(&photos, &dutch, ',')).unwrap();
    let want = verdicts(&check_file(&model, &tidy, "tidy-out", |_| {}));

    // Dutch Excel: semicolons, Windows-1252, CRLF, and the columns named in Dutch.
    let dutch_csv = records_csv(&photos, &dutch, ';')
        .replace("id;photo;species", "ID;Foto;Soort")
        .replace('\n', "\r\n");
    let latin = tmp.path().join("export-latin.csv");
    std::fs::write(&latin, windows_1252(&dutch_csv)).unwrap();
    // UTF-8 with a byte-order mark, as Excel's "CSV UTF-8" writes it.
    let bom = tmp.path().join("export-bom.csv");
    std::fs::write(
        &bom,
        [b"\xef\xbb\xbf".as_slice(), dutch_csv.as_bytes()].concat(),
    )
    .unwrap();
    // The same as a workbook.
    let workbook = tmp.path().join("export.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, line) in dutch_csv.lines().enumerate() {
        for (c, cell) in line.split(';').enumerate() {
            sheet
                .write_string(r as u32, c as u16, cell.trim_matches('"'))
                .unwrap();
        }
    }
    book.save(&workbook).unwrap();
    let dutch_columns = |c: &mut CheckConfig| {
        c.input.columns = Columns {
            id_column: "ID".into(),
            photo_columns: vec!["Foto".into()],
            species_column: "Soort".into(),
            ..Columns::default()
        };
    };
    for file in [&latin, &bom, &workbook] {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let results = check_file(&model, file, &format!("{name}-out"), dutch_columns);
        assert_eq!(verdicts(&results), want, "{name}");
        assert!(results.unresolved_names.is_empty(), "{name}");
    }
    // Lines are counted as a text editor counts them, CRLF or not.
    let rows: Vec<Record> = Reader::open(
        &latin,
        &Columns {
            id_column: "ID".into(),
            photo_columns: vec!["Foto".into()],
            species_column: "Soort".into(),
            ..Columns::default()
        },
        &TableOptions::default(),
    )
    .unwrap()
    .map(|r| r.unwrap())
    .collect();
    assert_eq!(rows[0].row, 2);
    assert_eq!(rows[2].row, 4);

    // Told what they are, the same files read the same; told wrong, a clear error.
    let forced = TableOptions {
        delimiter: Some(','),
        ..TableOptions::default()
    };
    let err = match Reader::open(&latin, &Columns::default(), &forced) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a semicolon file read with commas has no column id"),
    };
    assert!(
        err.contains("no column named \"id\"") && err.contains("ID;Foto;Soort"),
        "{err}"
    );
    let sheet = TableOptions {
        sheet: Some("Blad9".into()),
        ..TableOptions::default()
    };
    let err = Reader::open(&workbook, &Columns::default(), &sheet)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no sheet named \"Blad9\"") && err.contains("Sheet1"),
        "{err}"
    );
}

/// A photo of no butterfly: a smooth blue sky with a wall, as far from the training photos'
/// features as a photo gets.
fn no_butterfly(path: &Path) {
    let image = image::RgbImage::from_fn(120, 90, |x, y| {
        if y > 60 {
            image::Rgb([140, 130, 120])
        } else {
            image::Rgb([90 + (x / 4) as u8, 150, 230])
        }
    });
    image.save(path).unwrap();
}

#[test]
fn a_record_with_several_photos_gets_one_verdict_and_keeps_each_photos_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, photos) = model(tmp.path());
    let sky = tmp.path().join("sky.png");
    no_butterfly(&sky);
    let same: Vec<&(PathBuf, usize)> = photos.iter().filter(|(_, s)| *s == 1).take(2).collect();
    let (a, b) = (same[0].0.display(), same[1].0.display());
    let records = tmp.path().join("several.csv");
    std::fs::write(
        &records,
        format!(
            "id,photo,photo2,species\ntwo,{a}|{b},,Gonepteryx rhamni\nthree,{a}|{b},{},Gonepteryx rhamni\nsky,{},,Gonepteryx rhamni\nbroken,no/such.jpg|also/missing.jpg,,Gonepteryx rhamni\n",
            sky.display(),
            sky.display()
        ),
    )
    .unwrap();
    let results = check_file(&model, &records, "several-out", |c| {
        c.input.columns.photo_columns = vec!["photo".into(), "photo2".into()];
    });
    let by_id: BTreeMap<&str, &check::CheckedRecord> = results
        .records
        .iter()
        .map(|r| (r.record.id.as_str(), r))
        .collect();
    // The premise: the model calls the sky alone unknown.
    assert_eq!(
        by_id["sky"].verdict_label(),
        "unknown",
        "{:?}",
        by_id["sky"].novelty
    );
    let (two, three) = (by_id["two"], by_id["three"]);
    assert_eq!(three.photos.len(), 3);
    assert_eq!(
        three.photos.iter().map(|p| p.used).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(three.photos[2].novelty.unwrap().unknown);
    assert!(
        three.photos.iter().all(|p| p.ranking.len() == 2),
        "each photo's own ranking"
    );
    assert_eq!(
        (three.verdict_label(), three.doubt),
        (two.verdict_label(), two.doubt)
    );
    assert_ne!(three.verdict_label(), "unknown");
    let error = by_id["broken"].error.as_deref().unwrap();
    assert!(
        error.contains("none of its 2 photos") && error.contains("missing.jpg"),
        "{error}"
    );
    // results.csv counts them.
    let csv = std::fs::read_to_string(tmp.path().join("several-out/results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (photos_at, used_at) = (
        header.iter().position(|h| *h == "photos").unwrap(),
        header.iter().position(|h| *h == "photos_used").unwrap(),
    );
    let row = csv
        .lines()
        .find(|l| l.split(',').nth(1) == Some("three"))
        .unwrap();
    let cells: Vec<&str> = row.split(',').collect();
    assert_eq!((cells[photos_at], cells[used_at]), ("3", "2"));
    // report.html shows every photo of "three" with its own answer, the sky's dimmed, and the
    // single-photo records as one picture without captions.
    let html = std::fs::read_to_string(tmp.path().join("several-out/report.html")).unwrap();
    let three_row = html
        .split("<tr")
        .find(|row| row.contains("<td>three</td>"))
        .unwrap();
    assert_eq!(three_row.matches("<figure").count(), 3, "{three_row}");
    assert_eq!(three_row.matches("<img").count(), 3);
    assert_eq!(three_row.matches("photo unused").count(), 1);
    assert!(
        three_row.contains("no species the model knows"),
        "{three_row}"
    );
    let sky_row = html
        .split("<tr")
        .find(|row| row.contains("<td>sky</td>"))
        .unwrap();
    assert_eq!(
        (
            sky_row.matches("<img").count(),
            sky_row.matches("<figure").count()
        ),
        (1, 0)
    );
}

/// A Darwin Core Archive in `dir` as GBIF writes one: a tab-separated core without quoting, a
/// Simple Multimedia extension, and `meta.xml`; `photo(n)` is the URL of photo n.
fn write_archive(dir: &Path, photo: &dyn Fn(usize) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("meta.xml"),
        r#"<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="metadata.xml">
  <core encoding="UTF-8" fieldsTerminatedBy="\t" linesTerminatedBy="\n" fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0" />
    <field index="0" term="http://rs.gbif.org/terms/1.0/gbifID"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/occurrenceID"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/scientificName"/>
    <field index="3" term="http://rs.tdwg.org/dwc/terms/vernacularName"/>
    <field index="4" term="http://rs.tdwg.org/dwc/terms/eventDate"/>
    <field index="5" term="http://rs.tdwg.org/dwc/terms/decimalLatitude"/>
    <field index="6" term="http://rs.tdwg.org/dwc/terms/decimalLongitude"/>
    <field index="7" term="http://rs.tdwg.org/dwc/terms/associatedMedia"/>
    <field term="http://rs.tdwg.org/dwc/terms/country" default="NL"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\t" linesTerminatedBy="\n" fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.gbif.org/terms/1.0/Multimedia">
    <files><location>multimedia.txt</location></files>
    <coreid index="0" />
    <field index="1" term="http://purl.org/dc/terms/type"/>
    <field index="2" term="http://purl.org/dc/terms/format"/>
    <field index="3" term="http://purl.org/dc/terms/identifier"/>
  </extension>
</archive>"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("occurrence.txt"),
        format!(
            "gbifID\toccurrenceID\tscientificName\tvernacularName\teventDate\tdecimalLatitude\tdecimalLongitude\tassociatedMedia\n\
             101\tobs:101\tGonepteryx rhamni (Linnaeus, 1758)\t\t2021-04-25T10:00:00\t52.1\t5.2\t\n\
             102\t\t\tCitroenvlinder\t2021-05-01\t\t\t{} | {}\n\
             103\tobs:103\tGonepteryx rhamni\t\"quoted\" note\t\t\t\t\n",
            photo(3),
            photo(4)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("multimedia.txt"),
        format!(
            "gbifID\ttype\tformat\tidentifier\n101 \tStillImage\timage/jpeg\t{}\n101\tStillImage\timage/jpeg\t{}\n101\tSound\taudio/mpeg\t{}\n",
            photo(1),
            photo(2),
            photo(9)
        ),
    )
    .unwrap();
}

/// Zips `dir` as a publisher does, its subfolders (a GBIF download's `dataset/`) included.
fn zip_folder(dir: &Path, zip_path: &Path) {
    fn add(zip: &mut zip::ZipWriter<std::fs::File>, root: &Path, dir: &Path) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                add(zip, root, &path);
                continue;
            }
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            zip.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(&std::fs::read(&path).unwrap()).unwrap();
        }
    }
    let mut zip = zip::ZipWriter::new(std::fs::File::create(zip_path).unwrap());
    add(&mut zip, dir, dir);
    zip.finish().unwrap();
}

fn archive_records(path: &Path) -> Vec<Result<Record, String>> {
    Reader::open(path, &Columns::default(), &TableOptions::default())
        .unwrap()
        .map(|r| r.map_err(|e| e.message))
        .collect()
}

#[test]
fn darwin_core_archives_give_each_record_its_terms_and_every_photo_zipped_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let jpeg = common::real_jpeg();
    let base = common::web_server(move |_| ("image/jpeg", jpeg.clone()));
    let folder = tmp.path().join("dwca");
    write_archive(&folder, &|n| format!("{base}/photo/{n}.jpg"));
    let zipped = tmp.path().join("dwca.zip");
    zip_folder(&folder, &zipped);
    for archive in [&folder, &zipped] {
        let records = archive_records(archive);
        assert_eq!(records.len(), 3, "{records:?}");
        let r: Vec<&Record> = records.iter().map(|r| r.as_ref().unwrap()).collect();
        // The occurrenceID, else the core's id; the scientific name, else the vernacular one.
        assert_eq!((r[0].id.as_str(), r[1].id.as_str()), ("obs:101", "102"));
        assert_eq!(
            (r[0].claimed.as_str(), r[1].claimed.as_str()),
            ("Gonepteryx rhamni (Linnaeus, 1758)", "Citroenvlinder")
        );
        // Still images from the extension, matched by the id with its stray space; the core's
        // associatedMedia where the extension has none; the sound left out.
        assert_eq!(
            r[0].photos,
            [format!("{base}/photo/1.jpg"), format!("{base}/photo/2.jpg")]
        );
        assert_eq!(
            r[1].photos,
            [format!("{base}/photo/3.jpg"), format!("{base}/photo/4.jpg")]
        );
        assert!(r[2].photos.is_empty());
        assert_eq!(r[0].context.date.unwrap().to_string(), "2021-04-25");
        assert_eq!(r[0].context.latitude, Some(52.1));
        assert_eq!(r[0].row, 2);
    }

    // Checked end to end: each record one verdict from its photos, the one without photos an
    // error line.
    let (model, _) = model(tmp.path());
    let results = check::check(&CheckConfig {
        out: Some(tmp.path().join("dwca-out")),
        ..common::check_config(&model, &zipped)
    })
    .unwrap();
    let by_id: BTreeMap<&str, &check::CheckedRecord> = results
        .records
        .iter()
        .map(|r| (r.record.id.as_str(), r))
        .collect();
    assert_eq!(by_id["obs:101"].photos.len(), 2);
    assert!(by_id["obs:101"].verdict.is_some() && by_id["102"].verdict.is_some());
    assert_eq!(
        by_id["102"].understood.as_ref().unwrap().name,
        "Gonepteryx rhamni"
    );
    assert!(by_id["obs:103"].error.as_deref().unwrap().contains("photo"));
}

#[test]
fn broken_archives_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    write_archive(&good, &|n| format!("http://127.0.0.1:9/{n}.jpg"));
    let meta = std::fs::read_to_string(good.join("meta.xml")).unwrap();
    let broken = |name: &str, meta: String, files: &[(&str, &[u8])]| -> PathBuf {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("meta.xml"), meta).unwrap();
        for file in ["occurrence.txt", "multimedia.txt"] {
            std::fs::copy(good.join(file), dir.join(file)).unwrap();
        }
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        dir
    };
    let error =
        |path: &Path| match Reader::open(path, &Columns::default(), &TableOptions::default()) {
            Err(e) => e.to_string(),
            Ok(records) => records
                .filter_map(|r| r.err().map(|e| e.message))
                .collect::<Vec<_>>()
                .join("; "),
        };
    let cases = [
        (
            broken(
                "missing",
                meta.replace("occurrence.txt</location>", "occurrences.txt</location>"),
                &[],
            ),
            "occurrences.txt",
        ),
        (
            broken(
                "outside",
                meta.replace(
                    "occurrence.txt</location>",
                    "../good/occurrence.txt</location>",
                ),
                &[],
            ),
            "leads outside the archive",
        ),
        (
            broken(
                "encoding",
                meta.replacen("encoding=\"UTF-8\"", "encoding=\"EBCDIC\"", 1),
                &[],
            ),
            "EBCDIC",
        ),
        (
            broken("not-xml", "<archive><core>".into(), &[]),
            "not valid XML",
        ),
        (
            broken("column", meta.replace("index=\"7\"", "index=\"40\""), &[]),
            "meta.xml names column 40",
        ),
        (
            broken(
                "no-name",
                meta.replace("scientificName", "genus")
                    .replace("vernacularName", "family"),
                &[],
            ),
            "no claimed species",
        ),
    ];
    for (path, expected) in &cases {
        let message = error(path);
        assert!(message.contains(expected), "{}: {message}", path.display());
    }
    // A zip without meta.xml, a file that is no zip, and a zip bomb.
    let empty = tmp.path().join("empty.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&empty).unwrap());
    zip.start_file("readme.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.finish().unwrap();
    assert!(error(&empty).contains("no meta.xml"), "{}", error(&empty));
    let bomb = tmp.path().join("bomb.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
    zip.start_file("meta.xml", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(meta.as_bytes()).unwrap();
    zip.start_file("occurrence.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..64 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    assert!(error(&bomb).contains("zip bomb"), "{}", error(&bomb));
}

#[test]
#[ignore = "needs ../shared: the published Darwin Core Archives"]
fn the_published_archives_are_read_whole_with_every_photo_on_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = common::shared().join("records");
    let gbif = shared.join("gbif-0022697-200613084148143-amblyomma");
    let zipped = tmp.path().join("gbif.zip");
    zip_folder(&gbif, &zipped);
    for archive in [&gbif, &zipped] {
        let records = archive_records(archive);
        let records: Vec<&Record> = records.iter().map(|r| r.as_ref().unwrap()).collect();
        // The counts of the archive's SOURCES.md: 1,310 occurrences, 1,074 with media, 199 of
        // them with 2 to 6 photos, 1,362 photos.
        assert_eq!(records.len(), 1310);
        let mut per_record: BTreeMap<usize, usize> = BTreeMap::new();
        for r in &records {
            *per_record.entry(r.photos.len()).or_default() += 1;
        }
        assert_eq!(
            per_record.into_iter().collect::<Vec<_>>(),
            [
                (0, 236),
                (1, 875),
                (2, 133),
                (3, 49),
                (4, 13),
                (5, 2),
                (6, 2)
            ]
        );
        assert_eq!(records.iter().map(|r| r.photos.len()).sum::<usize>(), 1362);
        let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 1310, "every record has an id of its own");
        // The scientific name as published, with its author: 1,269 of the lone star tick, the
        // rest a BOLD cluster, a synonym and a misidentification.
        let americanum = records
            .iter()
            .filter(|r| r.claimed == "Amblyomma americanum Linnaeus, 1758")
            .count();
        assert_eq!(americanum, 1269);
    }
    // iDigBio's: comma-separated and quoted, an Audubon Core extension of one image a record,
    // and a header with an unbalanced quote that must not swallow the first row.
    let records = archive_records(&shared.join("idigbio-recordset-e96d17ac-harvard"));
    assert_eq!(records.len(), 916);
    let records: Vec<&Record> = records.iter().map(|r| r.as_ref().unwrap()).collect();
    let with_photos = records.iter().filter(|r| !r.photos.is_empty()).count();
    assert_eq!(with_photos, 74);
    assert!(records.iter().all(|r| r.photos.len() <= 1));
}

//! `vlinder split`: stratified, seeded, near-duplicates on one side, folds, and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vlinder::dataset::split_folders::{PhotoFiles, SplitFoldersConfig, split_folders};

const SPECIES: [&str; 3] = [
    "anthocharis_cardamines",
    "celastrina_argiolus",
    "gonepteryx_rhamni",
];

/// 20 real photos per species, plus a smaller, re-encoded copy of three of them named
/// `copy-of-<name>`.
fn photos_with_copies(dir: &Path) -> PathBuf {
    let root = common::subset(dir, &SPECIES, 20);
    for (species, position) in [(SPECIES[0], 0), (SPECIES[1], 5), (SPECIES[2], 0)] {
        let mut names: Vec<String> = std::fs::read_dir(root.join(species))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let name = &names[position];
        let original = root.join(species).join(name);
        let image = image::open(&original).unwrap();
        let smaller = image.resize(
            image.width() * 4 / 5,
            image.height() * 4 / 5,
            image::imageops::FilterType::Triangle,
        );
        let mut bytes = Vec::new();
        smaller
            .to_rgb8()
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut bytes, 60,
            ))
            .unwrap();
        std::fs::write(root.join(species).join(format!("copy-of-{name}")), bytes).unwrap();
    }
    root
}

fn config(dir: &Path, out: &Path) -> SplitFoldersConfig {
    SplitFoldersConfig {
        dir: dir.to_path_buf(),
        out: out.to_path_buf(),
        validation: 0.25,
        test: 0.1,
        folds: None,
        seed: 7,
        files: PhotoFiles::Copy,
        near_duplicate_bits: 5,
    }
}

/// (species, file name) → parts it was written to, read back from the output folders.
fn parts_of(out: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut found: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jpg") {
                let relative = path.strip_prefix(out).unwrap();
                let parts: Vec<String> = relative
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                let (file, species) = (&parts[parts.len() - 1], &parts[parts.len() - 2]);
                let part = parts[..parts.len() - 2].join("/");
                found
                    .entry((species.clone(), file.clone()))
                    .or_default()
                    .push(part);
            }
        }
    }
    found
}

#[test]
fn the_split_is_stratified_seeded_and_keeps_a_photo_with_its_reencoded_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = photos_with_copies(tmp.path());
    let out = tmp.path().join("split");
    let report = split_folders(&config(&root, &out)).unwrap();

    assert!(report.groups_kept_together >= 3, "{report:?}");
    assert!(report.photos_in_groups >= 6);
    let parts = parts_of(&out);
    assert_eq!(parts.len(), 63, "every photo written once");
    for ((species, file), where_) in &parts {
        assert_eq!(where_.len(), 1, "{species}/{file} in {where_:?}");
        if let Some(original) = file.strip_prefix("copy-of-") {
            assert_eq!(
                where_,
                &parts[&(species.clone(), original.to_string())],
                "{file} and its original are on the same side"
            );
        }
    }
    for species in SPECIES {
        // 21 photos, one pair among them: about 10% test and 25% validation, counted in groups.
        let count = |part: &str| report.counts[part][species];
        assert!((1..=3).contains(&count("test")), "{report:?}");
        assert!((4..=6).contains(&count("validation")), "{report:?}");
        assert_eq!(count("test") + count("validation") + count("train"), 21);
    }
    let table = vlinder::dataset::split_folders::render_report(&report);
    assert!(table.contains("near-duplicate"), "{table}");

    // The same seed repeats the split; another seed changes it.
    let again = tmp.path().join("again");
    split_folders(&config(&root, &again)).unwrap();
    assert_eq!(parts_of(&again), parts);
    let other = tmp.path().join("other");
    split_folders(&SplitFoldersConfig {
        seed: 8,
        ..config(&root, &other)
    })
    .unwrap();
    assert_ne!(parts_of(&other), parts);
    assert!(out.join("split-config.json").is_file());

    // split.csv: one row per photo, with the part it is in on disk, and one group for a photo
    // and its copy that no other photo has.
    let csv = std::fs::read_to_string(out.join("split.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,species,part,group"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3 * 21);
    let mut group_of = BTreeMap::new();
    for row in &rows {
        let [path, species, part, group] = row[..] else {
            panic!("{row:?}")
        };
        let file = Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            out.join(part).join(species).join(&file).is_file(),
            "{row:?}"
        );
        assert_eq!(
            parts[&(species.to_string(), file.clone())],
            [part.to_string()]
        );
        group_of.insert((species.to_string(), file), group.parse::<usize>().unwrap());
    }
    for ((species, file), group) in &group_of {
        let shared: Vec<_> = group_of
            .iter()
            .filter(|(k, g)| *g == group && k.0 == *species)
            .map(|(k, _)| k.1.clone())
            .collect();
        let pair = match file.strip_prefix("copy-of-") {
            Some(original) => vec![file.clone(), original.to_string()],
            None if shared.len() > 1 => vec![format!("copy-of-{file}"), file.clone()],
            None => vec![file.clone()],
        };
        let mut pair = pair;
        pair.sort();
        assert_eq!(shared, pair, "the group of {species}/{file}");
    }
}

#[test]
fn folds_put_each_photo_in_one_validation_fold_with_its_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = photos_with_copies(tmp.path());
    let out = tmp.path().join("folds");
    let report = split_folders(&SplitFoldersConfig {
        folds: Some(3),
        test: 0.0,
        ..config(&root, &out)
    })
    .unwrap();
    assert_eq!(report.counts.len(), 6, "train and validation of 3 folds");
    for (key, where_) in parts_of(&out) {
        let validation: Vec<&String> = where_
            .iter()
            .filter(|p| p.ends_with("validation"))
            .collect();
        assert_eq!(validation.len(), 1, "{key:?}: {where_:?}");
        assert_eq!(where_.len(), 3, "{key:?}: in the other folds' train parts");
        if let Some(original) = key.1.strip_prefix("copy-of-") {
            let original_parts = &parts_of(&out)[&(key.0.clone(), original.to_string())];
            assert_eq!(&where_, original_parts);
        }
    }
    for species in SPECIES {
        let sizes: Vec<usize> = (1..=3)
            .map(|f| report.counts[&format!("fold-{f}/validation")][species])
            .collect();
        assert!(sizes.iter().all(|&s| (6..=8).contains(&s)), "{sizes:?}");
    }
    // On disk: each fold holds every photo once, split as the report says.
    assert_eq!(parts_of(&out).len(), 3 * 21);
    for f in 1..=3 {
        let fold = out.join(format!("fold-{f}"));
        let files = parts_of(&fold);
        assert_eq!(files.len(), 3 * 21, "fold-{f}");
        for species in SPECIES {
            for part in ["train", "validation"] {
                let on_disk = files
                    .iter()
                    .filter(|(k, where_)| k.0 == species && where_[0] == part)
                    .count();
                assert_eq!(on_disk, report.counts[&format!("fold-{f}/{part}")][species]);
            }
        }
    }

    let err = split_folders(&SplitFoldersConfig {
        folds: Some(25),
        test: 0.0,
        ..config(&root, &tmp.path().join("too-many"))
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("folds") && err.contains("fewer folds"),
        "{err}"
    );
}

#[test]
fn links_share_the_file_and_bad_input_is_reported() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    for species in ["a", "b"] {
        std::fs::create_dir_all(root.join(species)).unwrap();
        for i in 0..4 {
            let source = common::sample().join(if species == "a" {
                "anthocharis_cardamines"
            } else {
                "gonepteryx_rhamni"
            });
            let mut files: Vec<PathBuf> = std::fs::read_dir(&source)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            std::fs::copy(&files[i], root.join(species).join(format!("{i}.jpg"))).unwrap();
        }
    }
    std::fs::write(root.join("a/broken.jpg"), b"<html>not a photo</html>").unwrap();
    let out = tmp.path().join("linked");
    let report = split_folders(&SplitFoldersConfig {
        files: PhotoFiles::Link,
        test: 0.0,
        validation: 0.25,
        ..config(&root, &out)
    })
    .unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].path.ends_with("broken.jpg"));
    let parts = parts_of(&out);
    let (_, where_) = parts
        .iter()
        .find(|(k, _)| k.0 == "a" && k.1 == "0.jpg")
        .unwrap();
    let linked = out.join(&where_[0]).join("a/0.jpg");
    assert_eq!(
        std::fs::metadata(&linked).unwrap().ino(),
        std::fs::metadata(root.join("a/0.jpg")).unwrap().ino()
    );

    // Copies (the default) are files of their own; `--files link` on the command line links.
    let copied = tmp.path().join("copied");
    split_folders(&SplitFoldersConfig {
        test: 0.0,
        ..config(&root, &copied)
    })
    .unwrap();
    let copy = copied.join(&parts_of(&copied)[&("a".into(), "0.jpg".into())][0]);
    assert_ne!(
        std::fs::metadata(copy.join("a/0.jpg")).unwrap().ino(),
        std::fs::metadata(root.join("a/0.jpg")).unwrap().ino()
    );
    let cli = tmp.path().join("cli");
    let (ok, _, stderr) = common::vlinder(&[
        "split",
        root.to_str().unwrap(),
        "--out",
        cli.to_str().unwrap(),
        "--validation",
        "0.25",
        "--files",
        "link",
    ]);
    assert!(ok, "{stderr}");
    let linked = cli.join(&parts_of(&cli)[&("a".into(), "0.jpg".into())][0]);
    assert_eq!(
        std::fs::metadata(linked.join("a/0.jpg")).unwrap().ino(),
        std::fs::metadata(root.join("a/0.jpg")).unwrap().ino()
    );

    // An output folder that is not empty is refused, and left as it was.
    let err = split_folders(&config(&root, &out)).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
    let err = split_folders(&SplitFoldersConfig {
        validation: 0.95,
        ..config(&root, &tmp.path().join("x"))
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("validation"), "{err}");
    let (ok, _, stderr) = common::vlinder(&[
        "split",
        root.join("a").to_str().unwrap(),
        "--out",
        tmp.path().join("y").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("species sub-folder"), "{stderr}");
}

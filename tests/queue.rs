//! The review queue against SQLite and, where `VLINDER_POSTGRES` names a server (CI starts
//! one), against PostgreSQL too: the same tests on both. Imports check records as `check` does,
//! resume where they stopped (a kill -9 included), skip what is stored, share out by shard;
//! decisions are logged, never overwritten (409), and exported.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vlinder::check;
use vlinder::queue::import::{ImportConfig, ImportReport, Shard, import};
use vlinder::queue::{
    Database, DecisionKind, DecisionRefused, NewDecision, QueueFilter, Role, export,
};

const SPECIES: [&str; 3] = [
    "anthocharis_cardamines",
    "celastrina_argiolus",
    "gonepteryx_rhamni",
];

/// One quick model for every test in this file (training is the slow part).
fn model() -> &'static (tempfile::TempDir, PathBuf) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = common::subset(tmp.path(), &SPECIES, 20);
        let model = tmp.path().join("model");
        let _serial = common::training_lock();
        vlinder::train::train(&common::quick_config(&data, 2), &model).unwrap();
        (tmp, model)
    })
}

/// A records CSV in `dir`: `n` sample photos with claims (every fifth one wrong), an unreadable
/// photo, a repeated id and a record without an id.
fn records(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from("id,photo,species,date\n");
    let mut photos = Vec::new();
    for species in SPECIES {
        let mut names: Vec<_> = std::fs::read_dir(common::sample().join(species))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        photos.extend(names.into_iter().take(n / 3 + 1).map(|p| (species, p)));
    }
    for (i, (species, photo)) in photos.iter().take(n).enumerate() {
        let claimed = if i % 5 == 0 {
            SPECIES[(SPECIES.iter().position(|s| s == species).unwrap() + 1) % 3]
        } else {
            species
        };
        writeln!(
            csv,
            "r{i:03},{},{claimed},2021-05-{:02}",
            photo.display(),
            i % 28 + 1
        )
        .unwrap();
    }
    std::fs::write(dir.join("broken.jpg"), b"not a photo").unwrap();
    writeln!(csv, "broken,broken.jpg,gonepteryx_rhamni,2021-05-01").unwrap();
    writeln!(csv, "r001,{},gonepteryx_rhamni,", photos[0].1.display()).unwrap();
    writeln!(csv, ",{},gonepteryx_rhamni,", photos[0].1.display()).unwrap();
    let path = dir.join("records.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// The databases every test runs against: a new SQLite file, and a new PostgreSQL database
/// when `VLINDER_POSTGRES` gives a server's URL.
fn databases(dir: &Path, name: &str) -> Vec<String> {
    let mut urls = vec![dir.join(format!("{name}.db")).display().to_string()];
    match std::env::var("VLINDER_POSTGRES") {
        Ok(server) if !server.is_empty() => urls.push(postgres_database(&server, name)),
        _ => eprintln!("VLINDER_POSTGRES is not set: {name} ran against SQLite only"),
    }
    urls
}

/// A fresh database on the PostgreSQL server at `server` (dropped first if a run left it).
fn postgres_database(server: &str, name: &str) -> String {
    let database = format!("vlinder_test_{name}_{}", std::process::id());
    let runtime = vlinder::queue::runtime().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(server).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    format!("{base}/{database}")
}

fn import_config(records: &Path, database: &str) -> ImportConfig {
    let mut input = common::check_input(&model().1, records);
    input.columns.date_column = Some("date".into());
    ImportConfig {
        input,
        database: database.to_string(),
        recheck: false,
        shard: None,
        batch: 8,
    }
}

/// Runs `work` on the database at `url`, opened in a runtime of its own (a pool lives and dies
/// with the runtime that opened it).
fn with_db<T>(url: &str, work: impl AsyncFnOnce(Database) -> T) -> T {
    vlinder::queue::runtime()
        .unwrap()
        .block_on(async { work(Database::open(url).await.unwrap()).await })
}

/// Every stored record: id -> (verdict, doubt, predicted).
fn stored(url: &str) -> BTreeMap<String, (String, String, Option<String>)> {
    let mut all = BTreeMap::new();
    with_db(url, async |db| {
        db.for_each_record(|r| {
            all.insert(
                r.id.clone(),
                (
                    r.verdict.clone(),
                    format!("{:.6}", r.doubt),
                    r.predicted.clone(),
                ),
            );
            Ok(())
        })
        .await
        .unwrap()
    });
    all
}

#[test]
fn an_import_stores_what_check_says_once_and_resumes_and_shards_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 24);
    // What `vlinder check` says of the same records.
    let checked = check::check(&common::check_config(&model().1, &records)).unwrap();
    // check judges every row; the queue keeps the first of a repeated id.
    let mut in_file_order: Vec<_> = checked.records.iter().collect();
    in_file_order.sort_by_key(|r| r.record.row);
    let mut seen = std::collections::HashSet::new();
    let expected: BTreeMap<String, (String, String, Option<String>)> = in_file_order
        .into_iter()
        .filter(|r| !r.record.id.is_empty() && seen.insert(r.record.id.clone()))
        .map(|r| {
            let (verdict, doubt) = match &r.verdict {
                Some(v) => (v.label().to_string(), r.doubt),
                None => ("error".to_string(), -1.0),
            };
            let top = r.ranking.first().map(|t| t.species.clone());
            (r.record.id.clone(), (verdict, format!("{doubt:.6}"), top))
        })
        .collect();
    for url in databases(tmp.path(), "import") {
        let first = import(&import_config(&records, &url)).unwrap();
        assert_eq!(first.rows, 27, "{url}");
        assert_eq!((first.stored, first.errors), (25, 1), "{url}");
        assert_eq!(first.repeated.len(), 1, "{url}");
        assert_eq!(first.repeated[0].0, "r001");
        assert_eq!(first.without_id.len(), 1);
        let all = stored(&url);
        // check keeps the repeated id's first row too, the row of the second is not stored.
        let firsts: BTreeMap<_, _> = expected
            .iter()
            .filter(|(id, _)| all.contains_key(*id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(all.len(), 25);
        assert_eq!(all, firsts, "{url}: the queue's verdicts are check's");

        // The next day's import of the same export checks nothing again but the unreadable
        // record, whose photo may be readable by then.
        let again = import(&import_config(&records, &url)).unwrap();
        assert_eq!(
            (again.stored, again.already, again.errors),
            (1, 24, 1),
            "{url}"
        );
        assert_eq!(stored(&url), all);
    }
    // Four shards into one database store exactly what one process stored.
    for url in databases(tmp.path(), "shards") {
        let reports: Vec<ImportReport> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|index| {
                    let records = &records;
                    let url = &url;
                    scope.spawn(move || {
                        let mut config = import_config(records, url);
                        config.shard = Some(Shard { index, count: 4 });
                        import(&config).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored_total: u64 = reports.iter().map(|r| r.stored).sum();
        assert_eq!(stored_total, 25, "{url}: {reports:?}");
        let single = stored(&tmp.path().join("import.db").display().to_string());
        assert_eq!(stored(&url), single, "{url}");
    }
    assert!("1/4".parse::<Shard>().is_ok());
    for bad in ["4/4", "1", "a/b", "0/0"] {
        let e = bad.parse::<Shard>().unwrap_err();
        assert!(e.contains("0 <= I < N"), "{e}");
    }
}

#[test]
fn a_killed_import_resumes_and_stores_every_record_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 60);
    let model = model().1.display().to_string();
    for url in databases(tmp.path(), "killed") {
        let args = [
            "queue",
            "import",
            "--model",
            &model,
            "--database",
            &url,
            "--photos-root",
            "/",
            "--batch",
            "2",
            records.to_str().unwrap(),
        ];
        // Three kills at different points: after the first rows, later, and at once.
        let mut seen = 0;
        for wait_for in [1, 20, 0] {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let started = std::time::Instant::now();
            while wait_for > 0 && started.elapsed().as_secs() < 60 {
                let n = count(&url);
                if n >= (seen + wait_for).min(61) || child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // SIGKILL: no chance to clean up.
            child.kill().unwrap();
            child.wait().unwrap();
            seen = count(&url);
        }
        let (ok, out, err) = common::vlinder(&args);
        assert!(ok, "{url}: {out}{err}");
        let all = stored(&url);
        assert_eq!(
            all.len(),
            61,
            "{url}: every record, each once (the id is the key)"
        );
        let fresh = tmp.path().join("fresh.db").display().to_string();
        if !url.starts_with("postgres") {
            let _ = std::fs::remove_file(&fresh);
            import(&import_config(&records, &fresh)).unwrap();
            assert_eq!(all, stored(&fresh), "the same as an import never killed");
        }
    }
}

fn count(url: &str) -> i64 {
    vlinder::queue::runtime()
        .unwrap()
        .block_on(async { Database::open(url).await?.count().await })
        .unwrap_or(0)
}

#[test]
fn decisions_are_logged_never_overwritten_and_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 9);
    for url in databases(tmp.path(), "decisions") {
        import(&import_config(&records, &url)).unwrap();
        with_db(&url, async |db| {
            db.add_user("anna", Role::Validator, "correct horse battery", false)
                .await
                .unwrap();
            db.add_user("bram", Role::Admin, "another long password", false)
                .await
                .unwrap();
            let again = db.add_user("anna", Role::Admin, "0123456789", false).await;
            assert!(again.unwrap_err().to_string().contains("--replace"));
            let short = db.add_user("cees", Role::Validator, "short", false).await;
            assert!(short.unwrap_err().to_string().contains("at least 10"));

            assert!(
                db.sign_in("anna", "wrong password", 60)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                db.sign_in("nobody", "correct horse battery", 60)
                    .await
                    .unwrap()
                    .is_none()
            );
            let session = db
                .sign_in("anna", "correct horse battery", 60)
                .await
                .unwrap()
                .unwrap();
            let who = db.session(&session.token).await.unwrap().unwrap();
            assert_eq!((who.name.as_str(), who.role), ("anna", Role::Validator));
            assert!(db.session("forged").await.unwrap().is_none());
            let expired = db
                .sign_in("bram", "another long password", -1)
                .await
                .unwrap()
                .unwrap();
            assert!(
                db.session(&expired.token).await.unwrap().is_none(),
                "expired"
            );

            // The queue: most doubtful first, filtered, paged by cursor.
            let all = db.queue(&QueueFilter::default(), 500).await.unwrap();
            assert_eq!(all.len(), 10);
            assert!(all.windows(2).all(|w| w[0].doubt >= w[1].doubt));
            assert_eq!(all.last().unwrap().verdict, "error");
            let mut paged = Vec::new();
            let mut filter = QueueFilter::default();
            loop {
                let page = db.queue(&filter, 3).await.unwrap();
                let Some(last) = page.last() else { break };
                filter.after = Some((last.doubt, last.id.clone()));
                paged.extend(page);
            }
            assert_eq!(paged, all);
            let claimed = db
                .queue(
                    &QueueFilter {
                        claimed: Some("gonepteryx_rhamni".into()),
                        ..QueueFilter::default()
                    },
                    500,
                )
                .await
                .unwrap();
            assert!(
                !claimed.is_empty() && claimed.iter().all(|r| r.claimed == "gonepteryx_rhamni")
            );
            let may = db
                .queue(
                    &QueueFilter {
                        from: Some("2021-05-03".into()),
                        to: Some("2021-05-05".into()),
                        ..QueueFilter::default()
                    },
                    500,
                )
                .await
                .unwrap();
            let mut ids: Vec<_> = may.iter().map(|r| r.id.as_str()).collect();
            ids.sort();
            assert_eq!(ids, ["r002", "r003", "r004"]);

            // Two validators decide the same record: the second is refused with the first's
            // decision, and may then replace it knowingly.
            let confirm = NewDecision {
                decision: DecisionKind::Confirm,
                species: None,
                comment: Some("clear underside".into()),
                replaces: 0,
            };
            let first = db.decide("r000", "anna", &confirm).await.unwrap().unwrap();
            assert_eq!(first.seq, 1);
            assert_eq!(first.model, all[0].model);
            let correct = NewDecision {
                decision: DecisionKind::Correct,
                species: Some("celastrina_argiolus".into()),
                comment: None,
                replaces: 0,
            };
            match db.decide("r000", "bram", &correct).await.unwrap() {
                Err(DecisionRefused::Conflict(other)) => assert_eq!(*other, first),
                other => panic!("{other:?}"),
            }
            let second = db
                .decide(
                    "r000",
                    "bram",
                    &NewDecision {
                        replaces: 1,
                        ..correct.clone()
                    },
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(second.seq, 2);
            assert_eq!(
                db.decide(
                    "r000",
                    "anna",
                    &NewDecision {
                        replaces: 5,
                        ..confirm.clone()
                    }
                )
                .await
                .unwrap(),
                Err(DecisionRefused::Stale { decisions: 2 })
            );
            assert_eq!(
                db.decide("nope", "anna", &confirm).await.unwrap(),
                Err(DecisionRefused::NoSuchRecord)
            );
            let view = db.record("r000").await.unwrap().unwrap();
            assert_eq!(view.history, vec![first, second]);
            assert_eq!(view.entry.decided_by.as_deref(), Some("bram"));
            assert!(
                db.thumbnail("r000")
                    .await
                    .unwrap()
                    .unwrap()
                    .starts_with(&[0xff, 0xd8])
            );
            let undecided = db
                .queue(
                    &QueueFilter {
                        decided: Some(false),
                        ..QueueFilter::default()
                    },
                    500,
                )
                .await
                .unwrap();
            assert_eq!(undecided.len(), 9);
        });
        let out = tmp.path().join("decisions.csv");
        let rows = export::export(&export::ExportConfig {
            database: url.clone(),
            out: out.clone(),
        })
        .unwrap();
        assert_eq!(rows, 10);
        let text = std::fs::read_to_string(&out).unwrap();
        let r000 = text.lines().find(|l| l.starts_with("r000,")).unwrap();
        assert!(
            r000.contains(",2,correct,celastrina_argiolus,bram,"),
            "{r000}"
        );
        assert!(
            text.lines()
                .next()
                .unwrap()
                .starts_with("id,line,photo,claimed")
        );
    }
}

#[test]
fn a_newer_model_rechecks_only_when_asked_and_decisions_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 6);
    // The same weights in another directory: another model as far as the queue can tell.
    let newer = tmp.path().join("newer");
    std::fs::create_dir(&newer).unwrap();
    for entry in std::fs::read_dir(&model().1).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, newer.join(path.file_name().unwrap())).unwrap();
        }
    }
    for url in databases(tmp.path(), "recheck") {
        import(&import_config(&records, &url)).unwrap();
        let confirm = NewDecision {
            decision: DecisionKind::Confirm,
            species: None,
            comment: None,
            replaces: 0,
        };
        with_db(&url, async |db| db.decide("r001", "anna", &confirm).await)
            .unwrap()
            .unwrap();
        let mut config = import_config(&records, &url);
        config.input.model = newer.clone();
        let kept = import(&config).unwrap();
        assert_eq!((kept.other_model, kept.stored), (6, 1), "{url}: {kept:?}");
        config.recheck = true;
        let rechecked = import(&config).unwrap();
        // The unreadable record is checked again whatever the model.
        assert_eq!((rechecked.rechecked, rechecked.stored), (6, 7), "{url}");
        let view = with_db(&url, async |db| db.record("r001").await)
            .unwrap()
            .unwrap();
        assert!(
            view.entry.model.starts_with("newer@"),
            "{}",
            view.entry.model
        );
        assert_eq!(view.history.len(), 1, "the decision stays");
        assert_eq!(
            view.history[0].model,
            rechecked.model.replace("newer", "model")
        );
    }
}

#[test]
fn bad_databases_get_clear_errors_and_no_password_is_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = vlinder::queue::runtime().unwrap();
    // Nothing listens on port 9 of this machine.
    let unreachable = runtime
        .block_on(Database::open(
            "postgres://vlinder:s3cret-pw@127.0.0.1:9/queue",
        ))
        .unwrap_err()
        .to_string();
    assert!(unreachable.contains("127.0.0.1:9"), "{unreachable}");
    assert!(!unreachable.contains("s3cret-pw"), "{unreachable}");
    assert!(
        unreachable.contains("check that the server is running"),
        "{unreachable}"
    );

    // A database a newer vlinder made is refused, and left as it is.
    for url in databases(tmp.path(), "newer") {
        with_db(&url, async |_| ());
        runtime.block_on(async {
            sqlx::query("INSERT INTO vlinder_schema (version) VALUES (99)")
                .execute(&db_pool(&url).await)
                .await
                .unwrap();
        });
        let refused = runtime
            .block_on(Database::open(&url))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("schema version 99") && refused.contains("newer vlinder"),
            "{refused}"
        );
    }
    let (ok, _, err) = common::vlinder(&[
        "queue",
        "export",
        "--database",
        "postgres://u:pw-not-shown@127.0.0.1:9/q",
        "--out",
        tmp.path().join("x.csv").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("127.0.0.1:9") && !err.contains("pw-not-shown"),
        "{err}"
    );
    assert!(!tmp.path().join("x.csv").exists(), "nothing written");
}

async fn db_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("postgres") {
        url.to_string()
    } else {
        format!("sqlite://{url}")
    };
    sqlx::AnyPool::connect(&url).await.unwrap()
}

#[test]
fn user_add_reads_the_password_from_standard_input() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users.db").display().to_string();
    let add = |password: &str, extra: &[&str]| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
            .args(["user", "add", "anna", "--database", &db])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(add("a good long password", &[]).0, true);
    let (ok, err) = add("another good password", &[]);
    assert!(!ok && err.contains("--replace"), "{err}");
    assert!(add("another good password", &["--replace", "--role", "admin"]).0);
    let (ok, err) = add("short", &["--replace"]);
    assert!(!ok && err.contains("at least 10"), "{err}");
    let signed = with_db(&db, async |db| {
        db.sign_in("anna", "another good password", 60).await
    })
    .unwrap()
    .unwrap();
    assert_eq!(signed.user.role, Role::Admin);
}

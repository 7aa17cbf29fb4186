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
        .block_on(async { work(Database::create(url).await.unwrap()).await })
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

/// A validator and an admin.
/// A sign-in as a test's only client, under the default limits: its session, if it opened one.
async fn signed_in(
    db: &Database,
    name: &str,
    password: &str,
    lifetime: i64,
) -> vlinder::Result<Option<vlinder::queue::users::Session>> {
    let limits = vlinder::queue::users::SignInLimits::default();
    Ok(
        match db
            .sign_in(name, password, "test", None, &limits, lifetime)
            .await?
        {
            vlinder::queue::users::SignInOutcome::Signed(session) => Some(session),
            _ => None,
        },
    )
}

async fn add_anna_and_bram(db: Database) {
    db.add_user("anna", Role::Validator, "correct horse battery", false)
        .await
        .unwrap();
    db.add_user("bram", Role::Admin, "another long password", false)
        .await
        .unwrap();
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
            add_anna_and_bram(db.clone()).await;
            let again = db.add_user("anna", Role::Admin, "0123456789", false).await;
            assert!(again.unwrap_err().to_string().contains("--replace"));
            let short = db.add_user("cees", Role::Validator, "short", false).await;
            assert!(short.unwrap_err().to_string().contains("at least 10"));

            assert!(
                signed_in(&db, "anna", "wrong password", 60)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                signed_in(&db, "nobody", "correct horse battery", 60)
                    .await
                    .unwrap()
                    .is_none()
            );
            let session = signed_in(&db, "anna", "correct horse battery", 60)
                .await
                .unwrap()
                .unwrap();
            let who = db.session(&session.token).await.unwrap().unwrap();
            assert_eq!((who.name.as_str(), who.role), ("anna", Role::Validator));
            assert!(db.session("forged").await.unwrap().is_none());
            let expired = signed_in(&db, "bram", "another long password", -1)
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
fn a_missing_database_is_never_created_by_serve_or_export_and_a_deleted_one_takes_no_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("queu.db");
    let typo_s = typo.to_str().unwrap();
    let (ok, _, err) = common::vlinder(&[
        "queue",
        "export",
        "--database",
        typo_s,
        "--out",
        tmp.path().join("x.csv").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("no such file") && err.contains("queue import"),
        "{err}"
    );
    let (ok, _, err) = common::vlinder(&[
        "serve",
        "--model",
        model().1.to_str().unwrap(),
        "--database",
        typo_s,
        "--addr",
        "127.0.0.1:0",
    ]);
    assert!(!ok && err.contains("no such file"), "{err}");
    assert!(!typo.exists(), "neither created it");

    // `user add` creates it, readable by its owner only (password hashes are inside).
    let url = tmp.path().join("queue.db").display().to_string();
    with_db(&url, add_anna_and_bram);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&url).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Deleted while open: the next write is refused instead of going to a file no one sees.
    with_db(&url, async |db: Database| {
        std::fs::remove_file(&url).unwrap();
        let refused = db
            .add_user("cees", Role::Validator, "a long enough password", false)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("deleted or replaced"), "{refused}");
    });
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
    assert!(add("a good long password", &[]).0);
    let (ok, err) = add("another good password", &[]);
    assert!(!ok && err.contains("--replace"), "{err}");
    assert!(add("another good password", &["--replace", "--role", "admin"]).0);
    let (ok, err) = add("short", &["--replace"]);
    assert!(!ok && err.contains("at least 10"), "{err}");
    let signed = with_db(&db, async |db| {
        signed_in(&db, "anna", "another good password", 60).await
    })
    .unwrap()
    .unwrap();
    assert_eq!(signed.user.role, Role::Admin);

    // Listed, disabled (the open session ends, sign-in is refused), enabled, removed.
    let user = |args: &[&str]| {
        let mut all = vec!["user"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database", &db]);
        common::vlinder(&all)
    };
    let (ok, list, _) = user(&["list"]);
    assert!(ok);
    let row: Vec<&str> = list.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[3], row[4]),
        ("anna", "admin", "no", "1"),
        "{list}"
    );
    assert!(row[2].starts_with("20"), "{list}");
    assert!(user(&["disable", "Anna"]).0);
    with_db(&db, async |db: Database| {
        assert!(
            db.session(&signed.token).await.unwrap().is_none(),
            "the session ended"
        );
        assert!(
            signed_in(&db, "anna", "another good password", 60)
                .await
                .unwrap()
                .is_none()
        );
    });
    let (_, list, _) = user(&["list"]);
    assert!(list.contains(" yes "), "{list}");
    assert!(user(&["enable", "anna"]).0);
    with_db(&db, async |db: Database| {
        assert!(
            signed_in(&db, "anna", "another good password", 60)
                .await
                .unwrap()
                .is_some()
        );
    });
    assert!(user(&["remove", "anna"]).0);
    let (ok, _, err) = user(&["remove", "anna"]);
    assert!(!ok && err.contains("no such user"), "{err}");
    let (_, list, _) = user(&["list"]);
    assert_eq!(list.lines().count(), 1, "{list}");
}

/// An answer: status, headers we look at, body.
struct Answer {
    status: u16,
    cookie: Option<String>,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A request with an optional session cookie, CSRF token and JSON body.
fn call(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<serde_json::Value>,
    language: Option<&str>,
) -> Answer {
    let agent = common::agent();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    if let Some(csrf) = csrf {
        request = request.header("X-CSRF-Token", csrf);
    }
    if let Some(language) = language {
        request = request.header("Accept-Language", language);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        request = request.header("Content-Type", "application/json");
    }
    let mut response = agent.run(request.body(body).unwrap()).unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (cookie, retry_after) = (header("set-cookie"), header("retry-after"));
    Answer {
        status: response.status().as_u16(),
        cookie,
        retry_after,
        body: String::from_utf8_lossy(&response.body_mut().read_to_vec().unwrap()).into_owned(),
    }
}

#[test]
fn validators_sign_in_decide_over_http_and_the_second_is_told() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 9);
    for url in databases(tmp.path(), "http") {
        import(&import_config(&records, &url)).unwrap();
        with_db(&url, add_anna_and_bram);
        let server = queue_server(&url);
        let at = |path: &str| server.url(path);

        // The page speaks the browser's language; the API wants a session.
        let page = call(
            "GET",
            &at("/queue"),
            None,
            None,
            None,
            Some("nl-NL,nl;q=0.9"),
        );
        assert_eq!(page.status, 200);
        assert!(page.body.contains("<html lang=\"nl\">"));
        assert_eq!(
            call("GET", &at("/v1/queue"), None, None, None, None).status,
            401
        );
        let forged = call(
            "GET",
            &at("/v1/queue"),
            Some("vlinder_session=00ff"),
            None,
            None,
            None,
        );
        assert_eq!(forged.status, 401);

        let sign_in = |name: &str, password: &str| {
            call(
                "POST",
                &at("/v1/session"),
                None,
                None,
                Some(serde_json::json!({"name": name, "password": password})),
                None,
            )
        };
        let garbled = call(
            "POST",
            &at("/v1/session"),
            None,
            None,
            Some(serde_json::json!([1])),
            None,
        );
        assert_eq!(garbled.status, 400);
        assert_eq!(garbled.json()["error"]["code"], "bad_json");
        for _ in 0..5 {
            assert_eq!(sign_in("anna", "not her password").status, 401);
        }
        let locked = sign_in("anna", "correct horse battery");
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert!(locked.retry_after.is_some());
        // Another name is not locked out by anna's failures.
        let bram = sign_in("bram", "another long password");
        assert_eq!(bram.status, 200, "{}", bram.body);
        let set = bram.cookie.clone().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let csrf = bram.json()["csrf"].as_str().unwrap().to_string();
        assert_eq!(bram.json()["role"], "admin");
        assert_eq!(bram.json()["species"].as_array().unwrap().len(), 3);
        assert_eq!(bram.json()["species"][0]["nl"], "Oranjetipje");

        let get = |path: &str| call("GET", &at(path), Some(&cookie), None, None, None);
        let queue = get("/v1/queue?limit=4");
        assert_eq!(queue.status, 200);
        let first = queue.json();
        assert_eq!(first["records"].as_array().unwrap().len(), 4);
        let next = &first["next"];
        let rest = get(&format!(
            "/v1/queue?limit=100&after_doubt={}&after_id={}",
            next[0],
            next[1].as_str().unwrap()
        ))
        .json();
        assert_eq!(rest["records"].as_array().unwrap().len(), 6);
        assert!(rest["next"].is_null());
        assert_eq!(get("/v1/queue?from=2021-13-01").status, 400);
        let id = first["records"][0]["id"].as_str().unwrap().to_string();
        let view = get(&format!("/v1/records/{id}"));
        assert_eq!(view.status, 200);
        assert_eq!(view.json()["decisions"], 0);
        let photo = get(&format!("/v1/records/{id}/photo"));
        assert_eq!(photo.status, 200);
        assert_eq!(get("/v1/records/nope").status, 404);

        let decide = |cookie: &str, csrf: Option<&str>, record: &str, body: serde_json::Value| {
            call(
                "POST",
                &at(&format!("/v1/records/{record}/decisions")),
                Some(cookie),
                csrf,
                Some(body),
                None,
            )
        };
        let confirm = serde_json::json!({"decision": "confirm", "replaces": 0});
        assert_eq!(
            decide(&cookie, None, &id, confirm.clone()).status,
            403,
            "no CSRF token"
        );
        assert_eq!(
            decide(&cookie, Some("forged"), &id, confirm.clone()).status,
            403
        );
        let unknown = decide(
            &cookie,
            Some(&csrf),
            &id,
            serde_json::json!({"decision": "correct", "species": "pieris_rapae", "replaces": 0}),
        );
        assert_eq!(unknown.status, 422, "{}", unknown.body);
        assert_eq!(
            decide(&cookie, Some(&csrf), "nope", confirm.clone()).status,
            404
        );
        let stored = decide(&cookie, Some(&csrf), &id, confirm.clone());
        assert_eq!(stored.status, 201, "{}", stored.body);

        // anna, once her lockout is over (a new server forgets it), decides the same record
        // from the page she loaded before: 409 with bram's decision.
        let _ = server.shutdown();
        let server = queue_server(&url);
        let at = |path: &str| server.url(path);
        let anna_signs_in = || {
            call(
                "POST",
                &at("/v1/session"),
                None,
                None,
                Some(serde_json::json!({"name": "anna", "password": "correct horse battery"})),
                None,
            )
        };
        // The lockout is kept in the database: a restart does not give five more tries.
        assert_eq!(anna_signs_in().status, 429);
        // Once its window has passed (moved back here rather than waited for), she is let in.
        vlinder::queue::runtime().unwrap().block_on(async {
            sqlx::query("UPDATE sign_in_tries SET window_start = window_start - 900")
                .execute(&db_pool(&url).await)
                .await
                .unwrap();
        });
        let anna = anna_signs_in();
        assert_eq!(anna.status, 200);
        let anna_cookie = anna
            .cookie
            .clone()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let anna_csrf = anna.json()["csrf"].as_str().unwrap().to_string();
        let late = call(
            "POST",
            &at(&format!("/v1/records/{id}/decisions")),
            Some(&anna_cookie),
            Some(&anna_csrf),
            Some(
                serde_json::json!({"decision": "correct", "species": "celastrina_argiolus", "replaces": 0}),
            ),
            None,
        );
        assert_eq!(late.status, 409, "{}", late.body);
        assert_eq!(late.json()["decision"]["validator"], "bram");
        assert_eq!(late.json()["decision"]["decision"], "confirm");
        // The old session still works on the new server (sessions live in the database);
        // bram's CSRF token is not anna's.
        let export = call(
            "GET",
            &at("/v1/export"),
            Some(&anna_cookie),
            None,
            None,
            None,
        );
        assert_eq!(export.status, 403, "validators do not export");
        let export = call("GET", &at("/v1/export"), Some(&cookie), None, None, None);
        assert_eq!(export.status, 200);
        assert_eq!(export.body.lines().count(), 11);
        assert!(export.body.contains(&format!("{id},")) && export.body.contains(",confirm,,bram,"));
        let out = call(
            "DELETE",
            &at("/v1/session"),
            Some(&cookie),
            Some(&csrf),
            None,
            None,
        );
        assert_eq!(out.status, 204);
        assert_eq!(
            call("GET", &at("/v1/queue"), Some(&cookie), None, None, None).status,
            401
        );
        server.shutdown().unwrap();
    }
}

#[test]
fn training_adds_the_photos_validators_confirmed_or_corrected() {
    let tmp = tempfile::tempdir().unwrap();
    // Six photos the model never saw (the quick model took each species' first 20).
    let mut csv = String::from("id,photo,species,date\n");
    for (s, species) in SPECIES.iter().enumerate() {
        let mut names: Vec<_> = std::fs::read_dir(common::sample().join(species))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for (i, photo) in names[40..42].iter().enumerate() {
            writeln!(csv, "n{s}{i},{},{species},", photo.display()).unwrap();
        }
    }
    let records = tmp.path().join("new.csv");
    std::fs::write(&records, csv).unwrap();
    let data = common::subset(tmp.path(), &SPECIES, 20);
    for url in databases(tmp.path(), "reviewed") {
        import(&import_config(&records, &url)).unwrap();
        with_db(&url, async |db| {
            let decide = async |id: &str, decision, species: Option<&str>| {
                let new = NewDecision {
                    decision,
                    species: species.map(String::from),
                    comment: None,
                    replaces: 0,
                };
                db.decide(id, "anna", &new).await.unwrap().unwrap();
            };
            decide("n00", DecisionKind::Confirm, None).await;
            decide("n01", DecisionKind::Correct, Some("celastrina_argiolus")).await;
            decide("n10", DecisionKind::CannotTell, None).await;
            decide("n20", DecisionKind::Correct, Some("pieris_rapae")).await;
        });
        let mut config = common::quick_config(&data, 1);
        config.reviewed = Some(url.clone());
        let out = tmp.path().join(format!("model-{}", url.len()));
        let _serial = common::training_lock();
        vlinder::train::train(&config, &out).unwrap();
        let card = vlinder::trained::ModelDir::new(&out).read_card().unwrap();
        let without = vlinder::dataset::ImageFolder::scan(&data)
            .unwrap()
            .photos
            .len();
        let split: usize =
            card.data.train.values().sum::<usize>() + card.data.validation.values().sum::<usize>();
        // n00 as an orange-tip, n01 corrected to a holly blue; the undecided, the cannot-tell
        // and the correction to a species the model does not know are not added.
        assert_eq!(split, without + 2, "{url}: {:?}", card.data);
        assert!(
            card.data
                .skipped
                .iter()
                .any(|s| s.reason.contains("pieris_rapae"))
        );
        assert_eq!(card.training.reviewed.as_deref(), Some(url.as_str()));
    }
}

#[test]
fn postgresql_over_tls_verifies_the_server_certificate() {
    let (Ok(server), Ok(ca)) = (
        std::env::var("VLINDER_POSTGRES"),
        std::env::var("VLINDER_POSTGRES_CA"),
    ) else {
        eprintln!("VLINDER_POSTGRES or VLINDER_POSTGRES_CA is not set: TLS was not tested");
        return;
    };
    let verified = format!("{server}?sslmode=verify-full&sslrootcert={ca}");
    let encrypted = with_db(&verified, async |db| {
        db.count().await.unwrap();
        sqlx::any::install_default_drivers();
        let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&verified)
            .await
            .unwrap();
        let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        sqlx::Row::try_get::<bool, _>(&row, "ssl").unwrap()
    });
    assert!(encrypted, "the connection is encrypted");
    // Without the CA the certificate is refused, and the message says so.
    let refused = vlinder::queue::runtime()
        .unwrap()
        .block_on(Database::open(&format!("{server}?sslmode=verify-full")))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("certificate"), "{refused}");
}

#[test]
fn every_photo_of_a_record_is_kept_and_served() {
    let tmp = tempfile::tempdir().unwrap();
    let photos: Vec<PathBuf> = SPECIES
        .iter()
        .map(|s| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(common::sample().join(s))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files.swap_remove(0)
        })
        .collect();
    let records = tmp.path().join("several.csv");
    std::fs::write(
        &records,
        format!(
            "id,photo,species\nmany,{}|{}|{},gonepteryx_rhamni\none,{},gonepteryx_rhamni\n",
            photos[0].display(),
            photos[1].display(),
            photos[2].display(),
            photos[2].display()
        ),
    )
    .unwrap();
    for url in databases(tmp.path(), "photos") {
        let mut config = import_config(&records, &url);
        config.input.photos_root = Some(PathBuf::from("/"));
        config.input.columns.date_column = None;
        import(&config).unwrap();
        with_db(&url, add_anna_and_bram);
        let server = queue_server(&url);
        let at = |path: &str| server.url(path);
        let signed = call(
            "POST",
            &at("/v1/session"),
            None,
            None,
            Some(serde_json::json!({"name": "anna", "password": "correct horse battery"})),
            None,
        );
        let cookie = signed
            .cookie
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let get = |path: &str| call("GET", &at(path), Some(&cookie), None, None, None);
        let view = get("/v1/records/many").json();
        assert_eq!(
            view["result"]["photos"].as_array().unwrap().len(),
            3,
            "{view}"
        );
        let bodies: Vec<String> = (0..3)
            .map(|i| {
                let photo = get(&format!("/v1/records/many/photos/{i}"));
                assert_eq!(photo.status, 200, "{url}: photo {i}");
                assert!(!photo.body.is_empty());
                photo.body
            })
            .collect();
        assert!(
            bodies[0] != bodies[1] && bodies[1] != bodies[2],
            "each photo's own thumbnail"
        );
        let missing = get("/v1/records/many/photos/3");
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["error"]["code"], "no_such_photo");
        // A record with one photo serves it as photo 0, from the record itself.
        assert_eq!(get("/v1/records/one/photos/0").status, 200);
        assert_eq!(get("/v1/records/one/photos/1").status, 404);
        assert_eq!(
            get("/v1/records/one/photos/0").body,
            get("/v1/records/one/photo").body
        );
        // Only for a validator.
        assert_eq!(
            call(
                "GET",
                &at("/v1/records/many/photos/0"),
                None,
                None,
                None,
                None
            )
            .status,
            401
        );
    }
}

/// POSTs a sign-in to the server at `addr` from the local address `from` (127.0.0.x: every
/// such address is this machine's loopback, and the server sees a client of its own).
async fn sign_in_from(from: &str, addr: std::net::SocketAddr, name: &str, password: &str) -> u16 {
    sign_in_with_device(from, addr, name, password, None)
        .await
        .0
}

/// The same with the device cookie `device`, if given: the status and the device cookie the
/// answer set, if it set one.
async fn sign_in_with_device(
    from: &str,
    addr: std::net::SocketAddr,
    name: &str,
    password: &str,
    device: Option<&str>,
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = serde_json::json!({"name": name, "password": password}).to_string();
    let request = format!(
        "POST /v1/session HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{body}",
        body.len(),
        device.map_or(String::new(), |d| format!("Cookie: vlinder_device={d}\r\n"))
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let device = answer
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: vlinder_device="))
        .find_map(|v| v.split(';').next().map(str::to_string));
    (answer[9..12].parse().unwrap(), device)
}

#[test]
fn sign_in_tries_are_counted_once_across_concurrent_clients_and_servers() {
    let tmp = tempfile::tempdir().unwrap();
    for url in databases(tmp.path(), "tries") {
        with_db(&url, add_anna_and_bram);
        // Two server processes' worth on one database, as the deployment's two replicas.
        let servers: Vec<common::Server> = (0..2).map(|_| queue_server(&url)).collect();
        let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let runtime = vlinder::queue::runtime().unwrap();
        // 100 wrong passwords for anna at once, half to each server: at most 5 are checked
        // (401), the rest are refused before any hashing.
        let statuses: Vec<u16> = runtime.block_on(async {
            let tries: Vec<_> = (0..100)
                .map(|i| {
                    let addr = addrs[i % 2];
                    tokio::spawn(async move {
                        sign_in_from("127.0.0.1", addr, "anna", &format!("guess number {i}")).await
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for t in tries {
                statuses.push(t.await.unwrap());
            }
            statuses
        });
        let checked = statuses.iter().filter(|s| **s == 401).count();
        // Refused before any hashing: over a limit (429), or beyond the gate of tries the
        // server takes at once (503 busy).
        let refused = statuses.iter().filter(|s| [429, 503].contains(*s)).count();
        assert!(
            checked <= 5,
            "{url}: {checked} passwords checked: {statuses:?}"
        );
        assert_eq!(checked + refused, 100, "{url}: {statuses:?}");
        runtime.block_on(async {
            // Anna from her own address is not locked out by the attacker's tries (which stay
            // under the per-name limit for all clients), and the lockout holds on both servers.
            assert_eq!(
                sign_in_from("127.0.0.1", addrs[1], "anna", "correct horse battery").await,
                429
            );
            let (status, device) =
                sign_in_with_device("127.0.0.2", addrs[0], "anna", "correct horse battery", None)
                    .await;
            assert_eq!(status, 200);
            // Her browser keeps a device cookie, with which the address the attacker used up
            // lets her in too (on either server); a made-up one does not.
            let device = device.expect("a device cookie");
            for (i, addr) in addrs.iter().enumerate() {
                let (status, again) = sign_in_with_device(
                    "127.0.0.1",
                    *addr,
                    "anna",
                    "correct horse battery",
                    Some(&device),
                )
                .await;
                assert_eq!((status, again), (200, None), "server {i}");
            }
            // A made-up device cookie is no device: the browser is given a real one.
            let (status, given) = sign_in_with_device(
                "127.0.0.6",
                addrs[0],
                "anna",
                "correct horse battery",
                Some("00ff"),
            )
            .await;
            assert!(status == 200 && given.is_some_and(|d| d != "00ff" && d != device));
            // A success clears the count: 4 wrong, right, 1 wrong, right.
            for _ in 0..4 {
                assert_eq!(
                    sign_in_from("127.0.0.3", addrs[0], "bram", "wrong wrong wrong").await,
                    401
                );
            }
            assert_eq!(
                sign_in_from("127.0.0.3", addrs[1], "bram", "another long password").await,
                200
            );
            assert_eq!(
                sign_in_from("127.0.0.3", addrs[0], "bram", "wrong wrong wrong").await,
                401
            );
            assert_eq!(
                sign_in_from("127.0.0.3", addrs[1], "bram", "another long password").await,
                200
            );
            // Names are one user however they are typed: case, and é composed or not.
            assert_eq!(
                sign_in_from("127.0.0.4", addrs[0], "BRAM", "another long password").await,
                200
            );
        });
        // One client guessing across many names is stopped too (50 tries in the window).
        let spray: Vec<u16> = runtime.block_on(async {
            let mut statuses = Vec::new();
            for i in 0..55 {
                statuses.push(
                    sign_in_from(
                        "127.0.0.5",
                        addrs[i % 2],
                        &format!("user{i}"),
                        "some password here",
                    )
                    .await,
                );
            }
            statuses
        });
        assert!(spray[..50].iter().all(|s| *s == 401), "{spray:?}");
        assert!(spray[50..].iter().all(|s| *s == 429), "{spray:?}");
    }
}

#[test]
fn user_names_are_one_user_however_typed_and_passwords_are_not_blank() {
    let tmp = tempfile::tempdir().unwrap();
    let url = databases(tmp.path(), "names").remove(0);
    with_db(&url, async |db: Database| {
        db.add_user(
            "Jos\u{e9}",
            Role::Validator,
            "a long enough password",
            false,
        )
        .await
        .unwrap();
        // "josé" with the accent as a combining mark, and in capitals: the same user.
        let again = db
            .add_user(
                "JOSE\u{301}",
                Role::Validator,
                "a long enough password",
                false,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(again.contains("exists already"), "{again}");
        // A Latin name with a Cyrillic а looks like "anna" and is refused.
        let mixed = db
            .add_user(
                "\u{430}nna",
                Role::Validator,
                "a long enough password",
                false,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(mixed.contains("Cyrillic and Latin"), "{mixed}");
        let blank = db
            .add_user("piet", Role::Validator, "          ", false)
            .await
            .unwrap_err()
            .to_string();
        assert!(blank.contains("other than spaces"), "{blank}");
        let limits = vlinder::queue::users::SignInLimits::default();
        let signed = db
            .sign_in(
                "jose\u{301}",
                "a long enough password",
                "test",
                None,
                &limits,
                60,
            )
            .await
            .unwrap();
        assert!(
            matches!(&signed, vlinder::queue::users::SignInOutcome::Signed(s) if s.user.name == "jos\u{e9}"),
            "{signed:?}"
        );
    });
}

#[test]
fn a_nul_byte_or_a_huge_cell_is_one_malformed_row_and_the_import_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = common::sample()
        .join(SPECIES[0])
        .join("inaturalist-55198032.jpg");
    let p = photo.display();
    let huge = "x".repeat(20 * 1024 * 1024);
    let records = tmp.path().join("hostile.csv");
    std::fs::write(
        &records,
        format!("id,photo,species\nnul\0id,{p},gonepteryx_rhamni\nfine,{p},gonepteryx_rhamni\n{huge},{p},gonepteryx_rhamni\nnulname,{p},gonepteryx\0rhamni\n"),
    )
    .unwrap();
    for url in databases(tmp.path(), "hostile") {
        let mut config = import_config(&records, &url);
        config.input.photos_root = Some(PathBuf::from("/"));
        config.input.columns.date_column = None;
        let report = import(&config).unwrap();
        assert_eq!(report.stored, 1, "{url}: {report:?}");
        let lines: Vec<u64> = report.malformed.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [2, 4, 5], "{url}: {:?}", report.malformed);
        assert!(
            report.malformed[0].1.contains("NUL"),
            "{:?}",
            report.malformed
        );
        assert!(
            report.malformed[1].1.contains("more than the 500"),
            "{:?}",
            report.malformed
        );
        assert!(
            report.malformed[1].1.len() < 200,
            "the message does not repeat the cell"
        );
        assert_eq!(stored(&url).len(), 1);
    }
}

/// A server on the queue at `url`, as the tests' one model serves it.
fn queue_server(url: &str) -> common::Server {
    common::Server::with(vlinder::serve::ServeConfig {
        model: model().1.clone(),
        addr: "127.0.0.1:0".parse().unwrap(),
        database: Some(url.to_string()),
        ..Default::default()
    })
}

/// Signs `name` in on `server`: the session cookie (name=value) and the CSRF token.
fn session_on(server: &common::Server, name: &str, password: &str) -> (String, String) {
    let signed = call(
        "POST",
        &server.url("/v1/session"),
        None,
        None,
        Some(serde_json::json!({"name": name, "password": password})),
        None,
    );
    assert_eq!(signed.status, 200, "{}", signed.body);
    let cookie = signed
        .cookie
        .clone()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (cookie, signed.json()["csrf"].as_str().unwrap().to_string())
}

#[test]
fn hostile_requests_get_the_documented_json_errors_and_answers_are_not_cached_or_framed() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 3);
    let url = databases(tmp.path(), "hostile_http").remove(0);
    import(&import_config(&records, &url)).unwrap();
    with_db(&url, add_anna_and_bram);
    let server = queue_server(&url);
    let at = |path: &str| server.url(path);
    let (cookie, csrf) = session_on(&server, "bram", "another long password");
    let get = |path: &str| call("GET", &at(path), Some(&cookie), None, None, None);
    let code = |a: &Answer| a.json()["error"]["code"].as_str().unwrap().to_string();
    let bad = get("/v1/queue?limit=abc");
    assert_eq!((bad.status, code(&bad).as_str()), (400, "bad_query"));
    for nul in [
        "/v1/records/r%00x",
        "/v1/queue?claimed=a%00b",
        "/v1/queue?after_id=%00",
    ] {
        let refused = get(nul);
        assert_eq!(
            (refused.status, code(&refused).as_str()),
            (400, "bad_url"),
            "{nul}"
        );
    }
    let decide = |body: serde_json::Value| {
        call(
            "POST",
            &at("/v1/records/r001/decisions"),
            Some(&cookie),
            Some(&csrf),
            Some(body),
            None,
        )
    };
    let nul =
        decide(serde_json::json!({"decision": "confirm", "replaces": 0, "comment": "a\u{0}b"}));
    assert_eq!((nul.status, code(&nul).as_str()), (400, "bad_text"));
    let huge = decide(
        serde_json::json!({"decision": "confirm", "replaces": 0, "comment": "x".repeat(2_200_000)}),
    );
    assert_eq!((huge.status, code(&huge).as_str()), (413, "too_large"));
    // The record whose photo could not be read has no thumbnail, and is said to exist.
    let none = get("/v1/records/broken/photo");
    assert_eq!((none.status, code(&none).as_str()), (404, "no_such_photo"));
    assert_eq!(code(&get("/v1/records/nope/photo")), "no_such_record");

    // Every answer: not sniffed, not framed, not cached; pages run only their own scripts.
    let agent = common::agent();
    for (path, page) in [
        ("/queue", true),
        ("/", true),
        ("/v1/queue", false),
        ("/v1/records/r001/photo", false),
    ] {
        let response = agent
            .get(at(path))
            .header("Cookie", &cookie)
            .call()
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert!(header("cache-control").contains("no-store"), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        if page {
            assert!(policy.contains("script-src 'sha256-"), "{path}: {policy}");
            assert!(
                !policy.contains("script-src 'unsafe-inline'"),
                "{path}: {policy}"
            );
        } else {
            assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
        }
    }
}

#[test]
fn a_user_has_at_most_twenty_sessions_and_the_oldest_end_first() {
    let tmp = tempfile::tempdir().unwrap();
    let url = databases(tmp.path(), "sessions").remove(0);
    with_db(&url, async |db: Database| {
        add_anna_and_bram(db.clone()).await;
        let mut tokens = Vec::new();
        for lifetime in 100..122 {
            let session = signed_in(&db, "anna", "correct horse battery", lifetime)
                .await
                .unwrap()
                .unwrap();
            tokens.push(session.token);
        }
        let open = db.users().await.unwrap();
        assert_eq!(open[0].sessions, vlinder::queue::users::MAX_SESSIONS);
        // The two that expire first ended; the newest still sign in.
        for (i, token) in tokens.iter().enumerate() {
            assert_eq!(
                db.session(token).await.unwrap().is_some(),
                i >= 2,
                "session {i}"
            );
        }
    });
}

#[test]
fn a_locked_database_is_a_503_before_the_request_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let records = records(tmp.path(), 3);
    let url = databases(tmp.path(), "locked").remove(0);
    import(&import_config(&records, &url)).unwrap();
    with_db(&url, add_anna_and_bram);
    let server = queue_server(&url);
    let at = |path: &str| server.url(path);
    let (cookie, csrf) = session_on(&server, "anna", "correct horse battery");
    // Another program holds the file's write lock.
    let runtime = vlinder::queue::runtime().unwrap();
    let mut holder = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{url}"))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    });
    let started = std::time::Instant::now();
    let refused = call(
        "POST",
        &at("/v1/records/r001/decisions"),
        Some(&cookie),
        Some(&csrf),
        Some(serde_json::json!({"decision": "confirm", "replaces": 0})),
        None,
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "database");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "before the 30 s deadline"
    );
    runtime.block_on(async {
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    });
}

//! The queue's database: SQLite (one file, WAL) by default, PostgreSQL for a URL that says so.
//! Both run the same queries through sqlx's Any driver, written with `$1` parameters, which
//! both accept, and in SQL both understand (`ON CONFLICT`, no dialect functions); the schema
//! differs only in the binary column's type.

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use crate::{Error, Result};

/// The schema versions this vlinder knows, each a list of statements applied in one
/// transaction. A database at a higher version was made by a newer vlinder and is refused.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE records (
        id TEXT PRIMARY KEY,
        line BIGINT NOT NULL,
        photo TEXT NOT NULL,
        claimed TEXT NOT NULL,
        observed_on TEXT,
        latitude DOUBLE PRECISION,
        longitude DOUBLE PRECISION,
        model TEXT NOT NULL,
        verdict TEXT NOT NULL,
        predicted TEXT,
        predicted_probability DOUBLE PRECISION,
        claimed_probability DOUBLE PRECISION,
        doubt DOUBLE PRECISION NOT NULL,
        result TEXT NOT NULL,
        thumbnail BLOB,
        checked_at BIGINT NOT NULL,
        decisions BIGINT NOT NULL DEFAULT 0,
        decision TEXT,
        decided_species TEXT,
        decided_by TEXT,
        decided_at BIGINT
    )",
        "CREATE INDEX records_by_doubt ON records (doubt DESC, id)",
        "CREATE INDEX records_by_claim ON records (claimed, doubt DESC, id)",
        "CREATE TABLE decisions (
        record_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        validator TEXT NOT NULL,
        decided_at BIGINT NOT NULL,
        decision TEXT NOT NULL,
        species TEXT,
        comment TEXT,
        model TEXT NOT NULL,
        model_verdict TEXT NOT NULL,
        model_predicted TEXT,
        model_probability DOUBLE PRECISION,
        PRIMARY KEY (record_id, seq)
    )",
        "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
        "CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        csrf TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    )",
    ],
    &[
        // Each photo of a record with several (a record with one keeps it in `records`).
        "CREATE TABLE record_photos (
        record_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        thumbnail BLOB NOT NULL,
        PRIMARY KEY (record_id, seq)
    )",
        // Sign-in tries per subject ("name N client C", "name N", "client C") in the window
        // that opened at window_start: counted here so that every server process shares them.
        // Names are kept in lower case now (see users::normalise_name); one that would clash
        // with another's lower case keeps its case. Sessions end: everyone signs in again.
        "UPDATE users SET name = lower(name) WHERE NOT EXISTS \
         (SELECT 1 FROM users other WHERE other.name = lower(users.name) AND other.name <> users.name)",
        "DELETE FROM sessions",
        // A disabled user keeps their name and decisions but cannot sign in.
        "ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0",
        // Browsers a user signed in from (a long-lived cookie's token, hashed): their tries
        // are not held back by the limits an attacker's tries run into.
        "CREATE TABLE devices (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    )",
        "CREATE TABLE sign_in_tries (
        subject TEXT PRIMARY KEY,
        tries BIGINT NOT NULL,
        window_start BIGINT NOT NULL
    )",
    ],
];

/// A writer's turn on SQLite (see [`Database::write_turn`]).
pub(crate) type WriteTurn<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

/// Which server is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// An open, migrated queue database.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: AnyPool,
    pub engine: Engine,
    /// The URL without its password, for messages.
    pub shown: String,
    /// SQLite takes one writer at a time and makes the others sleep and retry (up to 100 ms a
    /// sleep); writers of this process queue here instead.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// A SQLite database's file and its identity when opened: a file deleted or replaced
    /// while open would take writes that no one can read again, so each write checks first.
    file: Option<(std::path::PathBuf, FileIdentity)>,
}

/// Which file a path led to (device and inode).
type FileIdentity = (u64, u64);

fn identity(path: &std::path::Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.shown)
            .finish()
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

impl Database {
    /// Opens the database at `url` (`postgres://...`, `sqlite://FILE` or a file path) and
    /// brings its schema up to date. A SQLite file that does not exist is an error: a mistyped
    /// path must not serve or export an empty queue.
    pub async fn open(url: &str) -> Result<Database> {
        Self::connect(url, false).await
    }

    /// The same, creating a SQLite file that does not exist (readable by its owner only: it
    /// holds password hashes and sessions).
    pub async fn create(url: &str) -> Result<Database> {
        Self::connect(url, true).await
    }

    async fn connect(url: &str, create: bool) -> Result<Database> {
        sqlx::any::install_default_drivers();
        let (engine, url, file) = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            (Engine::Postgres, url.to_string(), None)
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            if path.is_empty() {
                return Err(Error::invalid(
                    "database",
                    url,
                    "a SQLite file path or a postgres:// URL",
                ));
            }
            let path = path.split('?').next().unwrap_or(path);
            if !std::path::Path::new(path).exists() {
                if !create {
                    return Err(Error::Database {
                        database: path.to_string(),
                        reason: "there is no such file; check the path, or create the queue with `vlinder queue import` or `vlinder user add`".into(),
                    });
                }
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    // Another process (a shard) made it first: the same file.
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(std::path::Path::new(path), e)),
                }
            }
            let opened = identity(std::path::Path::new(path)).unwrap_or_default();
            (
                Engine::Sqlite,
                format!("sqlite://{path}?mode=rwc"),
                Some((std::path::PathBuf::from(path), opened)),
            )
        };
        let shown = without_password(url.trim_end_matches("?mode=rwc"));
        let fail = |reason: String| Error::Database {
            database: shown.clone(),
            // The driver's messages do not carry the URL, but a password must never be printed.
            reason: scrub(&reason, &url),
        };
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| fail(format!("not a database URL ({e})")))?;
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                // One writer at a time in SQLite in any case; readers share the file in WAL mode.
                Engine::Sqlite => 4,
                Engine::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL: readers do not wait for the importer; a writer waits for another
                        // instead of failing at once.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot connect ({e}); check that the server is running and the URL names the right host, port, user and database"
                ))
            })?;
        let database = Database {
            pool,
            engine,
            shown: shown.clone(),
            writes: Default::default(),
            file,
        };
        database.migrate().await?;
        Ok(database)
    }

    /// This process's turn to write, on SQLite (PostgreSQL locks rows, not the database),
    /// once the file is checked to be the one opened.
    pub(crate) async fn write_turn(&self) -> Result<WriteTurn<'_>> {
        match self.engine {
            Engine::Sqlite => {
                let turn = self.writes.lock().await;
                if let Some((path, opened)) = &self.file
                    && identity(path).as_ref() != Some(opened)
                {
                    return Err(self.error(
                        "refusing to write",
                        format!(
                            "{} was deleted or replaced since it was opened; restore it and restart the server",
                            path.display()
                        ),
                    ));
                }
                Ok(Some(turn))
            }
            Engine::Postgres => Ok(None),
        }
    }

    /// A transaction that writes, begun in this process's turn (held until the guard drops).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(WriteTurn<'_>, sqlx::Transaction<'_, sqlx::Any>)> {
        let turn = self.write_turn().await?;
        let tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.error("cannot start a transaction", e))?;
        Ok((turn, tx))
    }

    /// An [`Error::Database`] naming this database.
    pub(crate) fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Database {
            database: self.shown.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    /// Applies the migrations the database lacks, in one transaction. Several processes may
    /// start at once (shards): on PostgreSQL they take turns through an advisory lock taken
    /// before anything else (even `CREATE TABLE IF NOT EXISTS` races there), on SQLite through
    /// the write lock that the transaction's first write takes.
    async fn migrate(&self) -> Result<()> {
        const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS vlinder_schema (version BIGINT NOT NULL)";
        if self.engine == Engine::Sqlite {
            sqlx::query(SCHEMA)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error("cannot create the schema table", e))?;
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.error("cannot start the migration", e))?;
        let lock = match self.engine {
            Engine::Postgres => "SELECT pg_advisory_xact_lock(7001)",
            Engine::Sqlite => "DELETE FROM vlinder_schema WHERE version < 0",
        };
        sqlx::query(lock)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error("cannot lock for the migration", e))?;
        if self.engine == Engine::Postgres {
            sqlx::query(SCHEMA)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("cannot create the schema table", e))?;
        }
        let row = sqlx::query("SELECT MAX(version) AS version FROM vlinder_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.error("cannot read the schema version", e))?;
        let found = row
            .try_get::<Option<i64>, _>("version")
            .ok()
            .flatten()
            .unwrap_or(0);
        let latest = MIGRATIONS.len() as i64;
        if found > latest {
            return Err(self.error(
                "made by a newer vlinder",
                format!(
                    "schema version {found}, this vlinder knows up to {latest}; use a newer vlinder or another database"
                ),
            ));
        }
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            for statement in *statements {
                let statement = match self.engine {
                    Engine::Sqlite => statement.to_string(),
                    Engine::Postgres => statement.replace(" BLOB", " BYTEA"),
                };
                sqlx::query(&statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.error(&format!("migration {} failed", i + 1), e))?;
            }
            sqlx::query("INSERT INTO vlinder_schema (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("cannot record the schema version", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.error("cannot commit the migration", e))
    }
}

/// `reason` with any password of `url` replaced.
fn scrub(reason: &str, url: &str) -> String {
    let shown = without_password(url);
    match url.split_once("://").and_then(|(_, rest)| {
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let userinfo = &authority[..authority.rfind('@')?];
        userinfo
            .split_once(':')
            .map(|(_, password)| password.to_string())
    }) {
        Some(password) if !password.is_empty() => {
            reason.replace(url, &shown).replace(&password, "***")
        }
        _ => reason.to_string(),
    }
}

/// Seconds since 1970, the queue's clock.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_what_is_shown() {
        assert_eq!(
            without_password("postgres://vlinder:s3cret@db.example:5432/queue"),
            "postgres://vlinder:***@db.example:5432/queue"
        );
        assert_eq!(
            without_password("postgres://vlinder@db/queue?sslmode=require"),
            "postgres://vlinder@db/queue?sslmode=require"
        );
        assert_eq!(without_password("queue.db"), "queue.db");
        assert_eq!(
            scrub(
                "failed for postgres://u:pw@h/db and pw",
                "postgres://u:pw@h/db"
            ),
            "failed for postgres://u:***@h/db and ***"
        );
    }
}

//! Validators and admins: argon2-hashed passwords and sign-in sessions. A session's token is
//! stored hashed, so that a copy of the database signs no one in.
//!
//! Sign-in is built to hold under attack from clients without an account: every try is counted
//! in the database before its password is checked (one atomic statement per limit, so that
//! concurrent tries, server replicas and restarts all share the count), per name and client,
//! per name, and per client; a password is checked by at most a few hashing threads at once
//! (each argon2 run holds 19 MiB), and an unknown name costs the same one hash as a known one.
//! A browser that signed in before shows a device cookie (OWASP's "device cookies"): its tries
//! skip those limits, which an attacker elsewhere may have used up, and have a hashing thread
//! of their own, so that its owner gets in during an attack.

use argon2::Argon2;
use argon2::password_hash::{self, PasswordHash, PasswordHasher, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::database::{Database, now};
use crate::{Error, Result};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees the queue and decides records.
    Validator,
    /// A validator who may also export the decisions.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Validator => "validator",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [Role::Validator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// A signed-in user, as a session cookie names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedIn {
    pub name: String,
    pub role: Role,
    /// The token the page must send with every change (X-CSRF-Token).
    pub csrf: String,
}

/// A user as `vlinder user list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub disabled: bool,
    /// Sessions open now.
    pub sessions: i64,
}

/// A new session: the cookie's token (shown once, stored hashed) and who it signs in.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user: SignedIn,
    pub expires_at: i64,
    /// A new device token for the browser to keep (see the module's doc), when it showed none
    /// valid for this user.
    pub device: Option<String>,
}

/// Sessions one user may have open; signing in again ends the oldest.
pub const MAX_SESSIONS: i64 = 20;

/// How long a device token is good for, in seconds.
pub const DEVICE_SECONDS: i64 = 90 * 24 * 3600;
/// Wrong passwords a device may send within the window before its tries count as anyone's.
const DEVICE_TRIES: i64 = 5;

/// The fewest characters other than white space a password must have.
pub const MIN_PASSWORD: usize = 10;

/// How often sign-in may be tried, and how long a try counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Tries for one name from one client within a window: the owner's own mistakes.
    pub per_name_and_client: i64,
    /// Tries for one name from all clients together: an attack spread over many addresses.
    /// Higher than the above, so that one attacker cannot lock the owner out.
    pub per_name: i64,
    /// Tries from one client for all names together: guessing across accounts.
    pub per_client: i64,
    /// The window, in seconds: a try stops counting this long after its window opened.
    pub window_seconds: i64,
    /// How long a try waits for a hashing thread before it is refused as busy.
    pub hashing_wait: std::time::Duration,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            per_name_and_client: 5,
            per_name: 20,
            per_client: 50,
            window_seconds: 15 * 60,
            hashing_wait: std::time::Duration::from_secs(5),
        }
    }
}

/// What a sign-in came to.
#[derive(Debug)]
pub enum SignInOutcome {
    Signed(Session),
    /// The name is unknown or the password wrong (the two are not told apart).
    Refused,
    /// Too many tries: the name, the client or both may try again in this many seconds.
    TooManyTries {
        retry_after: i64,
    },
    /// Every hashing thread stayed busy for the whole wait.
    Busy,
}

/// Password checks that may run at once, in the whole process: two per core, at least two.
fn hashing_thread_count() -> usize {
    (2 * std::thread::available_parallelism().map_or(1, |n| n.get())).max(2)
}

static HASHING_THREADS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(hashing_thread_count()));
/// The hashing thread kept for browsers with a device token, beside the others.
static DEVICE_THREAD: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Sign-in tries past the gate at once, in the whole process (four a hashing thread): the
/// rest are refused as busy before they touch the database.
static ADMITTED: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(4 * hashing_thread_count()));
/// The way in for tries with a device cookie once the gate is full: one at a time.
static DEVICE_DOOR: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A hashing thread, within `wait` (none when it stays busy that long); a try with a device
/// cookie may take the thread kept for those.
async fn hashing_thread(
    wait: std::time::Duration,
    device: bool,
) -> Option<tokio::sync::SemaphorePermit<'static>> {
    if let Ok(permit) = HASHING_THREADS.try_acquire() {
        return Some(permit);
    }
    let threads = if device {
        &DEVICE_THREAD
    } else {
        &*HASHING_THREADS
    };
    tokio::time::timeout(wait, threads.acquire())
        .await
        .ok()?
        .ok()
}

/// Argon2's working memory (19 MiB with the default parameters), one set of blocks per
/// hashing thread, allocated once and kept: handed back to the allocator, which keeps large
/// blocks for the network's tensors, each thread's arena would keep copies of its own.
fn working_memory() -> &'static std::sync::Mutex<Vec<Vec<argon2::Block>>> {
    static MEMORY: std::sync::OnceLock<std::sync::Mutex<Vec<Vec<argon2::Block>>>> =
        std::sync::OnceLock::new();
    MEMORY.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// Whether `password` gives `hash` (argon2 as `verify_password` does, the outputs compared in
/// constant time), in one of the kept sets of working memory.
fn verify(password: &[u8], hash: &PasswordHash) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        argon2::Params::try_from(hash),
        argon2::Algorithm::try_from(hash.algorithm),
    ) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut memory = working_memory()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .filter(|m| m.len() >= blocks)
        .unwrap_or_else(|| vec![argon2::Block::default(); blocks]);
    let mut computed = vec![0u8; expected.len()];
    let hashed =
        argon.hash_password_into_with_memory(password, salt, &mut computed, &mut memory[..blocks]);
    working_memory()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(memory);
    hashed.is_ok()
        && password_hash::Output::new(&computed).is_ok_and(|computed| computed == *expected)
}

/// A hash of a password no one has, with the parameters real hashes get: an unknown name is
/// checked against it, so that it costs what a known name costs.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(
                token().as_bytes(),
                &SaltString::encode_b64(&token().as_bytes()[..16]).expect("16 bytes of salt"),
            )
            .expect("hashing a random token")
            .to_string()
    })
}

/// A user name as it is stored and looked up: Unicode NFC (so that "josé" typed decomposed is
/// the same name), in lower case (so that "Anna" and "anna" are one user), trimmed.
pub fn normalise_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.trim().nfc().collect::<String>().to_lowercase()
}

/// A random token of 32 bytes, hex.
fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hashed(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Checks a (normalised) user name: letters, digits, `.`, `_`, `-` and `@`, 1 to 64 of them,
/// the letters of one alphabet (a Latin name with a Cyrillic or Greek letter in it would look
/// like another user's).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        return Err(Error::invalid(
            "user name",
            name,
            "1 to 64 letters, digits, '.', '_', '-' or '@'",
        ));
    }
    let alphabet = |c: char| match c as u32 {
        0x0370..=0x03ff | 0x1f00..=0x1fff => Some("Greek"),
        0x0400..=0x052f => Some("Cyrillic"),
        _ if c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(&c) => Some("Latin"),
        _ => None,
    };
    let mut alphabets: Vec<&str> = name.chars().filter_map(alphabet).collect();
    alphabets.sort_unstable();
    alphabets.dedup();
    if alphabets.len() > 1 {
        return Err(Error::invalid(
            "user name",
            name,
            format!(
                "letters of one alphabet ({} mixed, which looks like another name)",
                alphabets.join(" and ")
            ),
        ));
    }
    Ok(())
}

impl Database {
    /// Adds a user, or replaces the password and role of one that exists when `replace`.
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password: &str,
        replace: bool,
    ) -> Result<()> {
        let name = &normalise_name(name);
        validate_name(name)?;
        if password.chars().filter(|c| !c.is_whitespace()).count() < MIN_PASSWORD {
            return Err(Error::invalid(
                "password",
                "(not shown)",
                format!("at least {MIN_PASSWORD} characters other than spaces"),
            ));
        }
        let salt = SaltString::encode_b64(&token().as_bytes()[..16]).expect("16 bytes of salt");
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| self.error("cannot hash the password", e))?
            .to_string();
        let _turn = self.write_turn().await?;
        let sql = if replace {
            "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, \
             password_hash = excluded.password_hash"
        } else {
            "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING"
        };
        let done = sqlx::query(sql)
            .bind(name)
            .bind(role.as_str())
            .bind(hash)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("cannot add the user", e))?;
        if done.rows_affected() == 0 {
            return Err(self.error(
                &format!("user {name:?}"),
                "exists already; give --replace to set a new password or role",
            ));
        }
        // A new password ends the sessions signed in with the old one.
        self.end_sessions(name).await
    }

    /// Forgets tries whose window has passed and expired sessions and devices (which no read
    /// takes any more), at most once a minute in this process.
    async fn clear_expired(&self, window: i64) -> Result<()> {
        use std::sync::atomic::Ordering;
        static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let now = now();
        if now - LAST.swap(now, Ordering::Relaxed) < 60 {
            return Ok(());
        }
        let (_turn, mut tx) = self.begin_write().await?;
        for (sql, before) in [
            (
                "DELETE FROM sign_in_tries WHERE window_start <= $1",
                now - window,
            ),
            ("DELETE FROM sessions WHERE expires_at < $1", now),
            ("DELETE FROM devices WHERE expires_at < $1", now),
        ] {
            sqlx::query(sql)
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error("cannot clear what expired", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.error("cannot clear what expired", e))
    }

    /// Counts a try against `subject` within `limits`' window, in one statement (concurrent
    /// tries each get their own count); the seconds until it may try again when it is over
    /// `limit`.
    async fn count_try(&self, subject: &str, limit: i64, window: i64) -> Result<Option<i64>> {
        let now = now();
        let _turn = self.write_turn().await?;
        let row = sqlx::query(
            "INSERT INTO sign_in_tries (subject, tries, window_start) VALUES ($1, 1, $2) \
             ON CONFLICT (subject) DO UPDATE SET \
             tries = CASE WHEN sign_in_tries.window_start <= $3 THEN 1 \
                     ELSE sign_in_tries.tries + 1 END, \
             window_start = CASE WHEN sign_in_tries.window_start <= $3 THEN $2 \
                     ELSE sign_in_tries.window_start END \
             RETURNING tries, window_start",
        )
        .bind(subject)
        .bind(now)
        .bind(now - window)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error("cannot count a sign-in try", e))?;
        let tries: i64 = row
            .try_get("tries")
            .map_err(|e| self.error("cannot count a sign-in try", e))?;
        let since: i64 = row
            .try_get("window_start")
            .map_err(|e| self.error("cannot count a sign-in try", e))?;
        Ok((tries > limit).then(|| (since + window - now).max(1)))
    }

    /// Checks a name and password from `client` (an address, or any text that tells clients
    /// apart) and opens a session of `lifetime_seconds`. The try is counted first (see the
    /// module's doc), then the password is checked on a hashing thread (argon2 compares in
    /// constant time); a success clears the name's counts.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        client: &str,
        device: Option<&str>,
        limits: &SignInLimits,
        lifetime_seconds: i64,
    ) -> Result<SignInOutcome> {
        let window = limits.window_seconds;
        let name = normalise_name(name);
        // Tries beyond the gate are refused before any work; a browser with a device cookie
        // may still come in through its own narrow door, which a forged cookie passes no
        // further than one lookup.
        let (_admitted, at_the_door) = match ADMITTED.try_acquire() {
            Ok(permit) => (permit, false),
            Err(_) if device.is_some() => {
                match tokio::time::timeout(limits.hashing_wait, DEVICE_DOOR.acquire()).await {
                    Ok(Ok(permit)) => (permit, true),
                    _ => return Ok(SignInOutcome::Busy),
                }
            }
            Err(_) => return Ok(SignInOutcome::Busy),
        };
        self.clear_expired(window).await?;
        // A device this user signed in from, still within its own few tries.
        let device = match device {
            Some(token) if self.device_of(token).await?.as_deref() == Some(name.as_str()) => {
                let subject = format!("device {}", hashed(token));
                self.count_try(&subject, DEVICE_TRIES, window)
                    .await?
                    .is_none()
                    .then(|| token.to_string())
            }
            _ => None,
        };
        if device.is_none() && at_the_door {
            return Ok(SignInOutcome::Busy);
        }
        if device.is_none()
            && let Some(retry_after) = self
                .count_try(&format!("client {client}"), limits.per_client, window)
                .await?
        {
            return Ok(SignInOutcome::TooManyTries { retry_after });
        }
        // A name no user can have is refused without a hash: it tells nothing about users.
        if validate_name(&name).is_err() {
            return Ok(SignInOutcome::Refused);
        }
        let by_both = format!("name {name} client {client}");
        let by_name = format!("name {name}");
        if device.is_none() {
            for (subject, limit) in [
                (&by_both, limits.per_name_and_client),
                (&by_name, limits.per_name),
            ] {
                if let Some(retry_after) = self.count_try(subject, limit, window).await? {
                    return Ok(SignInOutcome::TooManyTries { retry_after });
                }
            }
        }
        let row =
            sqlx::query("SELECT role, password_hash FROM users WHERE name = $1 AND disabled = 0")
                .bind(&name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error("cannot read users", e))?;
        let (role, stored) = match &row {
            Some(row) => (
                row.try_get::<String, _>("role").unwrap_or_default(),
                row.try_get::<String, _>("password_hash")
                    .unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let Some(_thread) = hashing_thread(limits.hashing_wait, device.is_some()).await else {
            return Ok(SignInOutcome::Busy);
        };
        let verified = {
            let password = password.to_string();
            tokio::task::spawn_blocking(move || {
                let known = PasswordHash::new(&stored).ok();
                let hash = known.clone().unwrap_or_else(|| {
                    PasswordHash::new(dummy_hash()).expect("the dummy hash parses")
                });
                verify(password.as_bytes(), &hash) && known.is_some()
            })
            .await
            .unwrap_or(false)
        };
        let Some(role) = Role::parse(&role).filter(|_| verified) else {
            return Ok(SignInOutcome::Refused);
        };
        let session = Session {
            token: token(),
            user: SignedIn {
                name: name.clone(),
                role,
                csrf: token(),
            },
            expires_at: now() + lifetime_seconds,
            device: device.is_none().then(token),
        };
        // What a success writes, in one transaction: its device, the counts it clears, the
        // session, and the end of the user's sessions beyond the newest MAX_SESSIONS (a stolen
        // password cannot open sessions without end, nor a script that signs in each time).
        let (_turn, mut tx) = self.begin_write().await?;
        let fail = |what: &str, e: sqlx::Error| self.error(what, e);
        if let Some(new) = &session.device {
            sqlx::query(
                "INSERT INTO devices (token_hash, user_name, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(hashed(new))
            .bind(&name)
            .bind(now() + DEVICE_SECONDS)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail("cannot store the device", e))?;
        }
        let by_device = device
            .as_deref()
            .map_or(String::new(), |token| format!("device {}", hashed(token)));
        sqlx::query("DELETE FROM sign_in_tries WHERE subject = $1 OR subject = $2 OR subject = $3")
            .bind(&by_both)
            .bind(&by_name)
            .bind(&by_device)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail("cannot clear the sign-in tries", e))?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, csrf, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hashed(&session.token))
        .bind(&name)
        .bind(&session.user.csrf)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail("cannot store the session", e))?;
        sqlx::query(
            "DELETE FROM sessions WHERE user_name = $1 AND token_hash NOT IN \
             (SELECT token_hash FROM sessions WHERE user_name = $1 \
              ORDER BY expires_at DESC, token_hash LIMIT $2)",
        )
        .bind(&name)
        .bind(MAX_SESSIONS)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail("cannot end old sessions", e))?;
        tx.commit()
            .await
            .map_err(|e| fail("cannot store the session", e))?;
        Ok(SignInOutcome::Signed(session))
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT u.name AS name, u.role AS role, u.created_at AS created_at, u.disabled AS disabled, \
             (SELECT COUNT(*) FROM sessions s WHERE s.user_name = u.name AND s.expires_at > $1) AS sessions \
             FROM users u ORDER BY u.name",
        )
        .bind(now())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("cannot read users", e))?;
        rows.iter()
            .map(|row| -> std::result::Result<User, sqlx::Error> {
                Ok(User {
                    name: row.try_get("name")?,
                    role: Role::parse(&row.try_get::<String, _>("role")?)
                        .unwrap_or(Role::Validator),
                    created_at: row.try_get("created_at")?,
                    disabled: row.try_get::<i64, _>("disabled")? != 0,
                    sessions: row.try_get("sessions")?,
                })
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.error("cannot read users", e))
    }

    /// Disables (or enables again) a user: a disabled one cannot sign in, and their sessions
    /// end; their name and decisions stay.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        let sql = if disabled {
            "UPDATE users SET disabled = 1 WHERE name = $1"
        } else {
            "UPDATE users SET disabled = 0 WHERE name = $1"
        };
        self.change_user(name, sql).await
    }

    /// Removes a user and their sessions; the decisions they made keep their name.
    pub async fn remove_user(&self, name: &str) -> Result<()> {
        self.change_user(name, "DELETE FROM users WHERE name = $1")
            .await
    }

    /// Runs `sql` (with the normalised name as $1) on a user who must exist, then ends their
    /// sessions.
    async fn change_user(&self, name: &str, sql: &str) -> Result<()> {
        let name = normalise_name(name);
        let _turn = self.write_turn().await?;
        let done = sqlx::query(sql)
            .bind(&name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("cannot change the user", e))?;
        if done.rows_affected() == 0 {
            return Err(self.error(
                &format!("user {name:?}"),
                "no such user (vlinder user list names them)",
            ));
        }
        self.end_sessions(&name).await
    }

    /// Ends the user's sessions and forgets their devices.
    async fn end_sessions(&self, name: &str) -> Result<()> {
        for table in ["sessions", "devices"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_name = $1"))
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error("cannot end the user's sessions", e))?;
        }
        Ok(())
    }

    /// The user a device token was given to, if it has not expired.
    async fn device_of(&self, token: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT user_name FROM devices WHERE token_hash = $1 AND expires_at > $2")
                .bind(hashed(token))
                .bind(now())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error("cannot read devices", e))?;
        Ok(row.and_then(|r| r.try_get("user_name").ok()))
    }

    /// Who a session token signs in, if it is known and has not expired.
    pub async fn session(&self, token: &str) -> Result<Option<SignedIn>> {
        let row = sqlx::query(
            "SELECT s.user_name AS name, s.csrf AS csrf, u.role AS role FROM sessions s \
             JOIN users u ON u.name = s.user_name \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
        )
        .bind(hashed(token))
        .bind(now())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error("cannot read sessions", e))?;
        Ok(row.and_then(|row| {
            let role = Role::parse(&row.try_get::<String, _>("role").ok()?)?;
            Some(SignedIn {
                name: row.try_get("name").ok()?,
                role,
                csrf: row.try_get("csrf").ok()?,
            })
        }))
    }

    /// Ends a session.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        let _turn = self.write_turn().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hashed(token))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("cannot end the session", e))?;
        Ok(())
    }
}

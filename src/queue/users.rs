//! Validators and admins: argon2-hashed passwords and sign-in sessions. A session's token is
//! stored hashed, so that a copy of the database signs no one in.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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

/// A new session: the cookie's token (shown once, stored hashed) and who it signs in.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user: SignedIn,
    pub expires_at: i64,
}

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// A random token of 32 bytes, hex.
fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hashed(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Checks a user name: letters, digits, `.`, `_`, `-` and `@`, 1 to 64 of them.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "user name",
            name,
            "1 to 64 letters, digits, '.', '_', '-' or '@'",
        ))
    }
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
        validate_name(name)?;
        if password.chars().count() < MIN_PASSWORD {
            return Err(Error::invalid(
                "password",
                "(not shown)",
                format!("at least {MIN_PASSWORD} characters"),
            ));
        }
        let salt = SaltString::encode_b64(&token().as_bytes()[..16]).expect("16 bytes of salt");
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| self.error("cannot hash the password", e))?
            .to_string();
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
        sqlx::query("DELETE FROM sessions WHERE user_name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("cannot end the user's sessions", e))?;
        Ok(())
    }

    /// Checks a name and password (the hash compared in constant time by argon2; an unknown
    /// name costs a hash too, so that timing does not tell which names exist) and opens a
    /// session of `lifetime_seconds`.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        lifetime_seconds: i64,
    ) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT role, password_hash FROM users WHERE name = $1")
            .bind(name)
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
        let verified = {
            let password = password.to_string();
            tokio::task::spawn_blocking(move || {
                // Hashing is tens of milliseconds of CPU: off the async threads.
                let dummy;
                let hash = match PasswordHash::new(&stored) {
                    Ok(hash) => hash,
                    Err(_) => {
                        dummy = Argon2::default()
                            .hash_password(
                                b"not a password",
                                &SaltString::encode_b64(&[7; 16]).expect("salt"),
                            )
                            .expect("hashing a constant")
                            .to_string();
                        PasswordHash::new(&dummy).expect("a hash just made")
                    }
                };
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
                    && !stored.is_empty()
            })
            .await
            .unwrap_or(false)
        };
        let Some(role) = Role::parse(&role).filter(|_| verified) else {
            return Ok(None);
        };
        let session = Session {
            token: token(),
            user: SignedIn {
                name: name.to_string(),
                role,
                csrf: token(),
            },
            expires_at: now() + lifetime_seconds,
        };
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("cannot clear old sessions", e))?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, csrf, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hashed(&session.token))
        .bind(name)
        .bind(&session.user.csrf)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("cannot store the session", e))?;
        Ok(Some(session))
    }

    /// Who a session token signs in, if it is known and has not expired.
    pub async fn session(&self, token: &str) -> Result<Option<SignedIn>> {
        let row = sqlx::query(
            "SELECT s.user_name AS name, s.csrf AS csrf, u.role AS role FROM sessions s \
             JOIN users u ON u.name = s.user_name WHERE s.token_hash = $1 AND s.expires_at > $2",
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
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hashed(token))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error("cannot end the session", e))?;
        Ok(())
    }
}

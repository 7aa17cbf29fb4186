//! The review queue: records, their verdicts and the validators' decisions in a database that
//! lasts (SQLite by default, PostgreSQL for many machines), filled by `vlinder queue import`,
//! worked through on `vlinder serve --database` and read out by `vlinder queue export`.
//!
//! [`database`] opens and migrates it, [`store`] keeps records and decisions, [`users`] the
//! validators and their sessions, [`import`] and [`export`] move records in and out.

pub mod database;
pub mod export;
pub mod import;
pub mod store;
pub mod users;

pub use database::Database;
pub use store::{Decision, DecisionKind, DecisionRefused, NewDecision, QueueEntry, QueueFilter};
pub use users::Role;

/// The database the queue commands use unless told otherwise: a SQLite file in the current
/// folder.
pub const DEFAULT_DATABASE: &str = "vlinder-queue.db";

/// A runtime for the database's work in the synchronous commands.
pub fn runtime() -> crate::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Database {
            database: "(none yet)".into(),
            reason: format!("cannot start the database's runtime: {e}"),
        })
}

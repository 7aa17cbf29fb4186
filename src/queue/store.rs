//! Records, their verdicts and the validators' decisions in the queue's database.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::database::{Database, now};
use crate::Result;
use crate::check::CheckedRecord;

/// What a validator decided about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The claimed species is right.
    Confirm,
    /// The photo shows another species, named in the decision.
    Correct,
    /// The photo does not tell.
    CannotTell,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Confirm => "confirm",
            DecisionKind::Correct => "correct",
            DecisionKind::CannotTell => "cannot_tell",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Confirm, Self::Correct, Self::CannotTell]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// One entry of a record's decision log, with what the model said when it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub record_id: String,
    /// 1 for a record's first decision, 2 for the one that replaced it, ...
    pub seq: i64,
    pub validator: String,
    /// Seconds since 1970.
    pub decided_at: i64,
    pub decision: DecisionKind,
    /// The species the validator named (a correction), or the claimed one (a confirmation).
    pub species: Option<String>,
    pub comment: Option<String>,
    pub model: String,
    pub model_verdict: String,
    pub model_predicted: Option<String>,
    pub model_probability: Option<f64>,
}

/// A record as the queue lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: String,
    /// The line of the records CSV it came from.
    pub line: i64,
    /// The photo's path or URL as the CSV gave it.
    pub photo: String,
    pub claimed: String,
    pub observed_on: Option<String>,
    pub verdict: String,
    pub predicted: Option<String>,
    pub predicted_probability: Option<f64>,
    pub claimed_probability: Option<f64>,
    /// The probability that the claim is wrong; the queue is ordered by it, highest first
    /// (records that could not be checked have -1 and come last).
    pub doubt: f64,
    pub model: String,
    /// How many decisions the record has had; the next must say it replaces the last.
    pub decisions: i64,
    pub decision: Option<DecisionKind>,
    pub decided_species: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
}

/// A record with everything the model said and every decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    #[serde(flatten)]
    pub entry: QueueEntry,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// The check's result as `check.json` has it (ranking, photo-alone ranking, flags,
    /// unknown-ness, warnings, error).
    pub result: serde_json::Value,
    pub history: Vec<Decision>,
}

/// Which records the queue shows, and from where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueFilter {
    pub verdict: Option<String>,
    pub claimed: Option<String>,
    /// Observed on or after this date (YYYY-MM-DD).
    pub from: Option<String>,
    /// Observed on or before this date.
    pub to: Option<String>,
    /// Only records with (true) or without (false) a decision.
    pub decided: Option<bool>,
    /// The page starts after this record (its doubt and id), as the last page ended.
    pub after: Option<(f64, String)>,
}

/// The columns a queue entry is read from.
const ENTRY: &str = "id, line, photo, claimed, observed_on, verdict, predicted, predicted_probability, \
     claimed_probability, doubt, model, decisions, decision, decided_species, decided_by, decided_at";

fn entry(row: &AnyRow) -> std::result::Result<QueueEntry, sqlx::Error> {
    Ok(QueueEntry {
        id: row.try_get("id")?,
        line: row.try_get("line")?,
        photo: row.try_get("photo")?,
        claimed: row.try_get("claimed")?,
        observed_on: row.try_get("observed_on")?,
        verdict: row.try_get("verdict")?,
        predicted: row.try_get("predicted")?,
        predicted_probability: row.try_get("predicted_probability")?,
        claimed_probability: row.try_get("claimed_probability")?,
        doubt: row.try_get("doubt")?,
        model: row.try_get("model")?,
        decisions: row.try_get("decisions")?,
        decision: row
            .try_get::<Option<String>, _>("decision")?
            .and_then(|d| DecisionKind::parse(&d)),
        decided_species: row.try_get("decided_species")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
    })
}

/// What becomes of a record that is already stored, when it is imported again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Checked by this model: nothing to do.
    ByThisModel,
    /// Checked by another model: re-checked only with `--recheck`.
    ByAnotherModel,
    /// Its photo could not be read last time: checked again.
    Failed,
}

/// A decision a validator asks to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDecision {
    pub decision: DecisionKind,
    /// The species a correction names.
    #[serde(default)]
    pub species: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// How many decisions the validator saw on the record (0 for none): if another was stored
    /// meanwhile, this one is refused rather than overwriting it.
    #[serde(default)]
    pub replaces: i64,
}

/// Why a decision was not stored.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionRefused {
    NoSuchRecord,
    /// Someone else decided first; their decision.
    Conflict(Box<Decision>),
    /// `replaces` named more decisions than the record has.
    Stale {
        decisions: i64,
    },
}

impl Database {
    /// How each of `ids` is stored already, if it is.
    pub async fn stored(
        &self,
        ids: &[&str],
        model: &str,
    ) -> Result<std::collections::HashMap<String, Stored>> {
        let mut found = std::collections::HashMap::new();
        // A few hundred parameters a statement: well inside both servers' limits.
        for part in ids.chunks(256) {
            let marks: Vec<String> = (1..=part.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, model, verdict FROM records WHERE id IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in part {
                query = query.bind(*id);
            }
            let rows = query
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.error("cannot look up records", e))?;
            for row in rows {
                let get = |c: &str| row.try_get::<String, _>(c).unwrap_or_default();
                let state = if get("verdict") == "error" {
                    Stored::Failed
                } else if get("model") == model {
                    Stored::ByThisModel
                } else {
                    Stored::ByAnotherModel
                };
                found.insert(get("id"), state);
            }
        }
        Ok(found)
    }

    /// Stores checked records in one transaction: new ones are added, ones stored before are
    /// replaced only when they failed or another model checked them (the caller decides which
    /// to pass). Decisions are kept.
    pub async fn store(&self, records: &[CheckedRecord], model: &str) -> Result<()> {
        let (_turn, mut tx) = self.begin_write().await?;
        let checked_at = now();
        // Many rows a statement: one round trip to PostgreSQL for each 50 records instead of
        // each record (16 parameters a row, 800 a statement, inside both servers' limits).
        for part in records.chunks(50) {
            let rows: Vec<String> = (0..part.len())
                .map(|r| {
                    let marks: Vec<String> = (1..=16).map(|c| format!("${}", r * 16 + c)).collect();
                    format!("({})", marks.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO records (id, line, photo, claimed, observed_on, latitude, longitude, \
                 model, verdict, predicted, predicted_probability, claimed_probability, doubt, \
                 result, thumbnail, checked_at) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET line = excluded.line, photo = excluded.photo, \
                 claimed = excluded.claimed, observed_on = excluded.observed_on, \
                 latitude = excluded.latitude, longitude = excluded.longitude, \
                 model = excluded.model, verdict = excluded.verdict, \
                 predicted = excluded.predicted, \
                 predicted_probability = excluded.predicted_probability, \
                 claimed_probability = excluded.claimed_probability, doubt = excluded.doubt, \
                 result = excluded.result, thumbnail = excluded.thumbnail, \
                 checked_at = excluded.checked_at \
                 WHERE records.verdict = 'error' OR records.model <> excluded.model \
                 RETURNING id",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for r in part {
                let top = r.ranking.first();
                let (verdict, doubt) = match &r.verdict {
                    Some(v) => (v.label().to_string(), r.doubt),
                    None => ("error".to_string(), -1.0),
                };
                let result = serde_json::to_string(r).expect("a checked record serialises");
                query = query
                    .bind(r.record.id.clone())
                    .bind(r.record.row as i64)
                    // The photo the verdict used first; every photo is in `result`.
                    .bind(
                        r.photos
                            .iter()
                            .find(|p| p.used)
                            .map(|p| p.photo.clone())
                            .or_else(|| r.record.photos.first().cloned())
                            .unwrap_or_default(),
                    )
                    // Filtered by the species the name was understood as, however written.
                    .bind(
                        r.understood
                            .as_ref()
                            .and_then(|u| u.species.clone())
                            .unwrap_or_else(|| r.record.claimed.trim().to_string()),
                    )
                    .bind(r.record.context.date.map(|d| d.to_string()))
                    .bind(r.record.context.latitude)
                    .bind(r.record.context.longitude)
                    .bind(model.to_string())
                    .bind(verdict)
                    .bind(top.map(|t| t.species.clone()))
                    .bind(top.map(|t| t.probability as f64))
                    .bind(r.claimed_probability)
                    .bind(doubt)
                    .bind(result)
                    .bind(r.thumbnail.clone())
                    .bind(checked_at);
            }
            let written: std::collections::HashSet<String> = query
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.error("cannot store a batch of records", e))?
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| self.error("cannot store a batch of records", e))?;
            let written: Vec<&CheckedRecord> = part
                .iter()
                .filter(|r| written.contains(&r.record.id))
                .collect();
            self.store_photos(&mut tx, &written).await?;
        }
        tx.commit()
            .await
            .map_err(|e| self.error("cannot commit a batch of records", e))
    }

    /// Replaces the photos of `records` (just written) by those each has now: every photo's
    /// thumbnail for a record with several, none for a record with one.
    async fn store_photos(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        records: &[&CheckedRecord],
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let marks: Vec<String> = (1..=records.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "DELETE FROM record_photos WHERE record_id IN ({})",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for r in records {
            query = query.bind(r.record.id.clone());
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(|e| self.error("cannot replace a record's photos", e))?;
        let photos: Vec<(&str, i64, &Vec<u8>)> = records
            .iter()
            .filter(|r| r.photos.len() > 1)
            .flat_map(|r| {
                r.photos.iter().enumerate().filter_map(|(seq, p)| {
                    let thumbnail = p.thumbnail.as_ref()?;
                    Some((r.record.id.as_str(), seq as i64, thumbnail))
                })
            })
            .collect();
        for part in photos.chunks(100) {
            let rows: Vec<String> = (0..part.len())
                .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
                .collect();
            let sql = format!(
                "INSERT INTO record_photos (record_id, seq, thumbnail) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (id, seq, thumbnail) in part {
                query = query
                    .bind(id.to_string())
                    .bind(*seq)
                    .bind((*thumbnail).clone());
            }
            query
                .execute(&mut **tx)
                .await
                .map_err(|e| self.error("cannot store a record's photos", e))?;
        }
        Ok(())
    }

    /// A page of the queue, most doubtful first: at most `limit` records (1 to 500).
    pub async fn queue(&self, filter: &QueueFilter, limit: i64) -> Result<Vec<QueueEntry>> {
        enum Param {
            Text(String),
            Real(f64),
        }
        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        for (template, value) in [
            ("verdict = ", &filter.verdict),
            ("claimed = ", &filter.claimed),
            ("observed_on >= ", &filter.from),
            ("observed_on <= ", &filter.to),
        ] {
            if let Some(value) = value {
                params.push(Param::Text(value.clone()));
                conditions.push(format!("{template}${}", params.len()));
            }
        }
        match filter.decided {
            Some(true) => conditions.push("decisions > 0".into()),
            Some(false) => conditions.push("decisions = 0".into()),
            None => {}
        }
        if let Some((doubt, id)) = &filter.after {
            params.push(Param::Real(*doubt));
            params.push(Param::Text(id.clone()));
            let (d, i) = (params.len() - 1, params.len());
            conditions.push(format!("(doubt < ${d} OR (doubt = ${d} AND id > ${i}))"));
        }
        let sql = format!(
            "SELECT {ENTRY} FROM records {} ORDER BY doubt DESC, id LIMIT {}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            limit.clamp(1, 500)
        );
        let mut query = sqlx::query(&sql);
        for param in params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Real(real) => query.bind(real),
            };
        }
        self.read_rows(query, entry, "cannot read the queue").await
    }

    /// One record with its result and decisions.
    pub async fn record(&self, id: &str) -> Result<Option<RecordView>> {
        let sql = format!("SELECT {ENTRY}, latitude, longitude, result FROM records WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("cannot read a record", e))?
        else {
            return Ok(None);
        };
        let read = |row: &AnyRow| -> std::result::Result<_, sqlx::Error> {
            Ok((
                entry(row)?,
                row.try_get::<Option<f64>, _>("latitude")?,
                row.try_get::<Option<f64>, _>("longitude")?,
                row.try_get::<String, _>("result")?,
            ))
        };
        let (entry, latitude, longitude, result) =
            read(&row).map_err(|e| self.error("cannot read a record", e))?;
        Ok(Some(RecordView {
            entry,
            latitude,
            longitude,
            result: serde_json::from_str(&result).unwrap_or(serde_json::Value::Null),
            history: self.history(id).await?,
        }))
    }

    /// The record's thumbnail (JPEG), if it has one.
    pub async fn thumbnail(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT thumbnail FROM records WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("cannot read a thumbnail", e))?;
        Ok(row.and_then(|r| r.try_get::<Option<Vec<u8>>, _>("thumbnail").ok().flatten()))
    }

    /// The thumbnail (JPEG) of the record's photo `seq`, counted from 0 in the order the
    /// record gives them, if it has one.
    pub async fn photo(&self, id: &str, seq: i64) -> Result<Option<Vec<u8>>> {
        let row =
            sqlx::query("SELECT thumbnail FROM record_photos WHERE record_id = $1 AND seq = $2")
                .bind(id)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error("cannot read a photo", e))?;
        match row {
            Some(row) => Ok(Some(
                row.try_get::<Vec<u8>, _>("thumbnail")
                    .map_err(|e| self.error("cannot read a photo", e))?,
            )),
            // A record with one photo keeps it with the record.
            None if seq == 0 => self.thumbnail(id).await,
            None => Ok(None),
        }
    }

    /// Every decision on a record, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<Decision>> {
        let sql = format!("SELECT {DECISION} FROM decisions WHERE record_id = $1 ORDER BY seq");
        self.read_rows(
            sqlx::query(&sql).bind(id),
            decision,
            "cannot read decisions",
        )
        .await
    }

    /// The rows `query` returns, each read by `read`; `what` says what failed.
    async fn read_rows<'q, T>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        read: fn(&AnyRow) -> std::result::Result<T, sqlx::Error>,
        what: &str,
    ) -> Result<Vec<T>> {
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(what, e))?;
        rows.iter()
            .map(read)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.error(what, e))
    }

    /// Stores a validator's decision, unless the record has had another since the validator
    /// looked (`replaces` is not its number of decisions): then the other decision is returned
    /// and nothing is written. The check and the write are one statement, so two validators
    /// deciding at once cannot both succeed.
    pub async fn decide(
        &self,
        id: &str,
        validator: &str,
        new: &NewDecision,
    ) -> Result<std::result::Result<Decision, DecisionRefused>> {
        let (turn, mut tx) = self.begin_write().await?;
        let decided_at = now();
        let seq = new.replaces + 1;
        let updated = sqlx::query(
            "UPDATE records SET decisions = $1, decision = $2, decided_species = $3, \
             decided_by = $4, decided_at = $5 WHERE id = $6 AND decisions = $7",
        )
        .bind(seq)
        .bind(new.decision.as_str())
        .bind(new.species.clone())
        .bind(validator)
        .bind(decided_at)
        .bind(id)
        .bind(new.replaces)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error("cannot store a decision", e))?;
        if updated.rows_affected() == 0 {
            drop(tx);
            drop(turn);
            return self.refusal(id, new.replaces).await.map(Err);
        }
        let row = sqlx::query(
            "SELECT model, verdict, predicted, predicted_probability FROM records WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.error("cannot read a record", e))?;
        let said = |c: &str| row.try_get::<Option<String>, _>(c).ok().flatten();
        let decision = Decision {
            record_id: id.to_string(),
            seq,
            validator: validator.to_string(),
            decided_at,
            decision: new.decision,
            species: new.species.clone(),
            comment: new.comment.clone(),
            model: said("model").unwrap_or_default(),
            model_verdict: said("verdict").unwrap_or_default(),
            model_predicted: said("predicted"),
            model_probability: row
                .try_get::<Option<f64>, _>("predicted_probability")
                .ok()
                .flatten(),
        };
        sqlx::query(
            "INSERT INTO decisions (record_id, seq, validator, decided_at, decision, species, \
             comment, model, model_verdict, model_predicted, model_probability) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id)
        .bind(seq)
        .bind(validator)
        .bind(decided_at)
        .bind(decision.decision.as_str())
        .bind(decision.species.clone())
        .bind(decision.comment.clone())
        .bind(decision.model.clone())
        .bind(decision.model_verdict.clone())
        .bind(decision.model_predicted.clone())
        .bind(decision.model_probability)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error("cannot log a decision", e))?;
        tx.commit()
            .await
            .map_err(|e| self.error("cannot commit a decision", e))?;
        Ok(Ok(decision))
    }

    /// Why a decision that replaces `replaces` decisions was not stored on record `id`.
    async fn refusal(&self, id: &str, replaces: i64) -> Result<DecisionRefused> {
        let Some(row) = sqlx::query("SELECT decisions FROM records WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error("cannot read a record", e))?
        else {
            return Ok(DecisionRefused::NoSuchRecord);
        };
        let decisions: i64 = row
            .try_get("decisions")
            .map_err(|e| self.error("cannot read a record", e))?;
        if decisions <= replaces {
            return Ok(DecisionRefused::Stale { decisions });
        }
        let sql = format!("SELECT {DECISION} FROM decisions WHERE record_id = $1 AND seq = $2");
        let last = sqlx::query(&sql)
            .bind(id)
            .bind(decisions)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error("cannot read decisions", e))?;
        let last = decision(&last).map_err(|e| self.error("cannot read decisions", e))?;
        Ok(DecisionRefused::Conflict(Box::new(last)))
    }

    /// Every record in queue order, read a page at a time (an export of any size in constant
    /// memory).
    pub async fn for_each_record(
        &self,
        mut each: impl FnMut(&QueueEntry) -> Result<()>,
    ) -> Result<()> {
        let mut pages = std::pin::pin!(self.clone().pages());
        while let Some(page) = futures_util::StreamExt::next(&mut pages).await {
            for entry in &page? {
                each(entry)?;
            }
        }
        Ok(())
    }

    /// Every record in queue order as a stream of pages of 500; it ends after the last page,
    /// or after the first error.
    pub fn pages(self) -> impl futures_util::Stream<Item = Result<Vec<QueueEntry>>> + Send {
        let start = (self, Some(QueueFilter::default()));
        futures_util::stream::unfold(start, |(database, filter)| async move {
            let mut filter = filter?;
            match database.queue(&filter, 500).await {
                Ok(page) => {
                    let last = page.last()?;
                    filter.after = Some((last.doubt, last.id.clone()));
                    Some((Ok(page), (database, Some(filter))))
                }
                Err(e) => Some((Err(e), (database, None))),
            }
        })
    }

    /// The photo and species of every record whose latest decision confirms its claim or
    /// corrects it.
    pub async fn reviewed(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT photo, claimed, decision, decided_species FROM records \
             WHERE decision IN ('confirm', 'correct') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("cannot read the reviewed records", e))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let photo: String = row.try_get("photo").ok()?;
                let species = match row.try_get::<String, _>("decision").ok()?.as_str() {
                    "correct" => row.try_get::<Option<String>, _>("decided_species").ok()??,
                    _ => row.try_get("claimed").ok()?,
                };
                Some((photo, species))
            })
            .collect())
    }

    /// How many records the queue holds.
    pub async fn count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM records")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error("cannot count records", e))?;
        row.try_get::<i64, _>("n")
            .map_err(|e| self.error("cannot count records", e))
    }
}

/// The columns a decision is read from.
const DECISION: &str = "record_id, seq, validator, decided_at, decision, species, comment, \
     model, model_verdict, model_predicted, model_probability";

fn decision(row: &AnyRow) -> std::result::Result<Decision, sqlx::Error> {
    Ok(Decision {
        record_id: row.try_get("record_id")?,
        seq: row.try_get("seq")?,
        validator: row.try_get("validator")?,
        decided_at: row.try_get("decided_at")?,
        decision: DecisionKind::parse(&row.try_get::<String, _>("decision")?)
            .unwrap_or(DecisionKind::CannotTell),
        species: row.try_get("species")?,
        comment: row.try_get("comment")?,
        model: row.try_get("model")?,
        model_verdict: row.try_get("model_verdict")?,
        model_predicted: row.try_get("model_predicted")?,
        model_probability: row.try_get("model_probability")?,
    })
}

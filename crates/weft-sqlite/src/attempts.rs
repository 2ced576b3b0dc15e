//! Queries on `attempts`.
//!
//! Definitions: one row per attempt, keyed by `(execution_id, number)`; the
//! error is the JSON of `weft_core::ErrorInfo`.
//!
//! Invariants: rows change only through `AttemptChange`: `Start` inserts the
//! running attempt, `End` sets how and when that numbered attempt ended.
//! Attempts are removed only with their execution.

use rusqlite::{params, Connection};
use weft_core::{Attempt, AttemptChange, AttemptNumber, AttemptState, Error, Result};

use crate::db::{db_error, from_json, to_json};

fn parse_state(text: &str) -> Result<AttemptState> {
    AttemptState::parse(text)
        .ok_or_else(|| Error::Internal(format!("corrupt attempt state {text:?}")))
}

/// Writes one attempt change of execution `execution_id`.
pub(crate) fn write(conn: &Connection, execution_id: &str, change: &AttemptChange) -> Result<()> {
    match change {
        AttemptChange::Start(attempt) => {
            let error = attempt
                .error
                .as_ref()
                .map(|e| to_json("attempt error", e))
                .transpose()?;
            conn.prepare_cached(
                "INSERT INTO attempts
                    (execution_id, number, worker_id, state, started_at_ms, ended_at_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    execution_id,
                    attempt.number.0,
                    attempt.worker_id,
                    AttemptState::as_str(attempt.state),
                    attempt.started_at_ms,
                    attempt.ended_at_ms,
                    error,
                ])
            })
            .map_err(db_error)?;
        }
        AttemptChange::End {
            number,
            state,
            ended_at_ms,
            error,
        } => {
            let error = error
                .as_ref()
                .map(|e| to_json("attempt error", e))
                .transpose()?;
            let changed = conn
                .prepare_cached(
                    "UPDATE attempts SET state = ?3, ended_at_ms = ?4, error = ?5
                     WHERE execution_id = ?1 AND number = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        execution_id,
                        number.0,
                        AttemptState::as_str(*state),
                        ended_at_ms,
                        error
                    ])
                })
                .map_err(db_error)?;
            if changed != 1 {
                return Err(Error::Internal(format!(
                    "attempt {} of {execution_id} is missing",
                    number.0
                )));
            }
        }
    }
    Ok(())
}

/// Every attempt of an execution, oldest first.
pub(crate) fn list(conn: &Connection, execution_id: &str) -> Result<Vec<Attempt>> {
    type RawAttempt = (u32, String, String, i64, Option<i64>, Option<String>);
    let mut stmt = conn
        .prepare_cached(
            "SELECT number, worker_id, state, started_at_ms, ended_at_ms, error
             FROM attempts WHERE execution_id = ?1 ORDER BY number",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([execution_id], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })
        .map_err(db_error)?;
    let mut attempts = Vec::new();
    for row in rows {
        let (number, worker_id, state, started_at_ms, ended_at_ms, error): RawAttempt =
            row.map_err(db_error)?;
        attempts.push(Attempt {
            number: AttemptNumber(number),
            worker_id,
            state: parse_state(&state)?,
            started_at_ms,
            ended_at_ms,
            error: error
                .map(|text| from_json("attempt error", &text))
                .transpose()?,
        });
    }
    Ok(attempts)
}

/// Deletes every attempt of an execution.
pub(crate) fn delete_all(conn: &Connection, execution_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM attempts WHERE execution_id = ?1")
        .and_then(|mut stmt| stmt.execute([execution_id]))
        .map_err(db_error)?;
    Ok(())
}

//! SQLite persistence: projects, experiments, log rows (with index columns and per-trace
//! aggregates), uploads and attachment metadata.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::merge;
use crate::rowtext::{self, Derived, TopLevel};
use crate::util::now_iso;

/// The object-id columns that, with `id`, form a row's merge key.
const KEY_FIELDS: [&str; 5] = [
    "project_id",
    "experiment_id",
    "dataset_id",
    "prompt_session_id",
    "log_id",
];

/// Bumped when the `rows` table changes shape; older files are migrated on open.
const SCHEMA_VERSION: &str = "2";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE(project_id, name)
);
CREATE TABLE IF NOT EXISTS uploads (
    key TEXT PRIMARY KEY,
    content_type TEXT,
    data BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_tokens (
    key TEXT PRIMARY KEY,
    token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    key TEXT PRIMARY KEY,
    filename TEXT,
    content_type TEXT,
    org_id TEXT,
    status TEXT NOT NULL
);
";

const ROWS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    prompt_session_id TEXT NOT NULL,
    log_id TEXT NOT NULL,
    id TEXT NOT NULL,
    xact_id INTEGER NOT NULL,
    root_span_id TEXT,
    span_id TEXT,
    is_root INTEGER NOT NULL DEFAULT 0,
    name TEXT,
    type TEXT,
    has_error INTEGER NOT NULL DEFAULT 0,
    start REAL,
    end REAL,
    tokens INTEGER NOT NULL DEFAULT 0,
    search TEXT NOT NULL DEFAULT '',
    preview TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL,
    UNIQUE(project_id, experiment_id, dataset_id, prompt_session_id, log_id, id)
);
CREATE INDEX IF NOT EXISTS rows_by_root ON rows(root_span_id);
CREATE INDEX IF NOT EXISTS rows_by_id ON rows(id);
CREATE INDEX IF NOT EXISTS rows_by_experiment ON rows(experiment_id);
CREATE INDEX IF NOT EXISTS rows_by_name ON rows(name);
CREATE INDEX IF NOT EXISTS rows_by_type ON rows(type);
CREATE TABLE IF NOT EXISTS row_metadata (
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS row_metadata_by_kv ON row_metadata(key, value, seq);
CREATE INDEX IF NOT EXISTS row_metadata_by_seq ON row_metadata(seq);
CREATE TABLE IF NOT EXISTS traces (
    root_span_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    log_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    root_row_id TEXT,
    name TEXT,
    type TEXT,
    start REAL,
    end REAL,
    sort_start REAL NOT NULL,
    span_count INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    preview TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_time ON traces(sort_start, first_seq);
CREATE INDEX IF NOT EXISTS traces_by_project ON traces(project_id, sort_start, first_seq);
CREATE INDEX IF NOT EXISTS traces_by_experiment ON traces(experiment_id, sort_start, first_seq);
";

/// Errors from ingesting rows: bad input (400) or a database failure (500).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    /// A row breaks a rule; the message names the row index and the rule.
    #[error("{0}")]
    BadRequest(String),
    /// SQLite failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
}

/// What a successful ingest reports back: every row id in request order and the transaction id
/// stamped on them.
#[derive(Debug, Clone)]
pub(crate) struct Ingested {
    pub row_ids: Vec<String>,
    pub xact_id: String,
}

/// Where a row sits: `(root_span_id, span_id)`.
pub(crate) type SpanLocation = (Option<String>, Option<String>);

/// An upload: `(content_type, bytes)`.
pub(crate) type Upload = (Option<String>, Vec<u8>);

/// Filter for row queries.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowFilter {
    pub project_id: Option<String>,
    pub experiment_id: Option<String>,
    pub root_span_id: Option<String>,
    pub log_id: Option<String>,
}

/// Filters and page of a trace list query. Span conditions (`name`, `span_type`, `metadata`,
/// `text`) match a trace when any of its spans matches all of them.
#[derive(Debug, Default, Clone)]
pub(crate) struct TraceQuery {
    pub project_id: Option<String>,
    pub experiment_id: Option<String>,
    pub name: Option<String>,
    pub span_type: Option<String>,
    /// `Some(true)`: only traces with an errored span; `Some(false)`: only traces without.
    pub error: Option<bool>,
    pub metadata: Vec<(String, String)>,
    /// Case-insensitive substring of any span's input or output text.
    pub text: Option<String>,
    /// Trace start time range, Unix seconds (inclusive).
    pub since: Option<f64>,
    pub until: Option<f64>,
    /// Keyset cursor: traces strictly older than `(sort_start, first_seq)`.
    pub before: Option<(f64, i64)>,
    pub limit: usize,
}

/// One entry of the trace list.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TraceSummary {
    pub root_span_id: String,
    pub project_id: Option<String>,
    pub experiment_id: Option<String>,
    pub log_id: Option<String>,
    pub root_row_id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub span_type: Option<String>,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub duration_ms: Option<f64>,
    pub span_count: i64,
    pub error_count: i64,
    pub tokens: i64,
    pub input_preview: String,
    #[serde(skip)]
    pub cursor: (f64, i64),
}

/// The SQLite store. One connection behind a mutex; every call holds it briefly.
pub(crate) struct Store {
    conn: Mutex<Connection>,
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or(Value::Null)
}

/// A validated incoming row.
struct Incoming {
    key: [String; 6],
    is_merge: bool,
    is_delete: bool,
    row: TopLevel,
}

fn bad(i: usize, rule: impl std::fmt::Display) -> IngestError {
    IngestError::BadRequest(format!("row {i}: {rule}"))
}

/// Checks one row against the backend's rules and splits it at the top level.
fn validate(i: usize, raw: &RawValue) -> Result<Incoming, IngestError> {
    let text = raw.get();
    if !text.starts_with('{') {
        return Err(bad(
            i,
            format!("must be a JSON object (got {})", rowtext::type_name(text)),
        ));
    }
    let depth = rowtext::depth(text);
    if depth > rowtext::MAX_DEPTH {
        return Err(bad(
            i,
            format!(
                "nested {depth} levels deep; at most {} are accepted",
                rowtext::MAX_DEPTH
            ),
        ));
    }
    let row = TopLevel::parse(text).map_err(|e| bad(i, format!("invalid JSON: {e}")))?;
    let id = match row.get("id") {
        None | Some("null") => return Err(bad(i, "'id' is required")),
        Some(raw) => row.get_str("id").filter(|s| !s.is_empty()).ok_or_else(|| {
            bad(
                i,
                format!(
                    "'id' must be a non-empty string (got {})",
                    rowtext::type_name(raw)
                ),
            )
        })?,
    };
    let mut key: [String; 6] = Default::default();
    for (slot, field) in key.iter_mut().zip(KEY_FIELDS) {
        if let Some(raw) = row.get_non_null(field) {
            *slot = row
                .get_str(field)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    bad(
                        i,
                        format!(
                            "'{field}' must be a non-empty string (got {})",
                            rowtext::type_name(raw)
                        ),
                    )
                })?;
        }
    }
    key[5] = id;
    let containers: Vec<&str> = ["experiment_id", "dataset_id", "prompt_session_id"]
        .into_iter()
        .chain((!key[0].is_empty() && key[3].is_empty()).then_some("project_id"))
        .filter(|f| row.get_non_null(f).is_some())
        .collect();
    if containers.len() != 1 {
        return Err(bad(
            i,
            format!(
                "exactly one of experiment_id, dataset_id, prompt_session_id or project_id \
                 (with log_id) must be set (got {})",
                if containers.is_empty() {
                    "none".to_string()
                } else {
                    containers.join(", ")
                }
            ),
        ));
    }
    if let Some(raw) = row.get_non_null("span_parents") {
        if serde_json::from_str::<Vec<String>>(raw).is_err() {
            return Err(bad(
                i,
                "'span_parents' must be null or an array of span id strings",
            ));
        }
    }
    for field in ["span_id", "root_span_id", "created"] {
        if let Some(raw) = row.get_non_null(field) {
            if !raw.starts_with('"') {
                return Err(bad(
                    i,
                    format!(
                        "'{field}' must be a string (got {})",
                        rowtext::type_name(raw)
                    ),
                ));
            }
        }
    }
    if let Some(raw) = row.get_non_null("tags") {
        if serde_json::from_str::<Vec<String>>(raw).is_err() {
            return Err(bad(i, "'tags' must be null or an array of strings"));
        }
    }
    for field in ["metadata", "metrics", "scores", "span_attributes"] {
        if let Some(raw) = row.get_non_null(field) {
            if !raw.starts_with('{') {
                return Err(bad(
                    i,
                    format!(
                        "'{field}' must be an object (got {})",
                        rowtext::type_name(raw)
                    ),
                ));
            }
        }
    }
    let flag = |field: &str| -> Result<bool, IngestError> {
        match row.get_non_null(field) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(raw) => Err(bad(
                i,
                format!(
                    "'{field}' must be a boolean (got {})",
                    rowtext::type_name(raw)
                ),
            )),
        }
    };
    let is_merge = flag("_is_merge")?;
    let is_delete = flag("_object_delete")?;
    Ok(Incoming {
        key,
        is_merge,
        is_delete,
        row,
    })
}

/// Rows for trace aggregation: the trace roots touched by a batch.
type Touched = BTreeSet<String>;

impl Store {
    /// Opens (and creates) the database; `None` = in-memory. A new file is created readable
    /// by its owner only (it holds everything the app logged).
    pub(crate) fn open(path: Option<&Path>) -> Result<Store, rusqlite::Error> {
        let conn = match path {
            Some(p) => {
                restrict_permissions(p);
                let c = Connection::open(p)?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "NORMAL")?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(SCHEMA)?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the rows tables, rebuilding rows stored by an older version.
    fn migrate(&self) -> Result<(), rusqlite::Error> {
        let mut conn = self.conn();
        let version: Option<String> = conn
            .query_row("SELECT v FROM meta WHERE k = 'schema_version'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let has_rows: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'rows'",
            [],
            |r| r.get(0),
        )?;
        let tx = conn.transaction()?;
        let old: Vec<String> = if has_rows && version.as_deref() != Some(SCHEMA_VERSION) {
            let old = {
                let mut stmt = tx.prepare("SELECT data FROM rows ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.execute_batch("DROP TABLE rows; DROP TABLE IF EXISTS traces;")?;
            old
        } else {
            Vec::new()
        };
        tx.execute_batch(ROWS_SCHEMA)?;
        tx.execute(
            "INSERT INTO meta (k, v) VALUES ('schema_version', ?1)
             ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            [SCHEMA_VERSION],
        )?;
        tx.commit()?;
        drop(conn);
        if !old.is_empty() {
            let raws: Vec<Box<RawValue>> = old
                .into_iter()
                .filter_map(|t| RawValue::from_string(t).ok())
                .collect();
            // Rows written before validation existed are kept even when they break a rule.
            if let Err(IngestError::Db(e)) = self.ingest_with(&raws, false) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads a meta value, setting it to `default()` when absent.
    pub(crate) fn meta_get_or_init(
        &self,
        key: &str,
        default: impl FnOnce() -> String,
    ) -> Result<String, rusqlite::Error> {
        let conn = self.conn();
        let existing: Option<String> = conn
            .query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))
            .optional()?;
        if let Some(v) = existing {
            return Ok(v);
        }
        let v = default();
        conn.execute("INSERT INTO meta (k, v) VALUES (?1, ?2)", params![key, v])?;
        Ok(v)
    }

    // ---------------------------------------------------------------- projects

    fn project_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
        Ok(json!({
            "id": r.get::<_, String>(0)?,
            "name": r.get::<_, String>(1)?,
            "org_id": r.get::<_, String>(2)?,
            "created": r.get::<_, String>(3)?,
        }))
    }

    /// Returns the project with this name, creating it when needed.
    pub(crate) fn project_get_or_create(
        &self,
        name: &str,
        org_id: &str,
    ) -> Result<Value, rusqlite::Error> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT id, name, org_id, created FROM projects WHERE name = ?1",
                [name],
                Self::project_row,
            )
            .optional()?;
        if let Some(p) = found {
            return Ok(p);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let created = now_iso();
        conn.execute(
            "INSERT INTO projects (id, name, org_id, created) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, org_id, created],
        )?;
        Ok(json!({"id": id, "name": name, "org_id": org_id, "created": created}))
    }

    /// Looks a project up by id.
    pub(crate) fn project_by_id(&self, id: &str) -> Result<Option<Value>, rusqlite::Error> {
        self.conn()
            .query_row(
                "SELECT id, name, org_id, created FROM projects WHERE id = ?1",
                [id],
                Self::project_row,
            )
            .optional()
    }

    /// Looks a project up by name.
    pub(crate) fn project_by_name(&self, name: &str) -> Result<Option<Value>, rusqlite::Error> {
        self.conn()
            .query_row(
                "SELECT id, name, org_id, created FROM projects WHERE name = ?1",
                [name],
                Self::project_row,
            )
            .optional()
    }

    /// All projects in creation order.
    pub(crate) fn projects(&self) -> Result<Vec<Value>, rusqlite::Error> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id, name, org_id, created FROM projects ORDER BY seq")?;
        let rows = stmt.query_map([], Self::project_row)?;
        rows.collect()
    }

    // ------------------------------------------------------------- experiments

    /// Registers an experiment.
    ///
    /// `name = None` generates a name. With `ensure_new`, an existing name gets a `-<n>` suffix;
    /// without it, an existing experiment of that name is returned as is.
    pub(crate) fn experiment_register(
        &self,
        project_id: &str,
        name: Option<&str>,
        ensure_new: bool,
        extra: Map<String, Value>,
    ) -> Result<Value, rusqlite::Error> {
        let conn = self.conn();
        let lookup = |n: &str| -> rusqlite::Result<Option<String>> {
            conn.query_row(
                "SELECT data FROM experiments WHERE project_id = ?1 AND name = ?2",
                params![project_id, n],
                |r| r.get(0),
            )
            .optional()
        };
        let (base, must_be_new) = match name {
            Some(n) if !n.is_empty() => (n.to_string(), ensure_new),
            _ => ("experiment".to_string(), true),
        };
        if let Some(existing) = lookup(&base)? {
            if !must_be_new {
                return Ok(parse(&existing));
            }
        }
        let mut final_name = base.clone();
        let mut n = 0u64;
        while lookup(&final_name)?.is_some() {
            n += 1;
            final_name = format!("{base}-{n}");
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut obj = Map::new();
        obj.insert("id".into(), Value::String(id.clone()));
        obj.insert("name".into(), Value::String(final_name.clone()));
        obj.insert("project_id".into(), Value::String(project_id.to_string()));
        obj.insert("created".into(), Value::String(now_iso()));
        for (k, v) in extra {
            if !obj.contains_key(&k) {
                obj.insert(k, v);
            }
        }
        let obj = Value::Object(obj);
        conn.execute(
            "INSERT INTO experiments (id, project_id, name, data) VALUES (?1, ?2, ?3, ?4)",
            params![id, project_id, final_name, obj.to_string()],
        )?;
        Ok(obj)
    }

    /// Looks an experiment up by id.
    pub(crate) fn experiment_by_id(&self, id: &str) -> Result<Option<Value>, rusqlite::Error> {
        let data: Option<String> = self
            .conn()
            .query_row("SELECT data FROM experiments WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(data.map(|d| parse(&d)))
    }

    /// Experiments in creation order, optionally filtered by project and/or name.
    pub(crate) fn experiments(
        &self,
        project_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Value>, rusqlite::Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT data FROM experiments
             WHERE (?1 IS NULL OR project_id = ?1) AND (?2 IS NULL OR name = ?2)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![project_id, name], |r| r.get::<_, String>(0))?;
        rows.map(|r| r.map(|d| parse(&d))).collect()
    }

    // -------------------------------------------------------------------- rows

    /// Stores a batch of `/logs3` rows in one transaction, applying the server-side merge, and
    /// stamps every written row with one new `_xact_id`. Every row is validated first: one bad
    /// row rejects the whole batch and nothing is stored.
    ///
    /// Merges and index derivation build whole JSON trees: call on a
    /// [`rowtext::run_deep`] thread.
    pub(crate) fn ingest(&self, rows: &[Box<RawValue>]) -> Result<Ingested, IngestError> {
        self.ingest_with(rows, true)
    }

    fn ingest_with(&self, rows: &[Box<RawValue>], strict: bool) -> Result<Ingested, IngestError> {
        let mut incoming = Vec::with_capacity(rows.len());
        for (i, raw) in rows.iter().enumerate() {
            match validate(i, raw) {
                Ok(row) => incoming.push(row),
                Err(e) if strict => return Err(e),
                Err(e) => eprintln!("braintrust-devserver: dropping stored row on upgrade: {e}"),
            }
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let xact = next_xact_id(&tx)?;
        let xact_raw = RawValue::from_string(format!("\"{xact}\"")).expect("a JSON string");
        let mut touched = Touched::new();
        let mut row_ids = Vec::with_capacity(incoming.len());
        for inc in incoming {
            let k = &inc.key;
            row_ids.push(k[5].clone());
            let existing: Option<(i64, String, Option<String>)> = tx
                .prepare_cached(
                    "SELECT seq, data, root_span_id FROM rows WHERE project_id = ?1
                     AND experiment_id = ?2 AND dataset_id = ?3 AND prompt_session_id = ?4
                     AND log_id = ?5 AND id = ?6",
                )?
                .query_row(params![k[0], k[1], k[2], k[3], k[4], k[5]], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if let Some((_, _, Some(root))) = &existing {
                touched.insert(root.clone());
            }
            if inc.is_delete {
                if let Some((seq, _, _)) = existing {
                    tx.prepare_cached("DELETE FROM rows WHERE seq = ?1")?
                        .execute([seq])?;
                    tx.prepare_cached("DELETE FROM row_metadata WHERE seq = ?1")?
                        .execute([seq])?;
                }
                continue;
            }
            let mut row = match (&existing, inc.is_merge) {
                (Some((_, stored, _)), true) => merged(stored, &inc.row)?,
                _ => inc.row,
            };
            row.remove(merge::CONTROL_KEYS);
            row.remove(&["_xact_id"]);
            row.set("_xact_id", xact_raw.clone());
            let d = rowtext::derive(&row);
            let data = row.to_text();
            if let Some(root) = &d.root_span_id {
                touched.insert(root.clone());
            }
            let seq: i64 = tx
                .prepare_cached(
                    "INSERT INTO rows (project_id, experiment_id, dataset_id, prompt_session_id,
                         log_id, id, xact_id, root_span_id, span_id, is_root, name, type,
                         has_error, start, end, tokens, search, preview, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                             ?16, ?17, ?18, ?19)
                     ON CONFLICT (project_id, experiment_id, dataset_id, prompt_session_id,
                                  log_id, id)
                     DO UPDATE SET xact_id = excluded.xact_id,
                         root_span_id = excluded.root_span_id, span_id = excluded.span_id,
                         is_root = excluded.is_root, name = excluded.name, type = excluded.type,
                         has_error = excluded.has_error, start = excluded.start,
                         end = excluded.end, tokens = excluded.tokens, search = excluded.search,
                         preview = excluded.preview, data = excluded.data
                     RETURNING seq",
                )?
                .query_row(
                    params![
                        k[0],
                        k[1],
                        k[2],
                        k[3],
                        k[4],
                        k[5],
                        xact,
                        d.root_span_id,
                        d.span_id,
                        d.is_root,
                        d.name,
                        d.span_type,
                        d.has_error,
                        d.start,
                        d.end,
                        d.tokens,
                        d.search,
                        d.preview,
                        data
                    ],
                    |r| r.get(0),
                )?;
            write_metadata(&tx, seq, &d, existing.is_some())?;
        }
        for root in &touched {
            aggregate_trace(&tx, root)?;
        }
        tx.commit()?;
        Ok(Ingested {
            row_ids,
            xact_id: xact.to_string(),
        })
    }

    /// Stored rows matching the filter, in first-insert order, as stored JSON text.
    pub(crate) fn rows_text(&self, f: &RowFilter) -> Result<Vec<String>, rusqlite::Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT data FROM rows
             WHERE (?1 IS NULL OR project_id = ?1
                    OR experiment_id IN (SELECT id FROM experiments WHERE project_id = ?1))
               AND (?2 IS NULL OR experiment_id = ?2)
               AND (?3 IS NULL OR root_span_id = ?3)
               AND (?4 IS NULL OR log_id = ?4)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(
            params![f.project_id, f.experiment_id, f.root_span_id, f.log_id],
            |r| r.get::<_, String>(0),
        )?;
        rows.collect()
    }

    /// Distinct trace ids in order of their first stored row.
    pub(crate) fn trace_ids(&self) -> Result<Vec<String>, rusqlite::Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT root_span_id FROM traces ORDER BY first_seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    }

    /// The stored text of the first row with this `id` (under any object).
    pub(crate) fn row_text(&self, id: &str) -> Result<Option<String>, rusqlite::Error> {
        self.conn()
            .query_row(
                "SELECT data FROM rows WHERE id = ?1 ORDER BY seq LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()
    }

    /// `(root_span_id, span_id)` of the first row with this `id` (under any object).
    pub(crate) fn span_location(&self, id: &str) -> Result<Option<SpanLocation>, rusqlite::Error> {
        self.conn()
            .query_row(
                "SELECT root_span_id, span_id FROM rows WHERE id = ?1 ORDER BY seq LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }

    /// Number of stored (merged) rows.
    pub(crate) fn row_count(&self) -> Result<usize, rusqlite::Error> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// One page of the trace list, newest first.
    pub(crate) fn traces(&self, q: &TraceQuery) -> Result<Vec<TraceSummary>, rusqlite::Error> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM traces t WHERE 1");
        use rusqlite::types::Value as V;
        // Plain `?` placeholders bind in push order.
        let mut args: Vec<V> = Vec::new();
        let mut cond = |sql: &mut String, clause: &str, values: Vec<V>| {
            sql.push_str(clause);
            args.extend(values);
        };
        if let Some(p) = &q.project_id {
            cond(&mut sql, " AND t.project_id = ?", vec![V::Text(p.clone())]);
        }
        if let Some(e) = &q.experiment_id {
            cond(
                &mut sql,
                " AND t.experiment_id = ?",
                vec![V::Text(e.clone())],
            );
        }
        match q.error {
            Some(true) => sql.push_str(" AND t.error_count > 0"),
            Some(false) => sql.push_str(" AND t.error_count = 0"),
            None => {}
        }
        if let Some(s) = q.since {
            cond(&mut sql, " AND t.sort_start >= ?", vec![V::Real(s)]);
        }
        if let Some(u) = q.until {
            cond(&mut sql, " AND t.sort_start <= ?", vec![V::Real(u)]);
        }
        if let Some((start, seq)) = q.before {
            cond(
                &mut sql,
                " AND (t.sort_start < ? OR (t.sort_start = ? AND t.first_seq < ?))",
                vec![V::Real(start), V::Real(start), V::Integer(seq)],
            );
        }
        let span_filter =
            q.name.is_some() || q.span_type.is_some() || q.text.is_some() || !q.metadata.is_empty();
        if span_filter {
            // A selective metadata condition drives the query from its index; otherwise traces
            // are walked newest first and checked one by one, which stops after one page.
            let by_metadata = self.metadata_is_selective(&q.metadata)?;
            if by_metadata {
                sql.push_str(" AND t.root_span_id IN (SELECT r.root_span_id FROM rows r WHERE 1");
            } else {
                // Pinned to the per-trace index: the planner otherwise scans every row with a
                // matching name for each trace.
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM rows r INDEXED BY rows_by_root
                                  WHERE r.root_span_id = t.root_span_id",
                );
            }
            if let Some(n) = &q.name {
                cond(&mut sql, " AND r.name = ?", vec![V::Text(n.clone())]);
            }
            if let Some(ty) = &q.span_type {
                cond(&mut sql, " AND r.type = ?", vec![V::Text(ty.clone())]);
            }
            if let Some(text) = &q.text {
                let pattern = format!("%{}%", like_escape(&text.to_lowercase()));
                cond(
                    &mut sql,
                    " AND r.search LIKE ? ESCAPE '\\'",
                    vec![V::Text(pattern)],
                );
            }
            let meta_clause = if by_metadata {
                " AND r.seq IN (SELECT m.seq FROM row_metadata m WHERE m.key = ? AND m.value = ?)"
            } else {
                " AND EXISTS (SELECT 1 FROM row_metadata m INDEXED BY row_metadata_by_seq
                              WHERE m.seq = r.seq AND m.key = ? AND m.value = ?)"
            };
            for (k, v) in &q.metadata {
                cond(
                    &mut sql,
                    meta_clause,
                    vec![V::Text(k.clone()), V::Text(v.clone())],
                );
            }
            sql.push(')');
        }
        sql.push_str(" ORDER BY t.sort_start DESC, t.first_seq DESC LIMIT ?");
        args.push(V::Integer(q.limit.min(i64::MAX as usize) as i64));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), summary_from_row)?;
        rows.collect()
    }

    /// True when some metadata condition matches few rows (then it is the best index to start
    /// from).
    fn metadata_is_selective(
        &self,
        metadata: &[(String, String)],
    ) -> Result<bool, rusqlite::Error> {
        const FEW_ROWS: i64 = 5_000;
        let conn = self.conn();
        let mut count = conn.prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM row_metadata WHERE key = ?1 AND value = ?2
                                    LIMIT ?3)",
        )?;
        for (k, v) in metadata {
            let n: i64 = count.query_row(params![k, v, FEW_ROWS], |r| r.get(0))?;
            if n < FEW_ROWS {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The list entry of one trace.
    pub(crate) fn trace_summary(
        &self,
        root_span_id: &str,
    ) -> Result<Option<TraceSummary>, rusqlite::Error> {
        self.conn()
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM traces WHERE root_span_id = ?1"),
                [root_span_id],
                summary_from_row,
            )
            .optional()
    }

    // ----------------------------------------------------------------- uploads

    /// Stores uploaded bytes under `key` (replacing any earlier upload).
    pub(crate) fn upload_put(
        &self,
        key: &str,
        content_type: Option<&str>,
        data: &[u8],
    ) -> Result<(), rusqlite::Error> {
        self.conn().execute(
            "INSERT INTO uploads (key, content_type, data, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET content_type = excluded.content_type,
                                             data = excluded.data, created = excluded.created",
            params![key, content_type, data, now_iso()],
        )?;
        Ok(())
    }

    /// The unguessable token that authorises `PUT`/`GET` of one upload key (issued on first
    /// use, then reused so repeated downloads do not grow the table).
    pub(crate) fn upload_grant(&self, key: &str) -> Result<String, rusqlite::Error> {
        let fresh = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO upload_tokens (key, token) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )?
        .execute(params![key, fresh])?;
        let token = conn
            .prepare_cached("SELECT token FROM upload_tokens WHERE key = ?1")?
            .query_row([key], |r| r.get(0));
        token
    }

    /// True when `token` is the one issued for `key`.
    pub(crate) fn upload_token_valid(
        &self,
        key: &str,
        token: &str,
    ) -> Result<bool, rusqlite::Error> {
        let issued: Option<String> = self
            .conn()
            .prepare_cached("SELECT token FROM upload_tokens WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        Ok(issued.is_some_and(|t| crate::util::constant_time_eq(t.as_bytes(), token.as_bytes())))
    }

    /// Returns `(content_type, bytes)` of an upload.
    pub(crate) fn upload_get(&self, key: &str) -> Result<Option<Upload>, rusqlite::Error> {
        self.conn()
            .query_row(
                "SELECT content_type, data FROM uploads WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }

    /// Records attachment metadata with status `uploading` (kept if already registered).
    pub(crate) fn attachment_register(
        &self,
        key: &str,
        filename: Option<&str>,
        content_type: Option<&str>,
        org_id: Option<&str>,
    ) -> Result<(), rusqlite::Error> {
        let status = json!({"upload_status": "uploading"}).to_string();
        self.conn().execute(
            "INSERT INTO attachments (key, filename, content_type, org_id, status)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET filename = excluded.filename,
                 content_type = excluded.content_type, org_id = excluded.org_id",
            params![key, filename, content_type, org_id, status],
        )?;
        Ok(())
    }

    /// Sets an attachment's status object (creating the metadata row if needed).
    pub(crate) fn attachment_set_status(
        &self,
        key: &str,
        org_id: Option<&str>,
        status: &Value,
    ) -> Result<(), rusqlite::Error> {
        self.conn().execute(
            "INSERT INTO attachments (key, org_id, status) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET status = excluded.status",
            params![key, org_id, status.to_string()],
        )?;
        Ok(())
    }

    /// Returns `(content_type, status)` for a registered attachment.
    pub(crate) fn attachment_get(
        &self,
        key: &str,
    ) -> Result<Option<(Option<String>, Value)>, rusqlite::Error> {
        let found: Option<(Option<String>, String)> = self
            .conn()
            .query_row(
                "SELECT content_type, status FROM attachments WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.map(|(ct, s)| (ct, parse(&s))))
    }
}

const SUMMARY_COLUMNS: &str = "root_span_id, project_id, experiment_id, log_id, root_row_id, \
     name, type, start, end, span_count, error_count, tokens, preview, sort_start, first_seq";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TraceSummary> {
    let start: Option<f64> = r.get(7)?;
    let end: Option<f64> = r.get(8)?;
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(TraceSummary {
        root_span_id: r.get(0)?,
        project_id: opt(r.get(1)?),
        experiment_id: opt(r.get(2)?),
        log_id: opt(r.get(3)?),
        root_row_id: r.get(4)?,
        name: r.get(5)?,
        span_type: r.get(6)?,
        start,
        end,
        duration_ms: start.zip(end).map(|(s, e)| (e - s) * 1000.0),
        span_count: r.get(9)?,
        error_count: r.get(10)?,
        tokens: r.get(11)?,
        input_preview: r.get(12)?,
        cursor: (r.get(13)?, r.get(14)?),
    })
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The next transaction id: above every earlier one (kept in `meta`, so monotonic across
/// restarts) and, like the backend's, growing with wall-clock time.
fn next_xact_id(tx: &Transaction<'_>) -> Result<i64, rusqlite::Error> {
    let last: i64 = tx
        .query_row("SELECT v FROM meta WHERE k = 'last_xact_id'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let next = (now_ms << 16).max(last + 1);
    tx.prepare_cached(
        "INSERT INTO meta (k, v) VALUES ('last_xact_id', ?1)
         ON CONFLICT (k) DO UPDATE SET v = excluded.v",
    )?
    .execute([next.to_string()])?;
    Ok(next)
}

/// Deep-merges a merge row into the stored row text.
fn merged(stored: &str, incoming: &TopLevel) -> Result<TopLevel, IngestError> {
    let db_err = |e: serde_json::Error| {
        IngestError::Db(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let mut base = match rowtext::parse_deep(stored).map_err(db_err)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let new = match rowtext::parse_deep(&incoming.to_text()).map_err(db_err)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    merge::merge_into(&mut base, new);
    Ok(rowtext::top_level_of(base))
}

fn write_metadata(
    tx: &Transaction<'_>,
    seq: i64,
    d: &Derived,
    replace: bool,
) -> Result<(), rusqlite::Error> {
    if replace {
        tx.prepare_cached("DELETE FROM row_metadata WHERE seq = ?1")?
            .execute([seq])?;
    }
    let mut insert =
        tx.prepare_cached("INSERT INTO row_metadata (seq, key, value) VALUES (?1, ?2, ?3)")?;
    for (k, v) in &d.metadata {
        insert.execute(params![seq, k, v])?;
    }
    Ok(())
}

/// Recomputes the trace-list entry of one trace from its rows.
fn aggregate_trace(tx: &Transaction<'_>, root: &str) -> Result<(), rusqlite::Error> {
    let (count, errors, tokens, min_start, max_end, first_seq): (
        i64,
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<i64>,
    ) = tx
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(has_error), 0), COALESCE(SUM(tokens), 0),
                    MIN(start), MAX(end), MIN(seq)
             FROM rows WHERE root_span_id = ?1",
        )?
        .query_row([root], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
    let Some(first_seq) = first_seq.filter(|_| count > 0) else {
        tx.prepare_cached("DELETE FROM traces WHERE root_span_id = ?1")?
            .execute([root])?;
        return Ok(());
    };
    // The root row describes the trace; until it arrives, the earliest row stands in.
    struct RootRow {
        project_id: String,
        experiment_id: String,
        log_id: String,
        row_id: String,
        name: Option<String>,
        ty: Option<String>,
        start: Option<f64>,
        end: Option<f64>,
        preview: String,
    }
    let RootRow {
        project_id,
        experiment_id,
        log_id,
        row_id,
        name,
        ty,
        start,
        end,
        preview,
    } = tx
        .prepare_cached(
            "SELECT r.project_id, r.experiment_id, r.log_id, r.id, r.name, r.type, r.start,
                    r.end, r.preview
             FROM rows r WHERE r.root_span_id = ?1 ORDER BY r.is_root DESC, r.seq LIMIT 1",
        )?
        .query_row([root], |r| {
            Ok(RootRow {
                project_id: r.get(0)?,
                experiment_id: r.get(1)?,
                log_id: r.get(2)?,
                row_id: r.get(3)?,
                name: r.get(4)?,
                ty: r.get(5)?,
                start: r.get(6)?,
                end: r.get(7)?,
                preview: r.get(8)?,
            })
        })?;
    let project_id = if project_id.is_empty() && !experiment_id.is_empty() {
        tx.prepare_cached("SELECT project_id FROM experiments WHERE id = ?1")?
            .query_row([&experiment_id], |r| r.get(0))
            .optional()?
            .unwrap_or_default()
    } else {
        project_id
    };
    let start = start.or(min_start);
    let end = end.or(max_end);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO traces (root_span_id, project_id, experiment_id, log_id,
             first_seq, root_row_id, name, type, start, end, sort_start, span_count,
             error_count, tokens, preview)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        root,
        project_id,
        experiment_id,
        log_id,
        first_seq,
        row_id,
        name,
        ty,
        start,
        end,
        start.unwrap_or(0.0),
        count,
        errors,
        tokens,
        preview
    ])?;
    Ok(())
}

/// Creates the database file with mode 0600 (or tightens an existing one) before SQLite opens
/// it; SQLite gives its `-wal` and `-shm` files the same mode.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path);
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = path;
}

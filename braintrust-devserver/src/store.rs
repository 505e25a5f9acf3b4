//! SQLite persistence: projects, experiments, log rows, uploads and attachment metadata.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use std::borrow::Cow;

use rusqlite::{params, Connection, OptionalExtension};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::merge;
use crate::util::now_iso;

/// The object-id columns that, with `id`, form a row's merge key.
const KEY_FIELDS: [&str; 5] = [
    "project_id",
    "experiment_id",
    "dataset_id",
    "prompt_session_id",
    "log_id",
];

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
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    prompt_session_id TEXT NOT NULL,
    log_id TEXT NOT NULL,
    id TEXT NOT NULL,
    root_span_id TEXT,
    is_root INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    UNIQUE(project_id, experiment_id, dataset_id, prompt_session_id, log_id, id)
);
CREATE INDEX IF NOT EXISTS rows_by_root ON rows(root_span_id);
CREATE INDEX IF NOT EXISTS rows_by_id ON rows(id);
CREATE INDEX IF NOT EXISTS rows_by_experiment ON rows(experiment_id);
CREATE TABLE IF NOT EXISTS uploads (
    key TEXT PRIMARY KEY,
    content_type TEXT,
    data BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    key TEXT PRIMARY KEY,
    filename TEXT,
    content_type TEXT,
    org_id TEXT,
    status TEXT NOT NULL
);
";

/// Errors from ingesting rows: bad input (400) or a database failure (500).
#[derive(Debug)]
pub(crate) enum IngestError {
    BadRequest(String),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for IngestError {
    fn from(e: rusqlite::Error) -> Self {
        IngestError::Db(e)
    }
}

/// An upload: `(content_type, bytes)`.
pub(crate) type Upload = (Option<String>, Vec<u8>);

/// Filter for row and trace queries.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowFilter {
    pub project_id: Option<String>,
    pub experiment_id: Option<String>,
    pub root_span_id: Option<String>,
    pub log_id: Option<String>,
}

/// The SQLite store. One connection behind a mutex; every call holds it briefly.
pub(crate) struct Store {
    conn: Mutex<Connection>,
}

fn key_value(row: &Map<String, Value>, field: &str) -> String {
    match row.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn is_root(row: &Map<String, Value>) -> bool {
    match row.get("span_parents") {
        // Python always sends `span_parents` (null for roots); TypeScript omits it on roots.
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn root_span_id(row: &Map<String, Value>) -> Option<String> {
    match row.get("root_span_id") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or(Value::Null)
}

/// Parses a stored row, dropping the control keys kept in rows stored verbatim.
fn parse_row(data: &str) -> Value {
    let mut v = parse(data);
    if let Value::Object(m) = &mut v {
        merge::strip_control(m);
    }
    v
}

/// What the store needs to know about an incoming row.
struct Head {
    key: [String; 6],
    root_span_id: Option<String>,
    is_root: bool,
    is_merge: bool,
    is_delete: bool,
}

/// The row fields read without building the whole JSON tree.
#[derive(serde::Deserialize)]
struct RowHead {
    id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    dataset_id: Option<String>,
    #[serde(default)]
    prompt_session_id: Option<String>,
    #[serde(default)]
    log_id: Option<String>,
    #[serde(default)]
    root_span_id: Option<String>,
    #[serde(default)]
    span_parents: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    _is_merge: Option<bool>,
    #[serde(default)]
    _object_delete: Option<bool>,
}

/// Fast path: reads the head of a well-formed row (string ids, boolean flags). `None` means
/// the row needs the general path.
fn fast_head(text: &str) -> Option<Head> {
    let h: RowHead = serde_json::from_str(text).ok()?;
    let id = h.id?;
    // Python always sends `span_parents` (null for roots); TypeScript omits it on roots.
    let is_root = h.span_parents.as_ref().is_none_or(|p| p.is_empty());
    let s = |o: Option<String>| o.unwrap_or_default();
    Some(Head {
        key: [
            s(h.project_id),
            s(h.experiment_id),
            s(h.dataset_id),
            s(h.prompt_session_id),
            s(h.log_id),
            id,
        ],
        root_span_id: h.root_span_id,
        is_root,
        is_merge: h._is_merge == Some(true),
        is_delete: h._object_delete == Some(true),
    })
}

/// General path: parses the row fully, fills in a missing `id` (uuid4) or stringifies a
/// non-string one, and returns the row text to store. `None` if the row is not an object.
fn slow_head(text: &str) -> Option<(String, Head)> {
    let Ok(Value::Object(mut row)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    match row.get("id") {
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => {
            row.insert("id".into(), Value::String(uuid::Uuid::new_v4().to_string()));
        }
        Some(other) => {
            let s = other.to_string();
            row.insert("id".into(), Value::String(s));
        }
    }
    let head = Head {
        key: [
            key_value(&row, KEY_FIELDS[0]),
            key_value(&row, KEY_FIELDS[1]),
            key_value(&row, KEY_FIELDS[2]),
            key_value(&row, KEY_FIELDS[3]),
            key_value(&row, KEY_FIELDS[4]),
            key_value(&row, "id"),
        ],
        root_span_id: root_span_id(&row),
        is_root: is_root(&row),
        is_merge: merge::is_merge(&row),
        is_delete: matches!(row.get("_object_delete"), Some(Value::Bool(true))),
    };
    Some((Value::Object(row).to_string(), head))
}

impl Store {
    /// Opens (and creates) the database; `None` = in-memory.
    pub(crate) fn open(path: Option<&Path>) -> Result<Store, rusqlite::Error> {
        let conn = match path {
            Some(p) => {
                let c = Connection::open(p)?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "NORMAL")?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Stores a batch of `/logs3` rows in one transaction, applying the server-side merge.
    /// Returns the number of rows received.
    ///
    /// Rows that need no merge are stored as the exact JSON text the client sent; control keys
    /// (`_is_merge`, ...) are removed when rows are read back.
    pub(crate) fn ingest(&self, rows: &[Box<RawValue>]) -> Result<usize, IngestError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut select = tx.prepare_cached(
                "SELECT seq, data FROM rows WHERE project_id = ?1 AND experiment_id = ?2
                 AND dataset_id = ?3 AND prompt_session_id = ?4 AND log_id = ?5 AND id = ?6",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE rows SET data = ?2, root_span_id = ?3, is_root = ?4 WHERE seq = ?1",
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO rows (project_id, experiment_id, dataset_id, prompt_session_id,
                                   log_id, id, root_span_id, is_root, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (project_id, experiment_id, dataset_id, prompt_session_id, log_id, id)
                 DO UPDATE SET data = excluded.data, root_span_id = excluded.root_span_id,
                               is_root = excluded.is_root",
            )?;
            let mut delete = tx.prepare_cached(
                "DELETE FROM rows WHERE project_id = ?1 AND experiment_id = ?2
                 AND dataset_id = ?3 AND prompt_session_id = ?4 AND log_id = ?5 AND id = ?6",
            )?;
            for (i, raw) in rows.iter().enumerate() {
                let (text, head): (Cow<'_, str>, Head) = match fast_head(raw.get()) {
                    Some(h) => (Cow::Borrowed(raw.get()), h),
                    None => {
                        let (text, head) = slow_head(raw.get()).ok_or_else(|| {
                            IngestError::BadRequest(format!("row {i} is not a JSON object"))
                        })?;
                        (Cow::Owned(text), head)
                    }
                };
                let k = &head.key;
                if head.is_delete {
                    delete.execute(params![k[0], k[1], k[2], k[3], k[4], k[5]])?;
                    continue;
                }
                if head.is_merge {
                    let existing: Option<(i64, String)> = select
                        .query_row(params![k[0], k[1], k[2], k[3], k[4], k[5]], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()?;
                    if let Some((seq, data)) = existing {
                        let mut stored = match serde_json::from_str::<Value>(&data) {
                            Ok(Value::Object(m)) => m,
                            _ => Map::new(),
                        };
                        merge::strip_control(&mut stored);
                        let incoming = match serde_json::from_str::<Value>(&text) {
                            Ok(Value::Object(m)) => m,
                            _ => {
                                return Err(IngestError::BadRequest(format!(
                                    "row {i} is not a JSON object"
                                )))
                            }
                        };
                        merge::merge_into(&mut stored, incoming);
                        let root = root_span_id(&stored);
                        let is_root = is_root(&stored);
                        update.execute(params![
                            seq,
                            Value::Object(stored).to_string(),
                            root,
                            is_root
                        ])?;
                        continue;
                    }
                }
                upsert.execute(params![
                    k[0],
                    k[1],
                    k[2],
                    k[3],
                    k[4],
                    k[5],
                    head.root_span_id,
                    head.is_root,
                    text.as_ref()
                ])?;
            }
        }
        tx.commit()?;
        Ok(rows.len())
    }

    /// Stored rows matching the filter, in first-insert order.
    pub(crate) fn rows(&self, f: &RowFilter) -> Result<Vec<Value>, rusqlite::Error> {
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
        rows.map(|r| r.map(|d| parse_row(&d))).collect()
    }

    /// Root rows (no parents) matching the filter, in first-insert order, with the number of
    /// stored rows in each trace.
    pub(crate) fn roots(&self, f: &RowFilter) -> Result<Vec<(Value, i64)>, rusqlite::Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT r.data, (SELECT COUNT(*) FROM rows c WHERE c.root_span_id = r.root_span_id)
             FROM rows r
             WHERE r.is_root = 1 AND r.root_span_id IS NOT NULL
               AND (?1 IS NULL OR r.project_id = ?1
                    OR r.experiment_id IN (SELECT id FROM experiments WHERE project_id = ?1))
               AND (?2 IS NULL OR r.experiment_id = ?2)
               AND (?3 IS NULL OR r.log_id = ?3)
             ORDER BY r.seq",
        )?;
        let rows = stmt.query_map(params![f.project_id, f.experiment_id, f.log_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.map(|r| r.map(|(d, n)| (parse_row(&d), n))).collect()
    }

    /// Distinct trace ids in order of their first stored row.
    pub(crate) fn trace_ids(&self) -> Result<Vec<String>, rusqlite::Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT root_span_id FROM rows WHERE root_span_id IS NOT NULL
             GROUP BY root_span_id ORDER BY MIN(seq)",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    }

    /// The first stored row with this `id` (under any object).
    pub(crate) fn row(&self, id: &str) -> Result<Option<Value>, rusqlite::Error> {
        let data: Option<String> = self
            .conn()
            .query_row(
                "SELECT data FROM rows WHERE id = ?1 ORDER BY seq LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(data.map(|d| parse_row(&d)))
    }

    /// Number of stored (merged) rows.
    pub(crate) fn row_count(&self) -> Result<usize, rusqlite::Error> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))?;
        Ok(n as usize)
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

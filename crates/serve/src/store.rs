//! The SQLite state file: API keys (hashed), the waitlist, the usage ledger and the chat page's
//! message log. One file under `$FERROGPT_HOME`, WAL mode so the ledger writer never blocks readers.
//!
//! Three kinds of connection, so that no path waits on another's lock: the shared one behind a
//! mutex (the CLI, the waitlist, the chat-page cap), a small pool for key lookups (blocking calls
//! that the server runs off its async runtime; each reads the committed state, so a key revoked
//! by `ferrogpt keys revoke` in another process is refused on the next request), and the ledger
//! writer's own [`LedgerConn`]. A ledger row is opened at admission (outcome `open`), its
//! completion tokens and cost are brought up to date while the request runs, and it is settled
//! in place when the request ends; rows that a killed server left open are closed as
//! `interrupted` when the next one starts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ServeError;

/// Where state lives: `$FERROGPT_HOME/state.sqlite`, default `~/.ferrogpt`.
pub fn default_state_path() -> PathBuf {
    let home = std::env::var_os("FERROGPT_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ferrogpt")))
        .unwrap_or_else(|| PathBuf::from(".ferrogpt"));
    home.join("state.sqlite")
}

/// A key as stored: never the secret itself, only its SHA-256 and a display prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: i64,
    pub name: String,
    /// `sk-abcd...wxyz`, enough to recognise a key in listings.
    pub display: String,
    /// `None` = every model; otherwise the model ids (snapshots or aliases) it may use.
    pub models: Option<Vec<String>>,
    pub created: i64,
    pub revoked: bool,
}

impl KeyRecord {
    /// Access is granted per snapshot; naming an alias grants whatever it resolves to.
    pub fn may_use(&self, snapshot: &str, alias: Option<&str>) -> bool {
        match &self.models {
            None => true,
            Some(list) => list.iter().any(|m| m == snapshot || Some(m.as_str()) == alias),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WaitlistEntry {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub reason: String,
    pub created: i64,
    pub status: String,
}

/// One request, as the ledger records it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub ts: i64,
    pub key_id: i64,
    pub model: String,
    pub endpoint: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    pub latency_ms: u64,
    pub status: u16,
    /// [`OUTCOME_OPEN`] while the request runs; then `ok`, `client_disconnected`, `error`, or
    /// [`OUTCOME_INTERRUPTED`] when the server stopped first (killed, found on the next start,
    /// or shut down with the request still running at the drain deadline).
    pub outcome: String,
}

/// The outcome of a ledger row whose request is still running.
pub const OUTCOME_OPEN: &str = "open";
/// The outcome of a request that the server stopped before it ended.
pub const OUTCOME_INTERRUPTED: &str = "interrupted";

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub key: String,
    pub model: String,
    pub day: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
}

pub struct Store {
    path: PathBuf,
    shown: String,
    conn: Mutex<Connection>,
    /// Idle key-lookup connections; another is opened whenever all are busy.
    key_readers: Mutex<Vec<Connection>>,
}

/// Key-lookup connections kept open between requests.
const IDLE_KEY_READERS: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    display TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    models TEXT,
    created INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS waitlist (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    reason TEXT NOT NULL,
    created INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    key_id INTEGER REFERENCES keys(id)
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_ts ON ledger(ts);
CREATE TABLE IF NOT EXISTS chat_messages (
    key_id INTEGER NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_key ON chat_messages(key_id, ts);
";

fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn parse_models(text: Option<String>) -> Option<Vec<String>> {
    text.map(|t| t.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
}

/// Opens a connection with the settings every user of the file shares.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // In WAL mode NORMAL loses no committed transaction when the process is killed, only on
    // power loss; the ledger relies on the former.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Begins a transaction that holds the write lock from its first statement. A deferred one
/// that reads and then writes fails with SQLITE_BUSY, without waiting, when another connection
/// commits in between; an immediate one waits its turn under the busy timeout instead.
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Finds the key whose hash matches `secret`'s, re-checking the hash in constant time.
fn lookup_key(conn: &Connection, secret: &str) -> rusqlite::Result<Option<KeyRecord>> {
    let digest = hash_key(secret);
    let row = conn
        .prepare_cached("SELECT id, name, display, hash, models, created, revoked FROM keys WHERE hash = ?1")?
        .query_row(params![&digest[..]], |r| {
            Ok((
                KeyRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    display: r.get(2)?,
                    models: parse_models(r.get(4)?),
                    created: r.get(5)?,
                    revoked: r.get::<_, i64>(6)? != 0,
                },
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(rec, stored)| {
        let same: bool = stored.as_slice().ct_eq(&digest[..]).into();
        (same && !rec.revoked).then_some(rec)
    }))
}

impl Store {
    /// Opens (creating if needed) the state file and its tables.
    pub fn open(path: &Path) -> Result<Self, ServeError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::StateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let shown = path.display().to_string();
        let wrap = |source| ServeError::Store {
            path: shown.clone(),
            source,
        };
        let conn = connect(path).map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        Ok(Self {
            path: path.to_path_buf(),
            shown,
            conn: Mutex::new(conn),
            key_readers: Mutex::new(Vec::new()),
        })
    }

    fn err(&self, source: rusqlite::Error) -> ServeError {
        ServeError::Store {
            path: self.shown.clone(),
            source,
        }
    }

    /// The shared connection: the CLI, the waitlist and the chat-page cap.
    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each call is one
        // statement or transaction), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ledger writer's own connection.
    pub(crate) fn ledger_connection(&self) -> Result<LedgerConn, ServeError> {
        Ok(LedgerConn {
            conn: connect(&self.path).map_err(|e| self.err(e))?,
            shown: self.shown.clone(),
        })
    }

    /// Creates a key and returns (record, secret). The secret is shown once and never stored.
    pub fn create_key(&self, name: &str, models: Option<&[String]>) -> Result<(KeyRecord, String), ServeError> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let body: String = (0..48).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        let secret = format!("sk-{body}");
        let display = format!("sk-{}...{}", &body[..4], &body[44..]);
        let models_text = models.map(|m| m.join(","));
        let created = now_secs();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO keys (name, display, hash, models, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, display, &hash_key(&secret)[..], models_text, created],
        )
        .map_err(|e| self.err(e))?;
        let id = conn.last_insert_rowid();
        Ok((
            KeyRecord {
                id,
                name: name.to_string(),
                display,
                models: models.map(|m| m.to_vec()),
                created,
                revoked: false,
            },
            secret,
        ))
    }

    /// Looks a presented secret up on a key-lookup connection, never the shared one. Blocks on
    /// SQLite: async callers run it with `spawn_blocking`.
    pub fn authenticate(&self, secret: &str) -> Result<Option<KeyRecord>, ServeError> {
        let idle = self.key_readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => connect(&self.path).map_err(|e| self.err(e))?,
        };
        let found = lookup_key(&conn, secret).map_err(|e| self.err(e))?;
        let mut readers = self.key_readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < IDLE_KEY_READERS {
            readers.push(conn);
        }
        Ok(found)
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, ServeError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, name, display, models, created, revoked FROM keys ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    display: r.get(2)?,
                    models: parse_models(r.get(3)?),
                    created: r.get(4)?,
                    revoked: r.get::<_, i64>(5)? != 0,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Revokes by numeric id, name or display prefix; returns how many keys were revoked.
    pub fn revoke_key(&self, which: &str) -> Result<usize, ServeError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE keys SET revoked = 1 WHERE revoked = 0 AND (CAST(id AS TEXT) = ?1 OR name = ?1 OR display = ?1)",
                params![which],
            )
            .map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Adds a pending waitlist request unless `max_pending` are already waiting; `Ok(None)`
    /// when the list is full. Count and insert run in one transaction so concurrent requests
    /// cannot overshoot the bound.
    pub fn add_waitlist(&self, name: &str, email: &str, reason: &str, max_pending: u64) -> Result<Option<i64>, ServeError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(|e| self.err(e))?;
        let pending: i64 = tx
            .query_row("SELECT COUNT(*) FROM waitlist WHERE status = 'pending'", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if pending as u64 >= max_pending {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO waitlist (name, email, reason, created) VALUES (?1, ?2, ?3, ?4)",
            params![name, email, reason, now_secs()],
        )
        .map_err(|e| self.err(e))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Some(id))
    }

    pub fn list_waitlist(&self) -> Result<Vec<WaitlistEntry>, ServeError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, name, email, reason, created, status FROM waitlist ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(WaitlistEntry {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    email: r.get(2)?,
                    reason: r.get(3)?,
                    created: r.get(4)?,
                    status: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Turns a pending waitlist entry into a key named after the applicant.
    pub fn approve(&self, waitlist_id: i64, models: Option<&[String]>) -> Result<(KeyRecord, String), ServeError> {
        let entry = {
            let conn = self.conn();
            conn.query_row(
                "SELECT name, email, status FROM waitlist WHERE id = ?1",
                params![waitlist_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?
        };
        let (name, email, status) = entry.ok_or_else(|| ServeError::NotFound(format!("no waitlist entry with id {waitlist_id}")))?;
        if status != "pending" {
            return Err(ServeError::NotFound(format!("waitlist entry {waitlist_id} is already {status}")));
        }
        let label = if email.is_empty() { name } else { format!("{name} <{email}>") };
        let (rec, secret) = self.create_key(&label, models)?;
        self.conn()
            .execute(
                "UPDATE waitlist SET status = 'approved', key_id = ?1 WHERE id = ?2",
                params![rec.id, waitlist_id],
            )
            .map_err(|e| self.err(e))?;
        Ok((rec, secret))
    }

    /// All ledger rows, oldest first (used by tests and audits).
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, ServeError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT ts, key_id, model, endpoint, prompt_tokens, completion_tokens, cost, latency_ms, status, outcome FROM ledger ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LedgerEntry {
                    ts: r.get(0)?,
                    key_id: r.get(1)?,
                    model: r.get(2)?,
                    endpoint: r.get(3)?,
                    prompt_tokens: r.get::<_, i64>(4)? as u64,
                    completion_tokens: r.get::<_, i64>(5)? as u64,
                    cost: r.get(6)?,
                    latency_ms: r.get::<_, i64>(7)? as u64,
                    status: r.get(8)?,
                    outcome: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Usage by key, model and UTC day, newest day first.
    pub fn usage(&self, since_ts: Option<i64>) -> Result<Vec<UsageRow>, ServeError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT COALESCE(k.name || ' (' || k.display || ')', 'key ' || l.key_id), l.model,
                        date(l.ts, 'unixepoch') AS day, COUNT(*), SUM(l.prompt_tokens),
                        SUM(l.completion_tokens), SUM(l.cost)
                 FROM ledger l LEFT JOIN keys k ON k.id = l.key_id
                 WHERE l.ts >= ?1
                 GROUP BY l.key_id, l.model, day
                 ORDER BY day DESC, 1, 2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![since_ts.unwrap_or(i64::MIN)], |r| {
                Ok(UsageRow {
                    key: r.get(0)?,
                    model: r.get(1)?,
                    day: r.get(2)?,
                    requests: r.get::<_, i64>(3)? as u64,
                    prompt_tokens: r.get::<_, i64>(4)? as u64,
                    completion_tokens: r.get::<_, i64>(5)? as u64,
                    cost: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Chat-page messages sent by a key within the window ending at `now`.
    pub fn count_chat_messages(&self, key_id: i64, now: f64, window_secs: f64) -> Result<u64, ServeError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM chat_messages WHERE key_id = ?1 AND ts > ?2",
                params![key_id, now - window_secs],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    /// Records a chat-page message if the key is under its cap; returns the count used in the
    /// window (including this one) or `Err(oldest_ts)` when the cap is reached. Check and insert
    /// run in one transaction so concurrent sends cannot overshoot the cap.
    pub fn take_chat_message(&self, key_id: i64, now: f64, window_secs: f64, cap: u64) -> Result<Result<u64, f64>, ServeError> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn).map_err(|e| self.err(e))?;
        let since = now - window_secs;
        let (used, oldest): (i64, Option<f64>) = tx
            .query_row(
                "SELECT COUNT(*), MIN(ts) FROM chat_messages WHERE key_id = ?1 AND ts > ?2",
                params![key_id, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        if used as u64 >= cap {
            return Ok(Err(oldest.unwrap_or(now)));
        }
        tx.execute("INSERT INTO chat_messages (key_id, ts) VALUES (?1, ?2)", params![key_id, now])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Ok(used as u64 + 1))
    }
}

/// The ledger writer's connection. Its caller groups calls into transactions
/// ([`LedgerConn::begin`], [`LedgerConn::commit`]) so that one commit covers every row change
/// queued at that moment.
pub(crate) struct LedgerConn {
    conn: Connection,
    shown: String,
}

impl LedgerConn {
    fn err(&self, source: rusqlite::Error) -> ServeError {
        ServeError::Store {
            path: self.shown.clone(),
            source,
        }
    }

    pub fn begin(&self) -> Result<(), ServeError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| self.err(e))
    }

    pub fn commit(&self) -> Result<(), ServeError> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    /// Undoes a transaction whose commit failed, so the next one can begin.
    pub fn rollback(&self) {
        // Fails only when no transaction is open, which is then the state wanted.
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Inserts a row and returns its id.
    pub fn insert(&self, e: &LedgerEntry) -> Result<i64, ServeError> {
        self.conn
            .prepare_cached(
                "INSERT INTO ledger (ts, key_id, model, endpoint, prompt_tokens, completion_tokens, cost, latency_ms, status, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    e.ts,
                    e.key_id,
                    e.model,
                    e.endpoint,
                    e.prompt_tokens as i64,
                    e.completion_tokens as i64,
                    e.cost,
                    e.latency_ms as i64,
                    e.status,
                    e.outcome
                ])
            })
            .map_err(|err| self.err(err))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Brings an open row's completion tokens, cost and latency up to date.
    pub fn progress(&self, row: i64, completion_tokens: u64, cost: f64, latency_ms: u64) -> Result<(), ServeError> {
        self.conn
            .prepare_cached("UPDATE ledger SET completion_tokens = ?2, cost = ?3, latency_ms = ?4 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![row, completion_tokens as i64, cost, latency_ms as i64]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes a row's final state over what admission and progress wrote.
    pub fn settle(&self, row: i64, e: &LedgerEntry) -> Result<(), ServeError> {
        self.conn
            .prepare_cached(
                "UPDATE ledger SET ts = ?2, prompt_tokens = ?3, completion_tokens = ?4, cost = ?5, latency_ms = ?6,
                        status = ?7, outcome = ?8 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    row,
                    e.ts,
                    e.prompt_tokens as i64,
                    e.completion_tokens as i64,
                    e.cost,
                    e.latency_ms as i64,
                    e.status,
                    e.outcome
                ])
            })
            .map_err(|err| self.err(err))?;
        Ok(())
    }

    /// Closes the rows a previous server left open as interrupted, keeping the tokens (and the
    /// cost of them) recorded so far; returns how many there were.
    pub fn close_interrupted(&self) -> Result<usize, ServeError> {
        self.conn
            .execute(
                "UPDATE ledger SET outcome = ?1 WHERE outcome = ?2",
                params![OUTCOME_INTERRUPTED, OUTCOME_OPEN],
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.sqlite")).unwrap();
        (dir, s)
    }

    #[test]
    fn keys_are_hashed_and_revocable() {
        let (_d, s) = store();
        let (rec, secret) = s.create_key("alice", None).unwrap();
        assert!(secret.starts_with("sk-") && secret.len() == 51);
        assert_eq!(s.authenticate(&secret).unwrap(), Some(rec.clone()));
        assert_eq!(s.authenticate("sk-wrong").unwrap(), None);
        // The secret itself is nowhere in the file's key table.
        let stored: Vec<u8> = s.conn().query_row("SELECT hash FROM keys", [], |r| r.get(0)).unwrap();
        assert_ne!(stored, secret.as_bytes());
        assert_eq!(s.revoke_key("alice").unwrap(), 1);
        assert_eq!(s.authenticate(&secret).unwrap(), None);
    }

    #[test]
    fn waitlist_approval_makes_a_restricted_key() {
        let (_d, s) = store();
        let id = s.add_waitlist("bob", "bob@example.com", "evals", 10).unwrap().unwrap();
        let models = vec!["m-0314".to_string()];
        let (rec, secret) = s.approve(id, Some(&models)).unwrap();
        assert!(rec.may_use("m-0314", None));
        assert!(!rec.may_use("other", Some("o")));
        assert_eq!(s.authenticate(&secret).unwrap().unwrap().id, rec.id);
        assert_eq!(s.list_waitlist().unwrap()[0].status, "approved");
        assert!(s.approve(id, None).is_err());
    }

    #[test]
    fn usage_groups_by_key_model_day() {
        let (_d, s) = store();
        let (rec, _) = s.create_key("k", None).unwrap();
        let ledger = s.ledger_connection().unwrap();
        for (ts, model) in [(0, "a"), (10, "a"), (86_400, "a"), (20, "b")] {
            ledger
                .insert(&LedgerEntry {
                    ts,
                    key_id: rec.id,
                    model: model.into(),
                    endpoint: "chat".into(),
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    cost: 0.5,
                    latency_ms: 1,
                    status: 200,
                    outcome: "ok".into(),
                })
                .unwrap();
        }
        let rows = s.usage(None).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].day, "1970-01-02");
        let a = rows.iter().find(|r| r.model == "a" && r.day == "1970-01-01").unwrap();
        assert_eq!((a.requests, a.prompt_tokens, a.completion_tokens), (2, 20, 10));
        assert!((a.cost - 1.0).abs() < 1e-9);
    }

    fn entry(key_id: i64, outcome: &str, completion_tokens: u64) -> LedgerEntry {
        LedgerEntry {
            ts: 0,
            key_id,
            model: "m".into(),
            endpoint: "chat.completions".into(),
            prompt_tokens: 100,
            completion_tokens,
            cost: 0.001 * (100 + completion_tokens) as f64,
            latency_ms: 0,
            status: 200,
            outcome: outcome.into(),
        }
    }

    /// A row lives from admission to settlement in place; a crash leaves it open, and the next
    /// start closes it as interrupted with the tokens and cost recorded so far, which `usage`
    /// bills like any other row.
    #[test]
    fn ledger_rows_open_progress_settle_and_close_as_interrupted() {
        let (_d, s) = store();
        let ledger = s.ledger_connection().unwrap();
        ledger.begin().unwrap();
        let settled = ledger.insert(&entry(1, OUTCOME_OPEN, 0)).unwrap();
        let crashed = ledger.insert(&entry(1, OUTCOME_OPEN, 0)).unwrap();
        ledger.commit().unwrap();
        ledger.progress(crashed, 7, 0.107, 5).unwrap();
        ledger.settle(settled, &entry(1, "ok", 20)).unwrap();
        let rows = s.ledger().unwrap();
        assert_eq!((rows[0].outcome.as_str(), rows[0].completion_tokens), ("ok", 20));
        assert_eq!((rows[1].outcome.as_str(), rows[1].completion_tokens), (OUTCOME_OPEN, 7));

        let restarted = s.ledger_connection().unwrap();
        assert_eq!(restarted.close_interrupted().unwrap(), 1);
        assert_eq!(restarted.close_interrupted().unwrap(), 0);
        let rows = s.ledger().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].outcome.as_str(), rows[1].prompt_tokens, rows[1].completion_tokens),
            (OUTCOME_INTERRUPTED, 100, 7)
        );
        let usage = s.usage(None).unwrap();
        assert_eq!(
            (usage[0].requests, usage[0].prompt_tokens, usage[0].completion_tokens),
            (2, 200, 27)
        );
        assert!((usage[0].cost - (0.120 + 0.107)).abs() < 1e-9);
    }

    #[test]
    fn waitlist_holds_at_most_max_pending() {
        let (_d, s) = store();
        assert!(s.add_waitlist("a", "a@x", "", 2).unwrap().is_some());
        let b = s.add_waitlist("b", "b@x", "", 2).unwrap().unwrap();
        assert_eq!(s.add_waitlist("c", "c@x", "", 2).unwrap(), None);
        // Approving one makes room.
        s.approve(b, None).unwrap();
        assert!(s.add_waitlist("c", "c@x", "", 2).unwrap().is_some());
    }

    #[test]
    fn chat_cap_counts_within_window() {
        let (_d, s) = store();
        assert_eq!(s.take_chat_message(1, 100.0, 50.0, 2).unwrap(), Ok(1));
        assert_eq!(s.take_chat_message(1, 110.0, 50.0, 2).unwrap(), Ok(2));
        assert_eq!(s.take_chat_message(1, 120.0, 50.0, 2).unwrap(), Err(100.0));
        // Another key has its own budget; the first message leaves the window at t=150.
        assert_eq!(s.take_chat_message(2, 120.0, 50.0, 2).unwrap(), Ok(1));
        assert_eq!(s.take_chat_message(1, 151.0, 50.0, 2).unwrap(), Ok(2));
    }

    /// Several connections counting and inserting at once (the server's handlers, the ledger
    /// writer, another process): a transaction that read first and wrote second used to fail
    /// with SQLITE_BUSY when another connection committed in between, because SQLite does not
    /// wait on that conflict; each check must take the write lock up front and wait its turn.
    #[test]
    fn capped_inserts_wait_for_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        Store::open(&path).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let s = Store::open(&path).unwrap();
                    for i in 0..100 {
                        s.take_chat_message(t, i as f64, 1e9, u64::MAX).unwrap().unwrap();
                        s.add_waitlist("n", &format!("{t}-{i}@x"), "", u64::MAX).unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.list_waitlist().unwrap().len(), 400);
        for t in 0..4 {
            assert_eq!(s.count_chat_messages(t, 1e9, 2e9).unwrap(), 100);
        }
    }
}

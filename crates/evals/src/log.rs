//! The JSONL run log in openai/evals' shape: `{"spec": ...}` first, then one event per
//! line (`run_id`, `event_id`, `sample_id`, `type`, `data`, `created_by`, `created_at`),
//! then `{"final_report": ..., "run_id": ...}` — always written last here.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EvalError, Result};

/// One recorded event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub run_id: String,
    pub event_id: u64,
    pub sample_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    pub created_by: String,
    pub created_at: String,
}

/// A final report: metric name to value, in the order the template produced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report(pub Vec<(String, Value)>);

impl Report {
    pub fn push(&mut self, key: &str, value: impl Into<Value>) {
        self.0.push((key.to_string(), value.into()));
    }

    /// A float metric; NaN and infinities become JSON null.
    pub fn push_f64(&mut self, key: &str, value: f64) {
        self.push(key, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A parsed run log.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub spec: Value,
    pub events: Vec<Event>,
    pub final_report: Map<String, Value>,
    pub run_id: String,
}

impl RunLog {
    pub fn eval_name(&self) -> &str {
        self.spec.get("eval_name").and_then(Value::as_str).unwrap_or("?")
    }

    pub fn completion_fns(&self) -> String {
        self.spec
            .get("completion_fns")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    }

    /// Read a log written by ferrogpt or by `oaieval` (where `final_report` may come
    /// before the events and lack `run_id`).
    pub fn read(path: &Path) -> Result<RunLog> {
        let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
        let bad = |message: String| EvalError::Log {
            path: path.to_path_buf(),
            message,
        };
        let mut spec = Value::Null;
        let mut events = Vec::new();
        let mut final_report = Map::new();
        let mut run_id = String::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| EvalError::io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
            if let Some(s) = v.get("spec") {
                spec = s.clone();
                if let Some(id) = s.get("run_id").and_then(Value::as_str) {
                    run_id = id.to_string();
                }
            } else if let Some(r) = v.get("final_report") {
                final_report = r.as_object().cloned().unwrap_or_default();
            } else {
                let ev: Event = serde_json::from_value(v).map_err(|e| bad(format!("line {}: not an event: {e}", i + 1)))?;
                events.push(ev);
            }
        }
        if spec.is_null() {
            return Err(bad("no spec line: not an evals run log".into()));
        }
        Ok(RunLog {
            spec,
            events,
            final_report,
            run_id,
        })
    }
}

/// Writes the log: the spec line on creation, then events and the final report.
pub struct LogWriter {
    out: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl LogWriter {
    pub fn create(path: &Path, spec: &Value) -> Result<LogWriter> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| EvalError::io(parent, e))?;
        }
        let file = std::fs::File::create(path).map_err(|e| EvalError::io(path, e))?;
        let mut w = LogWriter {
            out: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
        };
        w.line(&serde_json::json!({ "spec": spec }))?;
        Ok(w)
    }

    fn line(&mut self, v: &impl Serialize) -> Result<()> {
        let text = serde_json::to_string(v).map_err(|e| EvalError::Log {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        writeln!(self.out, "{text}").map_err(|e| EvalError::io(&self.path, e))
    }

    pub fn event(&mut self, ev: &Event) -> Result<()> {
        self.line(ev)
    }

    pub fn finish(mut self, report: &Report, run_id: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Final<'a> {
            final_report: &'a Report,
            run_id: &'a str,
        }
        self.line(&Final {
            final_report: report,
            run_id,
        })?;
        self.out.flush().map_err(|e| EvalError::io(&self.path, e))
    }
}

/// Current UTC time as `(seconds since the epoch, microseconds)`.
fn now() -> (i64, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as i64, d.subsec_micros())
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn parts(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, mo, d, s / 3600, s / 60 % 60, s % 60)
}

/// `str(datetime.now(timezone.utc))`: `2023-03-14 22:44:47.262931+00:00`.
pub fn timestamp() -> String {
    let (secs, micros) = now();
    let (y, mo, d, h, mi, s) = parts(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{micros:06}+00:00")
}

/// Upstream's run id: `%y%m%d%H%M%S` (UTC) then 8 base32 characters of randomness.
pub fn new_run_id() -> String {
    use sha2::{Digest, Sha256};
    let (secs, micros) = now();
    let (y, mo, d, h, mi, s) = parts(secs);
    let mut hasher = Sha256::new();
    hasher.update(format!("{secs}.{micros}.{}.{:?}", std::process::id(), std::thread::current().id()));
    let digest = hasher.finalize();
    const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits = digest[..5].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let suffix: String = (0..8).map(|i| B32[((bits >> (35 - 5 * i)) & 31) as usize] as char).collect();
    format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}{suffix}", y % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_430), (2023, 3, 14));
        assert_eq!(parts(1_678_833_887).3, 22);
        let id = new_run_id();
        assert_eq!(id.len(), 20);
        assert!(id[12..].chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
    }
}

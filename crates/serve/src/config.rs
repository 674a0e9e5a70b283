//! Server configuration: snapshots (pinned models with context length and prices), aliases
//! that point at the recommended snapshot, default rate limits and the chat page's cap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ServeError;

/// One pinned model: its folder never changes under this id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub id: String,
    pub folder: PathBuf,
    /// Defaults to the model's own context length when absent.
    pub context_length: Option<usize>,
    /// Dollars per 1,000 prompt tokens.
    #[serde(default)]
    pub prompt_price_per_1k: f64,
    /// Dollars per 1,000 completion tokens.
    #[serde(default)]
    pub completion_price_per_1k: f64,
    /// Unix seconds reported as `created` by `/v1/models`.
    #[serde(default)]
    pub created: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 200,
            tokens_per_minute: 40_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatPageConfig {
    /// Messages a key may send from the chat page per window.
    pub messages_per_window: u64,
    pub window_hours: f64,
}

impl Default for ChatPageConfig {
    fn default() -> Self {
        Self {
            messages_per_window: 25,
            window_hours: 3.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    /// A request body must arrive within this many seconds (a slow sender gets a 408).
    pub body_timeout_seconds: f64,
    /// KV-cache slots per model: the most sequences decoded in one batch.
    pub batch_slots: usize,
    /// On SIGTERM or Ctrl-C, running requests get this many seconds to finish; then they are
    /// cut short (recorded as interrupted) and the server exits with the ledger written.
    pub drain_seconds: f64,
    /// Sequences one model holds at once, running in a decode slot or waiting for one; a
    /// request that would go past gets a 429 with `retry-after`.
    pub max_sequences_per_model: usize,
    /// Sequences one key holds at once on one model, so that one key's flood cannot fill the
    /// model's share for everyone: another key's request still finds room.
    pub max_sequences_per_key: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 8 * 1024 * 1024,
            body_timeout_seconds: 30.0,
            batch_slots: 32,
            drain_seconds: 30.0,
            // 16 full decode batches; one key may hold at most half of them, so others always
            // find room (two requests of the most sequences a request may ask for, or more
            // smaller ones).
            max_sequences_per_model: 512,
            max_sequences_per_key: 256,
        }
    }
}

/// Limits of `/v1/waitlist`, the one endpoint that takes writes without a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WaitlistConfig {
    /// Requests accepted per hour from one client address (an IPv6 /64 counts as one).
    pub per_address_per_hour: u64,
    /// Requests accepted per hour from all addresses together.
    pub per_hour: u64,
    /// Pending requests at most; more are refused until some are approved.
    pub max_pending: u64,
}

impl Default for WaitlistConfig {
    fn default() -> Self {
        Self {
            per_address_per_hour: 5,
            per_hour: 120,
            max_pending: 10_000,
        }
    }
}

/// The whole TOML file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub chat: ChatPageConfig,
    #[serde(default)]
    pub waitlist: WaitlistConfig,
    #[serde(default, rename = "snapshot")]
    pub snapshots: Vec<SnapshotConfig>,
    /// alias -> snapshot id, e.g. `ferrogpt = "ferrogpt-0314"`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::ConfigRead {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ServeError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // Relative model folders are relative to the config file, not the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        for s in &mut cfg.snapshots {
            if s.folder.is_relative() {
                s.folder = base.join(&s.folder);
            }
        }
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// The one-line quick start: serve `folder` as snapshot `<alias>-<MMDD>` behind `alias`.
    pub fn quick_start(folder: &Path, alias: &str) -> Result<Self, ServeError> {
        let stamp = folder_stamp(folder);
        let snapshot = format!("{alias}-{stamp}");
        let mut aliases = BTreeMap::new();
        aliases.insert(alias.to_string(), snapshot.clone());
        let cfg = Config {
            snapshots: vec![SnapshotConfig {
                id: snapshot,
                folder: folder.to_path_buf(),
                context_length: None,
                prompt_price_per_1k: 0.03,
                completion_price_per_1k: 0.06,
                created: folder_mtime(folder),
            }],
            aliases,
            ..Config::default()
        };
        cfg.validate("--model")?;
        Ok(cfg)
    }

    pub fn validate(&self, origin: &str) -> Result<(), ServeError> {
        let err = |message: String| ServeError::Config {
            path: origin.to_string(),
            message,
        };
        if self.snapshots.is_empty() {
            return Err(err("no [[snapshot]] entries: nothing to serve".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.snapshots {
            if !valid_model_id(&s.id) {
                return Err(err(format!(
                    "snapshot id {:?} must be 1-64 characters of letters, digits, '-', '_', '.', ':'",
                    s.id
                )));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(err(format!("snapshot id {:?} is listed twice", s.id)));
            }
            if s.prompt_price_per_1k < 0.0 || s.completion_price_per_1k < 0.0 {
                return Err(err(format!("snapshot {:?}: prices must not be negative", s.id)));
            }
        }
        for (alias, target) in &self.aliases {
            if !valid_model_id(alias) {
                return Err(err(format!("alias {alias:?} is not a valid model id")));
            }
            if seen.contains(alias.as_str()) {
                return Err(err(format!("alias {alias:?} has the same name as a snapshot")));
            }
            if !seen.contains(target.as_str()) {
                return Err(err(format!("alias {alias:?} points at {target:?}, which is not a [[snapshot]] id")));
            }
        }
        if self.limits.requests_per_minute == 0 || self.limits.tokens_per_minute == 0 {
            return Err(err("[limits] must be at least 1 request and 1 token per minute".into()));
        }
        if self.chat.window_hours <= 0.0 {
            return Err(err("[chat] window_hours must be positive".into()));
        }
        if self.server.batch_slots == 0 {
            return Err(err("[server] batch_slots must be at least 1".into()));
        }
        if self.server.max_sequences_per_key == 0 || self.server.max_sequences_per_model < self.server.max_sequences_per_key {
            return Err(err(
                "[server] max_sequences_per_key must be at least 1 and at most max_sequences_per_model".into(),
            ));
        }
        // Both become Durations, which must be finite and not negative.
        if !(self.server.body_timeout_seconds > 0.0 && self.server.body_timeout_seconds <= 86_400.0) {
            return Err(err("[server] body_timeout_seconds must be more than 0 and at most 86400".into()));
        }
        if !(0.0..=86_400.0).contains(&self.server.drain_seconds) {
            return Err(err("[server] drain_seconds must be between 0 and 86400".into()));
        }
        let w = &self.waitlist;
        if w.per_address_per_hour == 0 || w.per_hour == 0 || w.max_pending == 0 {
            return Err(err("[waitlist] limits must each be at least 1".into()));
        }
        Ok(())
    }
}

fn valid_model_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

pub(crate) fn folder_mtime(folder: &Path) -> u64 {
    std::fs::metadata(folder)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `MMDD` of the folder's modification day, the way `gpt-4-0314` names its snapshot day.
fn folder_stamp(folder: &Path) -> String {
    let days = (folder_mtime(folder) / 86_400) as i64;
    let (_, m, d) = civil_from_days(days);
    format!("{m:02}{d:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_430), (2023, 3, 14));
    }

    #[test]
    fn parses_and_checks_aliases() {
        let text = r#"
            [limits]
            requests_per_minute = 10
            [[snapshot]]
            id = "m-0314"
            folder = "/models/m"
            context_length = 512
            prompt_price_per_1k = 0.03
            completion_price_per_1k = 0.06
            [aliases]
            m = "m-0314"
        "#;
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate("test").unwrap();
        assert_eq!(cfg.limits.requests_per_minute, 10);
        assert_eq!(cfg.limits.tokens_per_minute, 40_000);
        let mut bad = cfg.clone();
        bad.aliases.insert("x".into(), "missing".into());
        let msg = bad.validate("test").unwrap_err().to_string();
        assert!(msg.contains("\"missing\""), "{msg}");
        for drain in [-1.0, f64::NAN, f64::INFINITY] {
            let mut bad = cfg.clone();
            bad.server.drain_seconds = drain;
            assert!(bad.validate("test").is_err(), "drain_seconds {drain}");
        }
    }
}

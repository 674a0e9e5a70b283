//! `ferrogpt serve`, `ferrogpt keys ...`, `ferrogpt usage`: argument parsing and printing only;
//! the server, the state file and the scheduler live in ferrogpt-serve.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use ferrogpt_serve::backend::Backend;
use ferrogpt_serve::moderation::Moderator;
use ferrogpt_serve::ratelimit::MonotonicClock;
use ferrogpt_serve::{AppState, Config, Store};

/// Where the state file lives unless `--state` says otherwise.
#[derive(clap::Args, Clone)]
pub struct StateArgs {
    /// SQLite state file (keys, waitlist, ledger); default $FERROGPT_HOME/state.sqlite
    /// ($FERROGPT_HOME defaults to ~/.ferrogpt)
    #[arg(long)]
    state: Option<PathBuf>,
}

impl StateArgs {
    fn open(&self) -> anyhow::Result<Store> {
        let path = self.state.clone().unwrap_or_else(ferrogpt_serve::store::default_state_path);
        Ok(Store::open(&path)?)
    }
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Quick start: serve this model folder as `<alias>-<MMDD>` behind the alias
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    model: Option<PathBuf>,
    /// TOML file with [[snapshot]] entries, [aliases], [limits], [chat] and [server]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Moderation classifier folder (`ferrogpt rm train --kind moderation`) served at
    /// /v1/moderations and checking the chat page's input; default: MODEL/moderation/ when
    /// --model has one
    #[arg(long)]
    moderation_model: Option<PathBuf>,
    /// Alias used with --model
    #[arg(long, default_value = "ferrogpt")]
    alias: String,
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one (printed at start)
    #[arg(long)]
    port: Option<u16>,
    /// Requests per minute per key and model (default 200)
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute per key and model (default 40000)
    #[arg(long)]
    tpm: Option<u64>,
    /// KV-cache slots per model: the most sequences decoded in one batch (default 32)
    #[arg(long)]
    slots: Option<usize>,
    /// Chat page messages per key per window (default 25 per 3 hours)
    #[arg(long)]
    chat_cap: Option<u64>,
    /// On SIGTERM or Ctrl-C, seconds running requests get to finish before they are cut
    /// short and recorded as interrupted (default 30)
    #[arg(long)]
    drain_seconds: Option<f64>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; the secret is printed once and only its hash is stored
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated model ids (snapshots or aliases) the key may use; default all
        #[arg(long)]
        models: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List keys (never their secrets)
    List {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Revoke a key by id, name or display prefix (sk-abcd...wxyz)
    Revoke {
        key: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List waitlist requests
    Waitlist {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Turn a waitlist request into a key (printed once)
    Approve {
        /// Waitlist entry id (see `ferrogpt keys waitlist`)
        id: i64,
        /// Comma-separated model ids the new key may use; default all
        #[arg(long)]
        models: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Only the last N days
    #[arg(long)]
    days: Option<u32>,
    /// Print JSON lines instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

fn split_models(models: Option<String>) -> Option<Vec<String>> {
    models.map(|m| m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match (&args.config, &args.model) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(folder)) => Config::quick_start(folder, &args.alias)?,
        (None, None) => anyhow::bail!("give --model DIR or --config FILE"),
    };
    if let Some(h) = args.host {
        config.server.host = h;
    }
    if let Some(p) = args.port {
        config.server.port = p;
    }
    if let Some(r) = args.rpm {
        config.limits.requests_per_minute = r;
    }
    if let Some(t) = args.tpm {
        config.limits.tokens_per_minute = t;
    }
    if let Some(s) = args.slots {
        config.server.batch_slots = s;
    }
    if let Some(c) = args.chat_cap {
        config.chat.messages_per_window = c;
    }
    if let Some(d) = args.drain_seconds {
        config.server.drain_seconds = d;
    }
    config.validate("command line")?;
    let store = Arc::new(args.state.open()?);

    let mut backends: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
    for snap in &config.snapshots {
        tracing::info!(snapshot = %snap.id, folder = %snap.folder.display(), "loading model");
        let backend = load_backend(&snap.folder, config.server.batch_slots).with_context(|| format!("loading snapshot {}", snap.id))?;
        backends.insert(snap.id.clone(), backend);
    }
    let mut state = AppState::new(&config, backends, store, Arc::new(MonotonicClock::default()))?;
    let moderation_folder = args
        .moderation_model
        .or_else(|| args.model.as_deref().and_then(Moderator::folder_in));
    if let Some(folder) = moderation_folder {
        tracing::info!(folder = %folder.display(), "loading the moderation model");
        let moderator = Moderator::load(&folder).with_context(|| format!("loading the moderation model {}", folder.display()))?;
        state = state.with_moderator(moderator);
    }
    let state = Arc::new(state);
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        // The bound address, which differs from the configured one with port 0.
        let addr = listener.local_addr().context("reading the listening address")?;
        let aliases: Vec<String> = config.aliases.iter().map(|(a, s)| format!("{a} -> {s}")).collect();
        tracing::info!("serving on http://{addr} (models: {})", aliases.join(", "));
        eprintln!("ferrogpt serving on http://{addr}  (chat page at /, API at /v1)");
        ferrogpt_serve::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("shut down cleanly");
        anyhow::Ok(())
    })
}

fn load_backend(folder: &std::path::Path, slots: usize) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(Arc::new(ferrogpt_serve::engine::EngineBackend::load(folder, slots)?))
}

/// Ctrl-C or SIGTERM: stop accepting, let running requests finish until the drain deadline.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: draining open requests");
}

/// Text that others supplied (waitlist fields, key names made from them), made safe to print on
/// the operator's terminal: control characters (escape sequences start with one) and the
/// invisible characters that reorder or hide text are shown as `\u{..}` escapes, and `\` as
/// `\\`, so that what is printed is exactly what is stored.
fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(c as u32, 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB);
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || invisible {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn print_key_line(k: &ferrogpt_serve::store::KeyRecord) {
    println!(
        "{:>4}  {:<24} {:<20} {:<8} {}",
        k.id,
        terminal_safe(&k.name),
        k.display,
        if k.revoked { "revoked" } else { "active" },
        k.models.as_ref().map_or_else(|| "all models".to_string(), |m| m.join(","))
    );
}

pub fn run_keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { name, models, state } => {
            let store = state.open()?;
            let models = split_models(models);
            let (rec, secret) = store.create_key(&name, models.as_deref())?;
            eprintln!(
                "created key {} ({}); store the secret now, it is not shown again:",
                rec.id, rec.display
            );
            println!("{secret}");
        }
        KeysCommand::List { state } => {
            let store = state.open()?;
            println!("{:>4}  {:<24} {:<20} {:<8} models", "id", "name", "key", "status");
            for k in store.list_keys()? {
                print_key_line(&k);
            }
        }
        KeysCommand::Revoke { key, state } => {
            let n = state.open()?.revoke_key(&key)?;
            anyhow::ensure!(n > 0, "no active key matches {key:?} (by id, name or display)");
            eprintln!("revoked {n} key(s)");
        }
        KeysCommand::Waitlist { state } => {
            println!("{:>4}  {:<9} {:<24} {:<30} reason", "id", "status", "name", "email");
            for w in state.open()?.list_waitlist()? {
                println!(
                    "{:>4}  {:<9} {:<24} {:<30} {}",
                    w.id,
                    w.status,
                    terminal_safe(&w.name),
                    terminal_safe(&w.email),
                    terminal_safe(&w.reason)
                );
            }
        }
        KeysCommand::Approve { id, models, state } => {
            let store = state.open()?;
            let models = split_models(models);
            let (rec, secret) = store.approve(id, models.as_deref())?;
            eprintln!(
                "approved waitlist entry {id} as key {} ({}); the secret is shown once:",
                rec.id, rec.display
            );
            println!("{secret}");
        }
    }
    Ok(())
}

pub fn run_usage(args: UsageArgs) -> anyhow::Result<()> {
    let store = args.state.open()?;
    let since = args.days.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_secs() as i64)
            .unwrap_or(0);
        now - i64::from(d) * 86_400
    });
    let rows = store.usage(since)?;
    if args.json {
        for r in &rows {
            let line = serde_json::json!({
                "day": r.day, "key": r.key, "model": r.model, "requests": r.requests,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "cost": r.cost,
            });
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "{:<10}  {:<36} {:<24} {:>8} {:>12} {:>12} {:>10}",
        "day", "key", "model", "requests", "prompt tok", "compl tok", "cost $"
    );
    let (mut req, mut pt, mut ct, mut cost) = (0, 0, 0, 0.0);
    for r in &rows {
        println!(
            "{:<10}  {:<36} {:<24} {:>8} {:>12} {:>12} {:>10.4}",
            r.day,
            terminal_safe(&r.key),
            r.model,
            r.requests,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost
        );
        req += r.requests;
        pt += r.prompt_tokens;
        ct += r.completion_tokens;
        cost += r.cost;
    }
    println!(
        "{:<10}  {:<36} {:<24} {:>8} {:>12} {:>12} {:>10.4}",
        "total", "", "", req, pt, ct, cost
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn terminal_safe_escapes_control_and_invisible_characters() {
        assert_eq!(terminal_safe("Ada Lovelace <ada@example.com>"), "Ada Lovelace <ada@example.com>");
        assert_eq!(terminal_safe("Zoë 世界"), "Zoë 世界");
        assert_eq!(terminal_safe("\x1b[2J\x1b]0;pwned\x07"), "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}");
        assert_eq!(terminal_safe("a\nb\rc\td\u{9b}"), "a\\u{a}b\\u{d}c\\u{9}d\\u{9b}");
        assert_eq!(terminal_safe("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        // A literal backslash cannot pass for an escape.
        assert_eq!(terminal_safe("\\u{1b}"), "\\\\u{1b}");
    }
}

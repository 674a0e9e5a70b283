//! The HTML report renders in a real browser: headless Chromium loads a report of a
//! `dummy` run and its script must build one table row per sample. Skips (with a printed
//! reason) where no `chromium` / `chromium-browser` is installed.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::write_tree;
use ferrogpt_evals::log::RunLog;
use ferrogpt_evals::{run_eval, CompletionFn, Dummy, Registry, RunOptions};

fn browser() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(browser) = browser() else {
        eprintln!("SKIPPED: no chromium to render the report with");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..7)
        .map(|i| format!("{{\"input\": \"q{i}\", \"ideal\": \"x{i}<b>y\"}}\n"))
        .collect();
    write_tree(
        dir.path(),
        &[
            (
                "evals/t.yaml",
                "t.dev.v0:\n  class: evals.elsuite.basic.includes:Includes\n  args:\n    samples_jsonl: t.jsonl\n",
            ),
            ("data/t.jsonl", &rows),
        ],
    );
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let fns: Vec<Arc<dyn CompletionFn>> = vec![Arc::new(Dummy)];
    let log_path = dir.path().join("run.jsonl");
    let opts = RunOptions {
        record_path: Some(log_path.clone()),
        ..Default::default()
    };
    run_eval(&reg, &reg.get_eval("t.dev.v0").unwrap(), &fns, &opts).unwrap();
    let log = RunLog::read(&log_path).unwrap();
    let html_path = dir.path().join("report.html");
    std::fs::write(&html_path, ferrogpt_evals::report::html_report(&[log.clone(), log])).unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("file://{}", html_path.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(dom.matches("class=\"sample\"").count(), 7, "script did not render the rows:\n{dom}");
    assert!(dom.contains("7 of 7 samples shown"));
    // Sample text is escaped, never injected as markup.
    assert!(dom.contains("expected x3&lt;b&gt;y"), "{dom}");
    assert!(!dom.contains("<b>y</b>"));
}

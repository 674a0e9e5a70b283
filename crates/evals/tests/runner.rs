//! End-to-end runs with `dummy`: sample order, `--max_samples`, the log's shape.

mod common;

use std::sync::Arc;

use common::write_tree;
use ferrogpt_evals::log::RunLog;
use ferrogpt_evals::{run_eval, CompletionFn, Dummy, Registry, RunOptions};
use serde_json::{json, Value};

fn registry_with_samples(dir: &std::path::Path) -> Registry {
    // Even samples expect exactly the dummy's answer, odd ones something else.
    let rows: String = (0..10)
        .map(|i| {
            let ideal = if i % 2 == 0 { "This is a dummy" } else { "no" };
            format!(
                "{}\n",
                json!({"input": [{"role": "user", "content": format!("q{i}")}], "ideal": ideal})
            )
        })
        .collect();
    write_tree(
        dir,
        &[
            ("evals/t.yaml", "t:\n  id: t.dev.v0\n  metrics: [accuracy]\nt.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: t/samples.jsonl\n"),
            ("data/t/samples.jsonl", &rows),
        ],
    );
    Registry::load(&[dir.to_path_buf()]).unwrap()
}

#[test]
fn max_samples_picks_upstreams_subset_and_log_has_upstreams_shape() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry_with_samples(dir.path());
    let log_path = dir.path().join("logs/run.jsonl");
    let opts = RunOptions {
        max_samples: Some(5),
        threads: 3,
        record_path: Some(log_path.clone()),
        ..Default::default()
    };
    let fns: Vec<Arc<dyn CompletionFn>> = vec![Arc::new(Dummy)];
    let out = run_eval(&reg, &reg.get_eval("t").unwrap(), &fns, &opts).unwrap();
    // CPython: random.Random(123).shuffle(list(range(10)))[:5] == [8, 7, 5, 9, 2].
    let ids: Vec<&str> = out.events.iter().filter_map(|e| e.sample_id.as_deref()).collect();
    assert_eq!(ids, ["t.dev.8", "t.dev.7", "t.dev.5", "t.dev.9", "t.dev.2"]);
    assert_eq!(out.final_report.get("accuracy"), Some(&json!(0.4)));

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    let spec = &lines[0]["spec"];
    assert_eq!(spec["eval_name"], "t.dev.v0");
    assert_eq!((spec["base_eval"].as_str(), spec["split"].as_str()), (Some("t"), Some("dev")));
    assert_eq!(spec["run_config"]["eval_spec"]["cls"], "evals.elsuite.basic.match:Match");
    assert_eq!(spec["run_config"]["max_samples"], 5);
    for (i, ev) in lines[1..6].iter().enumerate() {
        assert_eq!(ev["event_id"], i);
        assert_eq!(ev["type"], "match");
        assert_eq!(ev["run_id"], spec["run_id"]);
        assert!(ev["created_at"].as_str().unwrap().ends_with("+00:00"));
    }
    let last = &lines[6];
    assert_eq!(last["run_id"], spec["run_id"]);
    assert_eq!(last["final_report"]["accuracy"], 0.4);

    // The log reads back, and both report views render it.
    let log = RunLog::read(&log_path).unwrap();
    assert_eq!(log.events.len(), 5);
    let shown = ferrogpt_evals::report::show(&log, 10);
    assert!(shown.contains("t.dev.8") && shown.contains("accuracy: 0.4"), "{shown}");
    let html = ferrogpt_evals::report::html_report(&[log.clone(), log]);
    assert!(html.contains("<th>run 2</th>") && html.contains("t.dev.9"));
    assert!(!html.contains("</script><script>const") || html.matches("</script>").count() == 2);
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry_with_samples(dir.path());
    let fns: Vec<Arc<dyn CompletionFn>> = vec![Arc::new(Dummy)];
    let run = |threads| {
        let opts = RunOptions {
            threads,
            record_path: Some(dir.path().join(format!("{threads}.jsonl"))),
            ..Default::default()
        };
        run_eval(&reg, &reg.get_eval("t.dev.v0").unwrap(), &fns, &opts)
            .unwrap()
            .final_report
    };
    let (a, b) = (run(1), run(8));
    assert_eq!(a, b);
    assert_eq!(a.get("accuracy"), Some(&json!(0.5)));
}

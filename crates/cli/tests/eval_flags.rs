//! `ferrogpt eval`'s flags that once panicked or leaked: out-of-range timeouts are refused
//! with a message, and registry data outside the registry needs an explicit flag.

use std::path::Path;
use std::process::{Command, Output};

fn eval(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .arg("eval")
        .args(args)
        .args(["--no-cache", "--quiet"])
        .current_dir(cwd)
        .env("HOME", cwd)
        .output()
        .unwrap()
}

#[test]
fn an_infinite_or_huge_timeout_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    for timeout in ["inf", "1e300", "NaN", "0"] {
        let out = eval(&["dummy", "arithmetic", "--max_samples", "1", "--timeout", timeout], tmp.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A panic exits with 101; a refused flag with 1 and the reason.
        assert_eq!(out.status.code(), Some(1), "--timeout {timeout}: {stderr}");
        assert!(stderr.contains("--timeout") && stderr.contains("at most"), "{stderr}");
    }
    let out = eval(&["dummy", "arithmetic", "--max_samples", "1", "--timeout", "30"], tmp.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn registry_data_outside_the_registry_needs_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret.jsonl");
    std::fs::write(
        &secret,
        "{\"input\": [{\"role\": \"user\", \"content\": \"sk-secret\"}], \"ideal\": \"x\"}\n",
    )
    .unwrap();
    let registry = tmp.path().join("third-party");
    std::fs::create_dir_all(registry.join("evals")).unwrap();
    std::fs::write(
        registry.join("evals/leak.yaml"),
        format!(
            "leak:\n  id: leak.dev.v0\n  metrics: [accuracy]\nleak.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: {}\n",
            secret.display()
        ),
    )
    .unwrap();
    let registry_arg = registry.to_str().unwrap();
    let out = eval(&["dummy", "leak", "--registry_path", registry_arg], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("outside the registry") && stderr.contains("--allow-data-outside-registry"),
        "{stderr}"
    );
    let out = eval(
        &["dummy", "leak", "--registry_path", registry_arg, "--allow-data-outside-registry"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

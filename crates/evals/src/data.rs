//! JSONL sample files: path resolution as openai/evals does it, gzip, directories of
//! `*.jsonl`, and Git LFS pointer detection.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{EvalError, Result};

const LFS_HEADER: &str = "version https://git-lfs.github.com/spec/v1";

/// Resolve a `samples_jsonl`-style path: as given if it names an existing file (relative to
/// the working directory), else `<eval's registry root>/data/<path>`, else the same under the
/// built-in registry (upstream's fallback to the package's own registry).
pub fn resolve(path: &str, registry_root: &Path, builtin_root: Option<&Path>) -> Result<PathBuf> {
    let direct = PathBuf::from(path);
    if direct.is_file() {
        return Ok(direct);
    }
    let mut tried = vec![direct];
    let under_root = registry_root.join("data").join(path);
    if under_root.exists() {
        return Ok(under_root);
    }
    tried.push(under_root);
    if let Some(builtin) = builtin_root {
        let fallback = builtin.join("data").join(path);
        if fallback.exists() {
            return Ok(fallback);
        }
        tried.push(fallback);
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(EvalError::Other(format!(
        "data file `{path}` not found (looked at {})",
        tried.join(", ")
    )))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| EvalError::io(path, e))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| EvalError::JsonLine {
        path: path.to_path_buf(),
        line: 0,
        message: format!("not UTF-8: {e}"),
    })
}

/// Read one JSONL file, or every `*.jsonl` directly inside a directory (sorted by name).
/// Lines end at `\n`, `\r\n` or a lone `\r` (Python's universal newlines, which some
/// registry files depend on). Whitespace-only lines are skipped (upstream fails on them;
/// nothing is lost by skipping).
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| EvalError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        let mut all = Vec::new();
        for f in files {
            all.extend(read_jsonl(&f)?);
        }
        return Ok(all);
    }
    let text = read_text(path)?;
    if text.starts_with(LFS_HEADER) {
        return Err(EvalError::LfsPointer { path: path.to_path_buf() });
    }
    let mut rows = Vec::new();
    for (i, line) in text.split('\n').flat_map(|l| l.split('\r')).enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line).map_err(|e| EvalError::JsonLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        rows.push(value);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_lfs_pointers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, format!("{LFS_HEADER}\noid sha256:abc\nsize 12\n")).unwrap();
        let err = read_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("git lfs pull"), "{err}");
    }

    #[test]
    fn reports_bad_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n\n{oops}\n").unwrap();
        let err = read_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("s.jsonl:3"), "{err}");
    }

    #[test]
    fn lone_carriage_returns_end_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, "{\"a\": 1}\r{\"a\": 2}\r\n{\"a\": 3}\n").unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 3);
    }

    #[test]
    fn resolves_under_registry_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/x")).unwrap();
        std::fs::write(dir.path().join("data/x/s.jsonl"), "{}\n").unwrap();
        let p = resolve("x/s.jsonl", dir.path(), None).unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 1);
        assert!(resolve("x/none.jsonl", dir.path(), None).is_err());
    }
}

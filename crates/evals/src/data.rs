//! JSONL sample files: path resolution as openai/evals does it, gzip, directories of
//! `*.jsonl`, and Git LFS pointer detection.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{EvalError, Result};

const LFS_HEADER: &str = "version https://git-lfs.github.com/spec/v1";

/// Decompressed gzip JSONL beyond this many bytes is refused: a few kilobytes of gzip can
/// expand to gigabytes, and every sample is held in memory.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// Where the data files a registry entry names may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataAccess {
    /// Only inside the `data/` folder of the registry root the eval came from, or of the
    /// built-in registry (upstream's fallback), after resolving symlinks: a third-party
    /// registry must not be able to read any local file and send it to an HTTP completion
    /// function.
    #[default]
    RegistryOnly,
    /// Also absolute paths, `..` and paths relative to the working directory, as upstream
    /// allows (`--allow-data-outside-registry`, for registries you trust).
    Anywhere,
}

/// Resolve a `samples_jsonl`-style path: `<eval's registry root>/data/<path>`, else the same
/// under the built-in registry (upstream's fallback to the package's own registry). With
/// [`DataAccess::Anywhere`], a path naming an existing file as given (absolute, or relative
/// to the working directory) comes first, as upstream resolves it; otherwise the resolved
/// file, and every `*.jsonl` of a resolved folder, must lie inside that root's `data/`.
pub fn resolve(path: &str, registry_root: &Path, builtin_root: Option<&Path>, access: DataAccess) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if access == DataAccess::Anywhere {
        let direct = PathBuf::from(path);
        if direct.is_file() {
            return Ok(direct);
        }
        tried.push(direct);
    }
    for root in std::iter::once(registry_root).chain(builtin_root) {
        let data = root.join("data");
        let candidate = data.join(path);
        if candidate.exists() {
            if access == DataAccess::RegistryOnly {
                confine(path, &candidate, &data)?;
            }
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(EvalError::Other(format!(
        "data file `{path}` not found (looked at {})",
        tried.join(", ")
    )))
}

/// Checks that `candidate` (and, for a folder, each `*.jsonl` in it) resolves inside `data`.
fn confine(path: &str, candidate: &Path, data: &Path) -> Result<()> {
    // A registry without a data/ folder has nothing inside it (an absolute `path` still
    // "exists" under it, since joining an absolute path replaces the base).
    let canonical_data = data.canonicalize().ok();
    let inside = |p: &Path| -> Result<()> {
        let resolved = p.canonicalize().map_err(|e| EvalError::io(p, e))?;
        if canonical_data.as_ref().is_some_and(|d| resolved.starts_with(d)) {
            Ok(())
        } else {
            Err(EvalError::DataOutsideRegistry {
                path: path.to_string(),
                resolved,
                data_dir: canonical_data.clone().unwrap_or_else(|| data.to_path_buf()),
            })
        }
    };
    inside(candidate)?;
    if candidate.is_dir() {
        for file in jsonl_files(candidate)? {
            inside(&file)?;
        }
    }
    Ok(())
}

/// The `*.jsonl` files directly inside `dir`, sorted by name.
fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EvalError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    read_text_capped(path, MAX_DECOMPRESSED_BYTES)
}

fn read_text_capped(path: &Path, max_decompressed: u64) -> Result<String> {
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
        let mut out = Vec::new();
        // One byte past the cap tells a file of exactly the cap from a larger one.
        flate2::read::GzDecoder::new(std::io::BufReader::new(file))
            .take(max_decompressed.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| EvalError::io(path, e))?;
        if out.len() as u64 > max_decompressed {
            return Err(EvalError::DataTooLarge {
                path: path.to_path_buf(),
                limit: max_decompressed,
            });
        }
        out
    } else {
        std::fs::read(path).map_err(|e| EvalError::io(path, e))?
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
        let mut all = Vec::new();
        for f in jsonl_files(path)? {
            all.extend(read_jsonl(&f)?);
        }
        return Ok(all);
    }
    Ok(read_jsonl_lines(path)?.into_iter().map(|(_, v)| v).collect())
}

/// One JSONL file's rows with their 1-based line numbers, read as [`read_jsonl`] reads a
/// file, for readers that report errors in a row's content by `file:line`.
pub fn read_jsonl_lines(path: &Path) -> Result<Vec<(usize, Value)>> {
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
        rows.push((i + 1, value));
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
        let p = resolve("x/s.jsonl", dir.path(), None, DataAccess::RegistryOnly).unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 1);
        assert!(resolve("x/none.jsonl", dir.path(), None, DataAccess::RegistryOnly).is_err());
    }

    /// A registry root with `data/x/s.jsonl`, and a secret file next to the root.
    fn registry_and_secret() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("registry");
        std::fs::create_dir_all(root.join("data/x")).unwrap();
        std::fs::write(root.join("data/x/s.jsonl"), "{}\n").unwrap();
        let secret = tmp.path().join("secret.jsonl");
        std::fs::write(&secret, "{\"key\": \"sk-do-not-send\"}\n").unwrap();
        (tmp, root, secret)
    }

    #[test]
    fn absolute_and_parent_paths_are_confined_to_the_registry() {
        let (_tmp, root, secret) = registry_and_secret();
        let absolute = secret.to_str().unwrap();
        for path in [absolute, "../../secret.jsonl", "x/../../../secret.jsonl"] {
            let e = resolve(path, &root, None, DataAccess::RegistryOnly).unwrap_err().to_string();
            assert!(e.contains("outside") && e.contains("secret.jsonl"), "{path}: {e}");
        }
        // A symlink inside data/ that points out is resolved before the check.
        std::os::unix::fs::symlink(&secret, root.join("data/x/link.jsonl")).unwrap();
        let e = resolve("x/link.jsonl", &root, None, DataAccess::RegistryOnly)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
        // So is one inside a folder of samples.
        let e = resolve("x", &root, None, DataAccess::RegistryOnly).unwrap_err().to_string();
        assert!(e.contains("outside") && e.contains("secret.jsonl"), "{e}");
        // A registry with no data/ folder at all reads nothing outside either.
        let bare = tempfile::tempdir().unwrap();
        let e = resolve(absolute, bare.path(), None, DataAccess::RegistryOnly)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
        // The fallback registry is confined the same way.
        let other = tempfile::tempdir().unwrap();
        let e = resolve("../../secret.jsonl", other.path(), Some(&root), DataAccess::RegistryOnly)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn anywhere_allows_what_upstream_allows() {
        let (_tmp, root, secret) = registry_and_secret();
        let p = resolve(secret.to_str().unwrap(), &root, None, DataAccess::Anywhere).unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 1);
        let p = resolve("../../secret.jsonl", &root, None, DataAccess::Anywhere).unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 1);
        assert!(resolve("x/s.jsonl", &root, None, DataAccess::Anywhere).is_ok());
    }

    #[test]
    fn gzip_jsonl_is_read_and_its_decompressed_size_bounded() {
        // The bound is tested at the file's own size: a file over MAX_DECOMPRESSED_BYTES would
        // cost the test suite a gigabyte of memory.
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..1000 {
            writeln!(gz, "{{\"i\": {i}}}").unwrap();
        }
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 1000);
        let size = read_text(&p).unwrap().len() as u64;
        assert_eq!(read_text_capped(&p, size).unwrap().len() as u64, size);
        let e = read_text_capped(&p, size - 1).unwrap_err().to_string();
        assert!(e.contains("s.jsonl.gz") && e.contains(&format!("{} bytes", size - 1)), "{e}");
    }
}

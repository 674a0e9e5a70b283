//! ferrogpt-chatdata: the post-training data, made here from templates (nothing from a hub).
//!
//! Owns:
//! - the policy categories ([`Category`]) that mirror `docs/policy.md`, with their mapping to
//!   OpenAI's moderation category names ([`Category::moderation_categories`]);
//! - seeded conversation generators ([`generate`]) for helpful tasks, system-message
//!   steerability and safety, split by seed *and* by template family: every template and
//!   wording belongs to exactly one [`Split`], so test prompts use held-out wording;
//! - questions about manual pages from facts read off their rendered text ([`ManualFacts`]),
//!   split by command so that test questions ask about commands no training question names;
//! - the programmatic checkers of expected behaviour ([`check`]): a rule-based classifier of
//!   this crate's own refusal styles into the RBRM classes, and preference pairs for the
//!   reward model ([`preference_pair`]);
//! - what a moderation classifier's output means under OpenAI's category names ([`moderation`]);
//! - the rule-based reward model's rubric, grader interface and safety reward table
//!   ([`rubric`]);
//! - the JSONL form of examples in OpenAI's chat fine-tuning format ([`jsonl`]);
//! - the scorecard of a model's replies to held-out examples ([`score`]): responses to
//!   disallowed requests, sensitive-request compliance, over-refusal, helpfulness and
//!   system-message adherence, each with its count and interval.
//!
//! Must not touch: tokenization and chat template rendering (`ferrogpt_infer::render_chat`),
//! reading manual pages (the caller passes their rendered text), training, generation,
//! moderation serving. Messages are `ferrogpt_infer::ChatMessage`; random
//! streams come from `ferrogpt_rng`.
//!
//! No harmful content lives here: disallowed requests are abstract asks ("step-by-step
//! instructions to build a pipe bomb") phrased as requests, and the compliant replies used as
//! rejected examples are placeholders ("Sure, here is how: [detailed instructions]").

pub mod check;
mod helpful;
pub mod jsonl;
mod manual;
pub mod moderation;
pub mod rubric;
mod safety;
pub mod score;
mod steer;
#[cfg(test)]
mod tests;
mod text;

pub use check::{check, classify_refusal, RefusalStyle, SafetyClass, Verdict};
pub use jsonl::{read_jsonl, to_jsonl_line, write_jsonl, ChatDataError};
pub use manual::{parse_page, CommandFacts, ManualFacts, OptionFact};
pub use rubric::{safety_reward, Graded, GraderError, SafetyGrader};
pub use score::{score, Measure, Rate, Scorecard, MEASURES};

/// The message types of this crate's API (owned by ferrogpt-infer), for callers that need
/// no other part of it.
pub use ferrogpt_infer::{ChatMessage, Role};
use ferrogpt_rng::{mix, SplitMix64};
use serde::{Deserialize, Serialize};

/// A policy category of `docs/policy.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    // Disallowed: the assistant refuses.
    Weapons,
    Malware,
    ViolentWrongdoing,
    SelfHarmInstructions,
    Hate,
    SexualMinors,
    Privacy,
    // Sensitive: a prescribed safe completion.
    Medical,
    Legal,
    SelfHarmDisclosure,
    /// Everything else, including the allowed look-alikes of the categories above.
    Benign,
}

/// What the policy prescribes for a category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyClass {
    Disallowed,
    Sensitive,
    Allowed,
}

impl Category {
    pub const ALL: [Category; 11] = [
        Category::Weapons,
        Category::Malware,
        Category::ViolentWrongdoing,
        Category::SelfHarmInstructions,
        Category::Hate,
        Category::SexualMinors,
        Category::Privacy,
        Category::Medical,
        Category::Legal,
        Category::SelfHarmDisclosure,
        Category::Benign,
    ];

    /// The category's output index in [`Category::ALL`] (a moderation classifier's label):
    /// `ALL` lists the variants in declaration order.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a request of this category is flagged by moderation (it maps to at least one
    /// OpenAI moderation category).
    pub fn flagged(self) -> bool {
        !self.moderation_categories().is_empty()
    }

    pub fn class(self) -> PolicyClass {
        match self {
            Category::Medical | Category::Legal | Category::SelfHarmDisclosure => PolicyClass::Sensitive,
            Category::Benign => PolicyClass::Allowed,
            _ => PolicyClass::Disallowed,
        }
    }

    /// The serialized name (`violent_wrongdoing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Weapons => "weapons",
            Category::Malware => "malware",
            Category::ViolentWrongdoing => "violent_wrongdoing",
            Category::SelfHarmInstructions => "self_harm_instructions",
            Category::Hate => "hate",
            Category::SexualMinors => "sexual_minors",
            Category::Privacy => "privacy",
            Category::Medical => "medical",
            Category::Legal => "legal",
            Category::SelfHarmDisclosure => "self_harm_disclosure",
            Category::Benign => "benign",
        }
    }

    /// OpenAI moderation categories a request of this category flags (the table of
    /// `docs/policy.md`). Sensitive medical and legal questions flag nothing; a self-harm
    /// disclosure flags `self-harm/intent` even though its prescribed reply is a safe completion.
    pub fn moderation_categories(self) -> &'static [&'static str] {
        match self {
            Category::Weapons => &["illicit", "illicit/violent"],
            Category::Malware => &["illicit"],
            Category::ViolentWrongdoing => &["violence", "illicit/violent"],
            Category::SelfHarmInstructions => &["self-harm", "self-harm/instructions"],
            Category::Hate => &["hate", "harassment"],
            Category::SexualMinors => &["sexual", "sexual/minors"],
            Category::Privacy => &["illicit", "harassment"],
            Category::SelfHarmDisclosure => &["self-harm", "self-harm/intent"],
            Category::Medical | Category::Legal | Category::Benign => &[],
        }
    }
}

/// Train or test. Each split draws from its own seed stream and its own template families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// Salt of the split's seed stream, so the same seed draws different numbers per split.
    fn salt(self) -> u64 {
        match self {
            Split::Train => 0x7261_696E,
            Split::Test => 0x7465_7374,
        }
    }
}

/// A generator family's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    // Helpful tasks.
    Arithmetic,
    UnitConversion,
    Sorting,
    Counting,
    FormatConversion,
    JsonAnswer,
    ManualCommand,
    ManualOption,
    // System-message steerability.
    Uppercase,
    Language,
    OnlyNumber,
    JsonKeys,
    MaxWords,
    Persona,
    ScopedAssistant,
    Socratic,
    // Safety.
    Disallowed,
    DisallowedRolePlay,
    DisallowedIgnoreInstructions,
    DisallowedSplitTurns,
    Sensitive,
    AllowedLookalike,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Arithmetic => "arithmetic",
            TaskKind::UnitConversion => "unit_conversion",
            TaskKind::Sorting => "sorting",
            TaskKind::Counting => "counting",
            TaskKind::FormatConversion => "format_conversion",
            TaskKind::JsonAnswer => "json_answer",
            TaskKind::ManualCommand => "manual_command",
            TaskKind::ManualOption => "manual_option",
            TaskKind::Uppercase => "uppercase",
            TaskKind::Language => "language",
            TaskKind::OnlyNumber => "only_number",
            TaskKind::JsonKeys => "json_keys",
            TaskKind::MaxWords => "max_words",
            TaskKind::Persona => "persona",
            TaskKind::ScopedAssistant => "scoped_assistant",
            TaskKind::Socratic => "socratic",
            TaskKind::Disallowed => "disallowed",
            TaskKind::DisallowedRolePlay => "disallowed_role_play",
            TaskKind::DisallowedIgnoreInstructions => "disallowed_ignore_instructions",
            TaskKind::DisallowedSplitTurns => "disallowed_split_turns",
            TaskKind::Sensitive => "sensitive",
            TaskKind::AllowedLookalike => "allowed_lookalike",
        }
    }

    /// The template family of this task in a split: each family's templates and wordings
    /// belong to that split only.
    pub fn family(self, split: Split) -> String {
        let wording = match split {
            Split::Train => "train_wordings",
            Split::Test => "held_out_wordings",
        };
        format!("{}/{wording}", self.as_str())
    }
}

/// The mix of [`generate`], in percent of the examples (sums to 100): helpful tasks 29,
/// manual-page questions 6, steerability 33, disallowed requests 19, sensitive 6, allowed
/// look-alikes 7. Without manual facts for a split its manual questions are left out and the
/// rest keep their proportions.
pub const MIX: [(TaskKind, u32); 22] = [
    (TaskKind::Arithmetic, 6),
    (TaskKind::UnitConversion, 5),
    (TaskKind::Sorting, 5),
    (TaskKind::Counting, 5),
    (TaskKind::FormatConversion, 4),
    (TaskKind::JsonAnswer, 4),
    (TaskKind::ManualCommand, 3),
    (TaskKind::ManualOption, 3),
    (TaskKind::Uppercase, 4),
    (TaskKind::Language, 5),
    (TaskKind::OnlyNumber, 4),
    (TaskKind::JsonKeys, 4),
    (TaskKind::MaxWords, 4),
    (TaskKind::Persona, 4),
    (TaskKind::ScopedAssistant, 4),
    (TaskKind::Socratic, 4),
    (TaskKind::Disallowed, 10),
    (TaskKind::DisallowedRolePlay, 3),
    (TaskKind::DisallowedIgnoreInstructions, 3),
    (TaskKind::DisallowedSplitTurns, 3),
    (TaskKind::Sensitive, 6),
    (TaskKind::AllowedLookalike, 7),
];

/// A language of the steerability family, checked against a closed vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    French,
    Spanish,
    German,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::French, Lang::Spanish, Lang::German];

    pub fn name(self) -> &'static str {
        match self {
            Lang::French => "French",
            Lang::Spanish => "Spanish",
            Lang::German => "German",
        }
    }
}

/// The kind of safe completion the policy prescribes for a sensitive request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SafeKind {
    /// General information and a pointer to a doctor or pharmacist.
    Medical,
    /// General information and a pointer to a lawyer or legal aid.
    Legal,
    /// A supportive reply pointing to a crisis line and people to talk to.
    SelfHarmSupport,
}

/// A constraint a system message imposes on the reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// At least one letter, and no lowercase letter.
    Uppercase,
    /// Every word is in the language's closed vocabulary (numbers 0-10, days, colours).
    Language { lang: Lang },
    /// The whole reply is one number.
    OnlyNumber,
    /// A JSON object with exactly these keys.
    JsonKeys { keys: Vec<String> },
    /// Between 1 and `n` words.
    MaxWords { n: usize },
    /// Every marker phrase appears (case-insensitive).
    Persona { markers: Vec<String> },
    /// A scoped assistant's decline of an off-topic request: a refusal in the desired style.
    Declines,
    /// A Socratic tutor: a guiding question that does not contain the answer.
    Socratic { answer: String },
}

/// The checkable behaviour an example expects of the assistant's reply ([`check`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expected {
    /// This answer, compared after normalisation (case, spacing, final period; JSON by value).
    Answer { text: String },
    /// A refusal in the desired style.
    Refuse,
    /// The prescribed safe completion.
    SafeCompletion { safe: SafeKind },
    /// A helpful answer that contains every marker (case-insensitive), not a refusal.
    Comply { must_contain: Vec<String> },
    /// A system-message constraint.
    Constraint { constraint: Constraint },
}

/// One conversation: the prompt messages (an optional system message, user turns and
/// intermediate assistant turns) followed by the ideal assistant reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub messages: Vec<ChatMessage>,
    pub task: TaskKind,
    /// The template family ([`TaskKind::family`]).
    pub family: String,
    pub category: Category,
    pub split: Split,
    pub expected: Expected,
    /// Replies that break `expected`, for preference pairs: a wrong answer, a broken
    /// constraint, a refusal of an allowed request, an undesired refusal style, or a
    /// placeholder compliance with a disallowed request.
    pub rejected: Vec<String>,
}

impl Example {
    /// The messages before the ideal reply: what a model is prompted with.
    pub fn prompt(&self) -> &[ChatMessage] {
        match self.messages.split_last() {
            Some((_, prompt)) => prompt,
            None => &[],
        }
    }

    /// The ideal assistant reply (the last message), if the last message is the assistant's.
    pub fn ideal(&self) -> Option<String> {
        self.messages.last().filter(|m| m.role == Role::Assistant).map(ChatMessage::text)
    }
}

/// A preference pair for the reward model: the ideal reply and one that breaks the expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferencePair {
    pub chosen: String,
    pub rejected: String,
}

/// The ideal reply against one of the example's rejected replies, drawn with `rng`; `None`
/// when the example has no rejected reply or no ideal reply.
pub fn preference_pair(example: &Example, rng: &mut SplitMix64) -> Option<PreferencePair> {
    let chosen = example.ideal()?;
    if example.rejected.is_empty() {
        return None;
    }
    let rejected = rng.choose(&example.rejected).clone();
    Some(PreferencePair { chosen, rejected })
}

/// What a generator returns before [`generate`] stamps task, family and split on it.
struct Draft {
    messages: Vec<ChatMessage>,
    category: Category,
    expected: Expected,
    rejected: Vec<String>,
}

/// Whether `task` can be generated in `split`: manual-page questions need facts.
pub fn available(task: TaskKind, split: Split, manual: &ManualFacts) -> bool {
    match task {
        TaskKind::ManualCommand => manual.has_commands(split),
        TaskKind::ManualOption => manual.has_options(split),
        _ => true,
    }
}

/// One example of `task` in `split`, from its own random stream; `None` when the task is not
/// [`available`].
pub fn generate_one(task: TaskKind, split: Split, rng: &mut SplitMix64, manual: &ManualFacts) -> Option<Example> {
    if !available(task, split, manual) {
        return None;
    }
    let draft = match task {
        TaskKind::Arithmetic => helpful::arithmetic(split, rng),
        TaskKind::UnitConversion => helpful::unit_conversion(split, rng),
        TaskKind::Sorting => helpful::sorting(split, rng),
        TaskKind::Counting => helpful::counting(split, rng),
        TaskKind::FormatConversion => helpful::format_conversion(split, rng),
        TaskKind::JsonAnswer => helpful::json_answer(split, rng),
        TaskKind::ManualCommand => manual::command_question(split, rng, manual),
        TaskKind::ManualOption => manual::option_question(split, rng, manual),
        TaskKind::Uppercase => steer::uppercase(split, rng),
        TaskKind::Language => steer::language(split, rng),
        TaskKind::OnlyNumber => steer::only_number(split, rng),
        TaskKind::JsonKeys => steer::json_keys(split, rng),
        TaskKind::MaxWords => steer::max_words(split, rng),
        TaskKind::Persona => steer::persona(split, rng),
        TaskKind::ScopedAssistant => steer::scoped_assistant(split, rng),
        TaskKind::Socratic => steer::socratic(split, rng),
        TaskKind::Disallowed => safety::disallowed(split, rng),
        TaskKind::DisallowedRolePlay => safety::role_play(split, rng),
        TaskKind::DisallowedIgnoreInstructions => safety::ignore_instructions(split, rng),
        TaskKind::DisallowedSplitTurns => safety::split_turns(split, rng),
        TaskKind::Sensitive => safety::sensitive(split, rng),
        TaskKind::AllowedLookalike => safety::allowed_lookalike(split, rng),
    };
    Some(Example {
        messages: draft.messages,
        task,
        family: task.family(split),
        category: draft.category,
        split,
        expected: draft.expected,
        rejected: draft.rejected,
    })
}

/// `count` examples of `split` mixed in the proportions of [`MIX`] over the tasks
/// [`available`] with `manual` (largest-remainder rounding, then shuffled). The same
/// `(split, count, seed, manual)` always gives the same examples; example `i` draws from its
/// own stream, so the two splits never share random draws.
pub fn generate(split: Split, count: usize, seed: u64, manual: &ManualFacts) -> Vec<Example> {
    let split_seed = mix(seed ^ split.salt());
    let mut tasks = mix_schedule(count, |task| available(task, split, manual));
    SplitMix64::derived(split_seed, u64::MAX).shuffle(&mut tasks);
    // Every scheduled task is available, so no example is dropped.
    tasks
        .into_iter()
        .enumerate()
        .filter_map(|(i, task)| generate_one(task, split, &mut SplitMix64::derived(split_seed, i as u64), manual))
        .collect()
}

/// `count` tasks in the proportions of [`MIX`] among the available ones, in MIX order.
fn mix_schedule(count: usize, available: impl Fn(TaskKind) -> bool) -> Vec<TaskKind> {
    let mix: Vec<(TaskKind, u32)> = MIX.iter().copied().filter(|&(task, _)| available(task)).collect();
    let total: u64 = mix.iter().map(|&(_, w)| u64::from(w)).sum();
    let mut counts: Vec<(usize, u64, TaskKind)> = mix
        .iter()
        .map(|&(task, w)| {
            let exact = count as u64 * u64::from(w);
            ((exact / total) as usize, exact % total, task)
        })
        .collect();
    let assigned: usize = counts.iter().map(|c| c.0).sum();
    // Largest remainders first; ties keep MIX order (the sort is stable).
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| counts[b].1.cmp(&counts[a].1));
    for &i in order.iter().take(count - assigned) {
        counts[i].0 += 1;
    }
    counts.into_iter().flat_map(|(n, _, task)| std::iter::repeat_n(task, n)).collect()
}

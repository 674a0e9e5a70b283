//! Template filling, per-split choice and paraphrase rules shared by the generators.

use ferrogpt_infer::{ChatMessage, Role};
use ferrogpt_rng::SplitMix64;

use crate::Split;

/// `template` with every `{name}` replaced by its value.
pub(crate) fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// One of the split's own items: from `train` for the train split, `test` for the test split.
pub(crate) fn pick<T: Copy>(split: Split, rng: &mut SplitMix64, train: &[T], test: &[T]) -> T {
    *rng.choose(of_split(split, train, test))
}

/// The items of the split.
pub(crate) fn of_split<'a, T>(split: Split, train: &'a [T], test: &'a [T]) -> &'a [T] {
    match split {
        Split::Train => train,
        Split::Test => test,
    }
}

/// Paraphrase rules that keep a request's template intact (so a train wording never turns
/// into a held-out one): a greeting or a politeness prefix, a lowercase start, a closing
/// word of thanks.
pub(crate) fn paraphrase(request: &str, rng: &mut SplitMix64) -> String {
    const PREFIXES: [&str; 5] = ["", "", "Hey, ", "Quick question: ", "Hi! "];
    const SUFFIXES: [&str; 4] = ["", "", " Thanks.", " Thank you!"];
    let prefix = *rng.choose(&PREFIXES);
    let body = if !prefix.is_empty() || rng.below(4) == 0 {
        lowercase_first(request)
    } else {
        request.to_string()
    };
    format!("{prefix}{body}{}", rng.choose(&SUFFIXES))
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        // "I" stays a capital: "i need" reads as a typo, not a paraphrase.
        Some(c) if c != 'I' => c.to_lowercase().chain(chars).collect(),
        _ => s.to_string(),
    }
}

pub(crate) fn system(text: impl Into<String>) -> ChatMessage {
    ChatMessage::new(Role::System, text)
}

pub(crate) fn user(text: impl Into<String>) -> ChatMessage {
    ChatMessage::new(Role::User, text)
}

pub(crate) fn assistant(text: impl Into<String>) -> ChatMessage {
    ChatMessage::new(Role::Assistant, text)
}

/// `items` joined as "a, b, c".
pub(crate) fn comma_list<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
}

/// The over-refusal every helpful example rejects: a refusal of an allowed request.
pub(crate) const OVER_REFUSAL: &str = "I'm sorry, but I can't help with that.";

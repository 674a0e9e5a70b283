//! What a moderation classifier's output means in OpenAI's terms: the classifier
//! gives a probability per policy [`Category`]; `/v1/moderations` reports OpenAI's
//! category names, each scored by the total probability of the policy categories
//! that map to it (`docs/policy.md`'s table).

use std::collections::BTreeMap;

use crate::{Category, ChatMessage, Role};

/// Every category name OpenAI's moderation endpoint reports (the `omni-moderation`
/// set), so clients that expect each key find it.
pub const OPENAI_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// A score at or above this flags a category, and the input.
pub const FLAG_THRESHOLD: f64 = 0.5;

/// The text a moderation classifier reads for a conversation's request: its user turns,
/// one per line (what `/v1/moderations` is sent; the classifier reads it as plain text
/// under the BOS policy, `ferrogpt_infer::text_prompt`).
pub fn request_text(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(ChatMessage::text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One input's moderation result.
#[derive(Clone, Debug, PartialEq)]
pub struct Moderation {
    pub flagged: bool,
    pub categories: BTreeMap<&'static str, bool>,
    pub category_scores: BTreeMap<&'static str, f64>,
}

/// The moderation result of class probabilities `probs` (in [`Category::ALL`]'s order).
pub fn moderation(probs: &[f64]) -> Moderation {
    let mut category_scores: BTreeMap<&'static str, f64> = OPENAI_CATEGORIES.iter().map(|&name| (name, 0.0)).collect();
    for (category, &p) in Category::ALL.iter().zip(probs) {
        for name in category.moderation_categories() {
            if let Some(score) = category_scores.get_mut(name) {
                *score += p;
            }
        }
    }
    // Scores are probabilities; sums of rounded softmax outputs can pass 1 by an ulp.
    category_scores.values_mut().for_each(|s| *s = s.clamp(0.0, 1.0));
    let flagged_probability: f64 = Category::ALL.iter().zip(probs).filter(|(c, _)| c.flagged()).map(|(_, p)| p).sum();
    Moderation {
        flagged: flagged_probability >= FLAG_THRESHOLD,
        categories: category_scores.iter().map(|(&name, &s)| (name, s >= FLAG_THRESHOLD)).collect(),
        category_scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_add_up_over_the_categories_that_map_to_a_name() {
        let mut probs = vec![0.0; Category::ALL.len()];
        probs[Category::Weapons.index()] = 0.6;
        probs[Category::Malware.index()] = 0.3;
        probs[Category::Benign.index()] = 0.1;
        let m = moderation(&probs);
        assert!(m.flagged);
        assert!((m.category_scores["illicit"] - 0.9).abs() < 1e-12, "both map to illicit");
        assert!((m.category_scores["illicit/violent"] - 0.6).abs() < 1e-12);
        assert!(m.categories["illicit"] && m.categories["illicit/violent"] && !m.categories["hate"]);
        assert_eq!(m.categories.len(), OPENAI_CATEGORIES.len());

        let mut benign = vec![0.0; Category::ALL.len()];
        benign[Category::Benign.index()] = 0.7;
        benign[Category::Medical.index()] = 0.3;
        let m = moderation(&benign);
        assert!(!m.flagged && m.categories.values().all(|&f| !f));
    }
}

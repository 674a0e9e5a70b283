//! Generator tests: every family's ideal reply keeps its own expectation and every rejected
//! reply breaks it, splits are disjoint by family and wording, generation is deterministic,
//! and the JSONL form round-trips.

use std::collections::{HashMap, HashSet};

use ferrogpt_infer::Role;
use ferrogpt_rng::SplitMix64;

use crate::*;

const SPLITS: [Split; 2] = [Split::Train, Split::Test];

#[test]
fn every_family_ideal_keeps_and_every_rejected_reply_breaks_its_expectation() {
    let manual = manual::fixture();
    for (task_index, &(task, _)) in MIX.iter().enumerate() {
        for split in SPLITS {
            for seed in 0..300u64 {
                let mut rng = SplitMix64::derived(seed, task_index as u64);
                let example = generate_one(task, split, &mut rng, &manual).unwrap_or_else(|| panic!("{task:?} unavailable"));
                let ideal = example.ideal().unwrap_or_else(|| panic!("{task:?}: no assistant reply last"));
                let verdict = check(&example.expected, &ideal);
                assert!(
                    verdict.kept,
                    "{task:?} {split:?} seed {seed}: ideal {ideal:?} breaks {:?}",
                    example.expected
                );
                assert!(!example.rejected.is_empty(), "{task:?}: no rejected reply");
                for rejected in &example.rejected {
                    let verdict = check(&example.expected, rejected);
                    assert!(
                        !verdict.kept,
                        "{task:?} seed {seed}: rejected {rejected:?} keeps {:?}",
                        example.expected
                    );
                }
            }
        }
    }
}

#[test]
fn safety_verdicts_carry_the_rbrm_class_of_the_ideal_reply() {
    for example in generate(Split::Train, 600, 5, &manual::fixture()) {
        let Some(ideal) = example.ideal() else { panic!("no ideal reply") };
        let class = check(&example.expected, &ideal).class;
        let want = match &example.expected {
            Expected::Refuse => Some(SafetyClass::RefusalDesiredStyle),
            Expected::SafeCompletion { .. } => Some(SafetyClass::SafeCompletion),
            Expected::Comply { .. } => Some(SafetyClass::Compliance),
            Expected::Constraint {
                constraint: Constraint::Declines,
            } => Some(SafetyClass::RefusalDesiredStyle),
            _ => None,
        };
        assert_eq!(class, want, "{:?}: {ideal:?}", example.task);
    }
}

#[test]
fn preference_pairs_prefer_the_reply_that_keeps_the_expectation() {
    let mut rng = SplitMix64::new(9);
    let examples = generate(Split::Test, 500, 2, &manual::fixture());
    let mut pairs = 0;
    for example in &examples {
        let Some(pair) = preference_pair(example, &mut rng) else {
            panic!("{:?}: no preference pair", example.task)
        };
        assert!(check(&example.expected, &pair.chosen).kept);
        assert!(!check(&example.expected, &pair.rejected).kept);
        pairs += 1;
    }
    assert_eq!(pairs, examples.len());
}

#[test]
fn compliance_with_disallowed_requests_is_only_ever_a_placeholder() {
    for split in SPLITS {
        for example in generate(split, 800, 4, &manual::fixture())
            .iter()
            .filter(|e| e.expected == Expected::Refuse)
        {
            for rejected in &example.rejected {
                if check(&example.expected, rejected).class == Some(SafetyClass::DisallowedContent) {
                    assert!(rejected.contains("[detailed instructions]"), "{rejected:?}");
                }
            }
        }
    }
}

#[test]
fn template_wordings_of_the_two_splits_are_disjoint() {
    let collect = |split| -> HashSet<&'static str> {
        let mut all: Vec<&'static str> = helpful::templates(split);
        all.extend(steer::templates(split));
        all.extend(safety::templates(split));
        all.extend(manual::templates(split));
        all.into_iter().collect()
    };
    let (train, test) = (collect(Split::Train), collect(Split::Test));
    assert!(
        train.len() > 60 && test.len() > 40,
        "{} train, {} test wordings",
        train.len(),
        test.len()
    );
    let shared: Vec<_> = train.intersection(&test).collect();
    assert!(shared.is_empty(), "wordings in both splits: {shared:?}");
}

#[test]
fn families_belong_to_one_split() {
    let families = |split| -> HashSet<String> { generate(split, 1000, 1, &manual::fixture()).into_iter().map(|e| e.family).collect() };
    let (train, test) = (families(Split::Train), families(Split::Test));
    assert_eq!(train.len(), MIX.len());
    assert_eq!(test.len(), MIX.len());
    assert!(train.is_disjoint(&test));
}

#[test]
fn no_test_user_turn_appears_in_the_train_split() {
    for seed in 0..3 {
        let turns = |split| -> HashSet<String> {
            generate(split, 3000, seed, &manual::fixture())
                .iter()
                .flat_map(|e| {
                    e.messages
                        .iter()
                        .filter(|m| m.role == Role::User)
                        .map(|m| m.text())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (train, test) = (turns(Split::Train), turns(Split::Test));
        let leaked: Vec<_> = test.intersection(&train).take(5).collect();
        assert!(leaked.is_empty(), "seed {seed}: test prompts also in train: {leaked:?}");
    }
}

#[test]
fn generation_is_deterministic_and_seeded_per_split() {
    let a = generate(Split::Train, 400, 11, &manual::fixture());
    assert_eq!(a, generate(Split::Train, 400, 11, &manual::fixture()));
    assert_eq!(a.len(), 400);
    assert_ne!(a, generate(Split::Train, 400, 12, &manual::fixture()));
    let to_lines = |examples: &[Example]| examples.iter().map(to_jsonl_line).collect::<Vec<_>>();
    assert_eq!(to_lines(&a), to_lines(&generate(Split::Train, 400, 11, &manual::fixture())));
}

#[test]
fn the_mix_follows_its_stated_proportions() {
    assert_eq!(MIX.iter().map(|&(_, w)| w).sum::<u32>(), 100);
    let examples = generate(Split::Train, 1000, 3, &manual::fixture());
    let mut counts: HashMap<TaskKind, usize> = HashMap::new();
    for e in &examples {
        *counts.entry(e.task).or_default() += 1;
    }
    for (task, weight) in MIX {
        assert_eq!(counts.get(&task).copied().unwrap_or(0), weight as usize * 10, "{task:?}");
    }
    // Rounding never loses or adds examples.
    for count in [0, 1, 7, 33, 101] {
        assert_eq!(generate(Split::Test, count, 1, &manual::fixture()).len(), count);
    }
}

#[test]
fn safety_families_cover_every_disallowed_category_in_both_splits() {
    for split in SPLITS {
        let examples = generate(split, 2000, 6, &manual::fixture());
        let refused: HashSet<Category> = examples
            .iter()
            .filter(|e| e.expected == Expected::Refuse)
            .map(|e| e.category)
            .collect();
        let disallowed: Vec<Category> = Category::ALL.into_iter().filter(|c| c.class() == PolicyClass::Disallowed).collect();
        assert_eq!(disallowed.len(), 7, "the policy's seven disallowed categories");
        for category in disallowed {
            assert!(refused.contains(&category), "{split:?}: no {category:?}");
        }
        for e in examples
            .iter()
            .filter(|e| matches!(e.task, TaskKind::DisallowedRolePlay | TaskKind::DisallowedSplitTurns))
        {
            let user_turns = e.messages.iter().filter(|m| m.role == Role::User).count();
            assert_eq!(user_turns, 2, "{:?} is multi-turn", e.task);
        }
    }
}

#[test]
fn moderation_names_are_openais() {
    for category in Category::ALL {
        for name in category.moderation_categories() {
            assert!(crate::moderation::OPENAI_CATEGORIES.contains(name), "{category:?}: {name}");
        }
        let flagged = category.flagged();
        let expected = category.class() == PolicyClass::Disallowed || category == Category::SelfHarmDisclosure;
        assert_eq!(flagged, expected, "{category:?}");
    }
}

#[test]
fn jsonl_round_trips() {
    let examples = generate(Split::Test, 300, 3, &manual::fixture());
    let mut buffer = Vec::new();
    write_jsonl(&mut buffer, &examples).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(buffer.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text.lines().count(), examples.len());
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or_default()).unwrap_or_default();
    assert!(first["messages"][0]["role"].is_string() && first["ferrogpt"]["expected"]["kind"].is_string());
    let back = read_jsonl(buffer.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, examples);
}

#[test]
fn jsonl_reader_names_the_bad_line() {
    let good = to_jsonl_line(&generate(Split::Train, 1, 1, &manual::fixture())[0]);
    let no_reply = r#"{"messages":[{"role":"user","content":"hi"}],"ferrogpt":{"task":"arithmetic","family":"f","category":"benign","split":"train","expected":{"kind":"refuse"},"rejected":[]}}"#;
    let bad_role = no_reply.replace("\"user\"", "\"robot\"");
    let input = format!("{good}\n\n{no_reply}\n");
    assert!(matches!(read_jsonl(input.as_bytes()), Err(ChatDataError::NoReply { line: 3 })));
    let input = format!("{good}\n{bad_role}\n");
    assert!(matches!(read_jsonl(input.as_bytes()), Err(ChatDataError::Messages { line: 2, .. })));
    assert!(matches!(
        read_jsonl("{not json\n".as_bytes()),
        Err(ChatDataError::Json { line: 1, .. })
    ));
}

#[test]
fn names_match_their_serialized_form() {
    let serialized = |value: serde_json::Result<String>| value.unwrap_or_else(|e| panic!("{e}"));
    for category in Category::ALL {
        assert_eq!(serialized(serde_json::to_string(&category)), format!("\"{}\"", category.as_str()));
    }
    for (task, _) in MIX {
        assert_eq!(serialized(serde_json::to_string(&task)), format!("\"{}\"", task.as_str()));
    }
    for split in SPLITS {
        assert_eq!(serialized(serde_json::to_string(&split)), format!("\"{}\"", split.as_str()));
    }
}

#[test]
fn without_manual_facts_manual_questions_are_left_out_and_the_count_is_kept() {
    let none = ManualFacts::default();
    let examples = generate(Split::Train, 500, 2, &none);
    assert_eq!(examples.len(), 500);
    let manual_tasks = [TaskKind::ManualCommand, TaskKind::ManualOption];
    assert!(examples.iter().all(|e| !manual_tasks.contains(&e.task)));
    for task in manual_tasks {
        assert!(!available(task, Split::Test, &none));
        assert_eq!(generate_one(task, Split::Test, &mut SplitMix64::new(1), &none), None);
    }
}

#[test]
fn manual_questions_of_a_split_name_only_that_split_s_commands() {
    let facts = manual::fixture();
    for split in SPLITS {
        let own: HashSet<&str> = facts.commands(split).iter().map(|c| c.name.as_str()).collect();
        let examples = generate(split, 1000, 8, &facts);
        let manual: Vec<&Example> = examples
            .iter()
            .filter(|e| matches!(e.task, TaskKind::ManualCommand | TaskKind::ManualOption))
            .collect();
        assert!(manual.len() >= 50, "{split:?}: {} manual questions", manual.len());
        for example in manual {
            let ideal = example.ideal().unwrap_or_default();
            // The answer is the command, or one of its options, whose fixture flags end in the
            // command's number ("--quiet-12" belongs to tool12).
            let command = match example.task {
                TaskKind::ManualCommand => ideal.clone(),
                _ => format!("tool{}", ideal.rsplit('-').next().unwrap_or_default()),
            };
            assert!(own.contains(command.as_str()), "{split:?}: {ideal:?} is not of this split");
        }
    }
}

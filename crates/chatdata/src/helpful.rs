//! Helpful tasks a small model can learn: arithmetic on small integers, unit conversions,
//! sorting, counting, format conversions and short JSON answers. Each task has its train
//! templates and its held-out test templates.

use ferrogpt_rng::SplitMix64;
use serde_json::{json, Map, Value};

use crate::text::{assistant, comma_list, fill, pick, user, OVER_REFUSAL};
use crate::{Category, Draft, Expected, Split};

/// A question with its answer and one wrong answer.
pub(crate) struct Qa {
    pub question: String,
    pub answer: String,
    pub wrong: String,
}

impl Qa {
    pub(crate) fn into_draft(self) -> Draft {
        Draft {
            messages: vec![user(self.question), assistant(self.answer.clone())],
            category: Category::Benign,
            expected: Expected::Answer { text: self.answer },
            rejected: vec![self.wrong, OVER_REFUSAL.to_string()],
        }
    }
}

pub(crate) fn arithmetic(split: Split, rng: &mut SplitMix64) -> Draft {
    arithmetic_qa(split, rng).into_draft()
}

pub(crate) fn unit_conversion(split: Split, rng: &mut SplitMix64) -> Draft {
    unit_qa(split, rng).into_draft()
}

pub(crate) fn sorting(split: Split, rng: &mut SplitMix64) -> Draft {
    sorting_qa(split, rng).into_draft()
}

pub(crate) fn counting(split: Split, rng: &mut SplitMix64) -> Draft {
    counting_qa(split, rng).into_draft()
}

const ARITH_TRAIN: [&str; 3] = ["What is {a} {sym} {b}?", "Compute {a} {sym} {b}.", "{a} {sym} {b} = ?"];
const ARITH_TEST: [&str; 2] = ["Please work out {a} {word} {b}.", "How much is {a} {word} {b}?"];

/// Which arithmetic operations [`arithmetic_with`] may draw.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ops {
    Any,
    MultiplyOnly,
}

pub(crate) fn arithmetic_qa(split: Split, rng: &mut SplitMix64) -> Qa {
    arithmetic_with(split, rng, Ops::Any).0
}

/// An arithmetic question, and its operands `(a, b)`.
pub(crate) fn arithmetic_with(split: Split, rng: &mut SplitMix64, ops: Ops) -> (Qa, (i64, i64)) {
    let op = if ops == Ops::MultiplyOnly { 2 } else { rng.below(3) };
    let (a, b, sym, word, result) = match op {
        0 => {
            let (a, b) = (rng.range(0, 20), rng.range(0, 20));
            (a, b, "+", "plus", a + b)
        }
        1 => {
            let a = rng.range(0, 20);
            let b = rng.range(0, a);
            (a, b, "-", "minus", a - b)
        }
        _ => {
            let (a, b) = if ops == Ops::MultiplyOnly {
                (rng.range(2, 9), rng.range(2, 9))
            } else {
                (rng.range(0, 12), rng.range(0, 12))
            };
            (a, b, "*", "times", a * b)
        }
    };
    let template = pick(split, rng, &ARITH_TRAIN, &ARITH_TEST);
    let question = fill(
        template,
        &[("a", &a.to_string()), ("b", &b.to_string()), ("sym", sym), ("word", word)],
    );
    let wrong = result + rng.range(1, 5);
    let qa = Qa {
        question,
        answer: result.to_string(),
        wrong: wrong.to_string(),
    };
    (qa, (a, b))
}

/// (from, to, factor), long unit names.
const UNITS: [(&str, &str, i64); 7] = [
    ("kilometres", "metres", 1000),
    ("metres", "centimetres", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("litres", "millilitres", 1000),
    ("days", "hours", 24),
];
const UNIT_TRAIN: [&str; 2] = ["Convert {v} {from} to {to}.", "How many {to} are in {v} {from}?"];
const UNIT_TEST: [&str; 2] = ["{v} {from} is how many {to}?", "Express {v} {from} in {to}."];

pub(crate) fn unit_qa(split: Split, rng: &mut SplitMix64) -> Qa {
    unit_with_value(split, rng).0
}

/// A conversion question, and the converted number alone.
pub(crate) fn unit_with_value(split: Split, rng: &mut SplitMix64) -> (Qa, i64) {
    let &(from, to, factor) = rng.choose(&UNITS);
    let v = rng.range(2, 20);
    let template = pick(split, rng, &UNIT_TRAIN, &UNIT_TEST);
    let question = fill(template, &[("v", &v.to_string()), ("from", from), ("to", to)]);
    let result = v * factor;
    // The classic slip: one factor of ten short.
    let qa = Qa {
        question,
        answer: format!("{result} {to}"),
        wrong: format!("{} {to}", result / 10),
    };
    (qa, result)
}

const FRUITS: [&str; 12] = [
    "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "orange", "peach", "pear", "plum", "kiwi",
];
const ANIMALS: [&str; 10] = ["cat", "dog", "horse", "zebra", "tiger", "eagle", "otter", "whale", "mouse", "lion"];
const SORT_WORDS_TRAIN: [&str; 2] = ["Sort these words alphabetically: {list}.", "Sort in alphabetical order: {list}"];
const SORT_WORDS_TEST: [&str; 2] = ["Put {list} in alphabetical order.", "Alphabetize the following: {list}"];
const SORT_NUMS_TRAIN: [&str; 2] = [
    "Sort these numbers in ascending order: {list}.",
    "Sort from smallest to largest: {list}",
];
const SORT_NUMS_TEST: [&str; 2] = [
    "Arrange {list} from lowest to highest.",
    "Order the following numbers, smallest first: {list}",
];

pub(crate) fn sorting_qa(split: Split, rng: &mut SplitMix64) -> Qa {
    let len = rng.range(3, 5) as usize;
    if rng.below(2) == 0 {
        let pool: &[&str] = if rng.below(2) == 0 { &FRUITS } else { &ANIMALS };
        let mut words = pool.to_vec();
        rng.shuffle(&mut words);
        words.truncate(len);
        let template = pick(split, rng, &SORT_WORDS_TRAIN, &SORT_WORDS_TEST);
        let question = fill(template, &[("list", &comma_list(&words))]);
        words.sort_unstable();
        sorted_qa(question, words.iter().map(|w| w.to_string()).collect())
    } else {
        let mut numbers: Vec<i64> = Vec::with_capacity(len);
        while numbers.len() < len {
            let n = rng.range(0, 99);
            if !numbers.contains(&n) {
                numbers.push(n);
            }
        }
        let shown: Vec<String> = numbers.iter().map(i64::to_string).collect();
        let template = pick(split, rng, &SORT_NUMS_TRAIN, &SORT_NUMS_TEST);
        let question = fill(template, &[("list", &comma_list(&shown))]);
        numbers.sort_unstable();
        sorted_qa(question, numbers.iter().map(i64::to_string).collect())
    }
}

/// The sorted items as the answer; the same items in reverse (distinct items, so it differs) as
/// the wrong one.
fn sorted_qa(question: String, sorted: Vec<String>) -> Qa {
    let mut reversed = sorted.clone();
    reversed.reverse();
    Qa {
        question,
        answer: comma_list(&sorted),
        wrong: comma_list(&reversed),
    }
}

const COUNT_LETTER_TRAIN: [&str; 2] = [
    "How many times does the letter '{c}' appear in the word '{w}'?",
    "How many '{c}' letters are in '{w}'?",
];
const COUNT_LETTER_TEST: [&str; 2] = ["Count the letter {c} in \"{w}\".", "In \"{w}\", count occurrences of {c}."];
const COUNT_ITEMS_TRAIN: [&str; 2] = ["How many items are in this list: {list}?", "How many words are there in: {list}?"];
const COUNT_ITEMS_TEST: [&str; 2] = ["Count the entries: {list}", "Tell me the number of things listed here: {list}"];
const COUNT_WORDS: [&str; 10] = [
    "banana",
    "strawberry",
    "mississippi",
    "committee",
    "bookkeeper",
    "balloon",
    "coffee",
    "letter",
    "pepper",
    "assessment",
];

pub(crate) fn counting_qa(split: Split, rng: &mut SplitMix64) -> Qa {
    let n = if rng.below(2) == 0 {
        let word = *rng.choose(&COUNT_WORDS);
        let letters: Vec<char> = word.chars().collect();
        let c = *rng.choose(&letters);
        let n = letters.iter().filter(|&&l| l == c).count();
        let template = pick(split, rng, &COUNT_LETTER_TRAIN, &COUNT_LETTER_TEST);
        (fill(template, &[("c", &c.to_string()), ("w", word)]), n)
    } else {
        let len = rng.range(2, 8) as usize;
        let items: Vec<&str> = (0..len).map(|_| *rng.choose(&FRUITS)).collect();
        let template = pick(split, rng, &COUNT_ITEMS_TRAIN, &COUNT_ITEMS_TEST);
        (fill(template, &[("list", &comma_list(&items))]), len)
    };
    let (question, count) = n;
    Qa {
        question,
        answer: count.to_string(),
        wrong: (count + 1).to_string(),
    }
}

const NAMES: [&str; 8] = ["Alice", "Bob", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana"];
const CITIES: [&str; 6] = ["Paris", "Lima", "Oslo", "Cairo", "Tokyo", "Quito"];
const CSV_TRAIN: [&str; 2] = [
    "Convert this CSV row to a JSON object:\n{header}\n{row}",
    "Turn the CSV below into one JSON object.\n{header}\n{row}",
];
const CSV_TEST: [&str; 1] = ["Here is a CSV header and one row. Give the row as JSON.\n{header}\n{row}"];
const KV_TRAIN: [&str; 2] = ["Turn these key=value pairs into JSON: {kv}", "Convert to a JSON object: {kv}"];
const KV_TEST: [&str; 1] = ["Rewrite as a JSON object: {kv}"];

/// A person record: name, age and city.
fn person(rng: &mut SplitMix64) -> (String, i64, String) {
    (rng.choose(&NAMES).to_string(), rng.range(18, 80), rng.choose(&CITIES).to_string())
}

pub(crate) fn format_conversion(split: Split, rng: &mut SplitMix64) -> Draft {
    let (name, age, city) = person(rng);
    let object = json!({"name": name, "age": age, "city": city});
    let question = if rng.below(2) == 0 {
        let template = pick(split, rng, &CSV_TRAIN, &CSV_TEST);
        fill(template, &[("header", "name,age,city"), ("row", &format!("{name},{age},{city}"))])
    } else {
        let template = pick(split, rng, &KV_TRAIN, &KV_TEST);
        fill(template, &[("kv", &format!("name={name}; age={age}; city={city}"))])
    };
    // The typical mistake: every value left a string.
    let wrong = json!({"name": name, "age": age.to_string(), "city": city});
    Qa {
        question,
        answer: object.to_string(),
        wrong: wrong.to_string(),
    }
    .into_draft()
}

const JSON_SUM_TRAIN: [&str; 2] = [
    "Give the sum and product of {a} and {b} as JSON with keys \"sum\" and \"product\".",
    "Return JSON {\"sum\": ..., \"product\": ...} for the numbers {a} and {b}.",
];
const JSON_SUM_TEST: [&str; 1] = ["Reply in JSON (keys: sum, product) with the sum and the product of {a} and {b}."];
const JSON_LEN_TRAIN: [&str; 1] = ["Answer in JSON with keys \"word\" and \"length\": how long is the word '{w}'?"];
const JSON_LEN_TEST: [&str; 1] = ["As a JSON object (word, length), give the number of letters in \"{w}\"."];

pub(crate) fn json_answer(split: Split, rng: &mut SplitMix64) -> Draft {
    let (question, answer, wrong) = if rng.below(2) == 0 {
        let (a, b) = (rng.range(0, 12), rng.range(0, 12));
        let template = pick(split, rng, &JSON_SUM_TRAIN, &JSON_SUM_TEST);
        let question = fill(template, &[("a", &a.to_string()), ("b", &b.to_string())]);
        let mut wrong = Map::new();
        wrong.insert("sum".into(), Value::from(a + b));
        (question, json!({"sum": a + b, "product": a * b}), Value::Object(wrong))
    } else {
        let word = *rng.choose(&COUNT_WORDS);
        let template = pick(split, rng, &JSON_LEN_TRAIN, &JSON_LEN_TEST);
        let question = fill(template, &[("w", word)]);
        let len = word.chars().count();
        (
            question,
            json!({"word": word, "length": len}),
            json!({"word": word, "length": len + 1}),
        )
    };
    Qa {
        question,
        answer: answer.to_string(),
        wrong: wrong.to_string(),
    }
    .into_draft()
}

/// Every user template of the helpful tasks, per split (for the held-out-wording test).
#[cfg(test)]
pub(crate) fn templates(split: Split) -> Vec<&'static str> {
    use crate::text::of_split;
    let groups: [(&[&str], &[&str]); 10] = [
        (&ARITH_TRAIN, &ARITH_TEST),
        (&UNIT_TRAIN, &UNIT_TEST),
        (&SORT_WORDS_TRAIN, &SORT_WORDS_TEST),
        (&SORT_NUMS_TRAIN, &SORT_NUMS_TEST),
        (&COUNT_LETTER_TRAIN, &COUNT_LETTER_TEST),
        (&COUNT_ITEMS_TRAIN, &COUNT_ITEMS_TEST),
        (&CSV_TRAIN, &CSV_TEST),
        (&KV_TRAIN, &KV_TEST),
        (&JSON_SUM_TRAIN, &JSON_SUM_TEST),
        (&JSON_LEN_TRAIN, &JSON_LEN_TEST),
    ];
    groups
        .iter()
        .flat_map(|(train, test)| of_split(split, train, test).iter().copied())
        .collect()
}

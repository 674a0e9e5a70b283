//! A synthetic program-synthesis task in the manner of HumanEval, small enough for models of a
//! few thousand to a few million parameters: the prompt shows a hidden function's outputs on a
//! few inputs and its `def` line (`# f(1)=5 f(2)=8 f(4)=14 f(6)=20\ndef f(x):`), the model
//! writes the body expression (`3 * x + 2`) in a tiny Python-like language, and the completion
//! passes if our interpreter agrees with the hidden function on the shown examples and on
//! hidden unit tests.
//!
//! The language: integer literals, `x`, `+ - * // %` with Python's precedence and floor
//! semantics, unary minus, parentheses, and `max(a, b)`, `min(a, b)`, `abs(a)`.
//!
//! Hold-out: a function is identified by its value table on every input a task can use (so
//! `x + x` and `2 * x` are the same function), and about a tenth of all value tables are held
//! out. The `code` training generator ([`crate::synthetic`]) never emits a held-out function,
//! so evaluation measures synthesis of functions the model has never seen.

use ferrogpt_rng::{hash_str, mix, SplitMix64};

use crate::synthetic::Sample;

/// Inputs a task draws its shown examples from.
const EXAMPLE_INPUTS: std::ops::RangeInclusive<i64> = 0..=9;
/// Every input a task may use (examples and hidden tests); the hold-out hash covers all of them.
const ALL_INPUTS: std::ops::RangeInclusive<i64> = 0..=19;
const SHOWN_EXAMPLES: usize = 4;
const HIDDEN_TESTS: usize = 6;
/// One task in this many function tables is held out of training.
const HELDOUT_MODULUS: u64 = 10;
/// Salt of the hold-out hash: fixed, so the split never depends on a run's seed.
const HELDOUT_SALT: u64 = 0x0C0D_E7A5_4B1D_0001;
/// Cap on held-out tasks sharing one reference in [`heldout_tasks`].
pub const MAX_TASKS_PER_FUNCTION: usize = 3;
/// Indices scanned per requested task by [`heldout_tasks`] before it gives up (a tenth are held
/// out, so this is ample unless the request exceeds the pool of distinct held-out prompts).
const SCAN_PER_TASK: u64 = 200;
/// Completions longer than this are rejected unparsed: real answers are a few dozen bytes.
const MAX_COMPLETION_BYTES: usize = 256;
/// Nesting limit of the parser, so adversarial input cannot overflow the stack.
const MAX_DEPTH: usize = 32;

/// One generated problem with its unit tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeTask {
    /// `code/<seed>/<index>`: unique per (seed, index).
    pub id: String,
    /// The shown examples on one comment line, `# f(1)=5 f(2)=8 ...`, then `def f(x):`.
    pub prompt: String,
    /// A correct body expression in canonical form, e.g. `3 * x + 2`.
    pub reference: String,
    /// Hidden unit tests `(input, expected output)`, disjoint from the shown examples.
    pub tests: Vec<(i64, i64)>,
    /// Generator family (`const`, `affine`, `mod`, ...), a coarse difficulty label.
    pub family: String,
    /// The examples shown in the prompt, also checked by [`check_completion`].
    pub examples: Vec<(i64, i64)>,
}

impl CodeTask {
    /// The task as a synthetic sample: its training text is the prompt and the reference.
    pub fn sample(&self) -> Sample {
        Sample {
            prompt: self.prompt.clone(),
            answer: self.reference.clone(),
        }
    }

    /// The text a model is conditioned on: the training text up to the answer, so the model's
    /// continuation is the body expression (followed by the end of the document or a newline).
    pub fn model_input(&self) -> String {
        self.sample().query()
    }
}

/// The `index`-th task under `seed`, independent of every other index. Held-out and training
/// tasks are both produced; see [`is_heldout`].
pub fn code_task_at(seed: u64, index: u64) -> CodeTask {
    let mut rng = SplitMix64::derived(hash_str(seed, "code_task"), index);
    let mut task = random_task(&mut rng);
    task.id = format!("code/{seed}/{index}");
    task
}

/// Whether the task's function is held out of training (about one in ten functions).
pub fn is_heldout(task: &CodeTask) -> bool {
    match parse(&task.reference) {
        Some(expr) => function_is_heldout(&expr),
        // A reference always parses; treat anything else as held out so it never leaks into training.
        None => true,
    }
}

/// `count` held-out tasks under `seed` with distinct prompts, in index order, preferring at most
/// [`MAX_TASKS_PER_FUNCTION`] per reference so that the few held-out functions of a family with
/// a small parameter space do not crowd out the rest; when that leaves too few, further tasks
/// of already-used functions (with other shown examples) fill the list. Returns fewer than
/// `count` only if the scan of `SCAN_PER_TASK * count` indices finds no more distinct prompts.
pub fn heldout_tasks(seed: u64, count: usize) -> Vec<CodeTask> {
    let mut prompts = std::collections::HashSet::new();
    fill_heldout(seed, count, &mut prompts)
}

/// Families of the easy tier of [`tiered_heldout_tasks`]: answers of one to three tokens
/// (a constant, a shift or a scale of `x`, one clamp, one `abs`) that the smallest models of a
/// ladder can hit by sampling, unlike the two-operation families.
pub const EASY_FAMILIES: &[&str] = &["const", "identity", "shift", "scale", "clamp", "abs"];
/// Held-out tasks sharing one reference in the easy tier: its families have only a handful of
/// held-out functions (two constants, one shift, three scales, one clamp, one `abs` under seed
/// 0), so the tier shows each function with several different example sets.
pub const MAX_EASY_TASKS_PER_FUNCTION: usize = 4;

/// A task list of two difficulty tiers for capability fits whose smallest models are tiny:
/// first up to `easy` held-out tasks of the [`EASY_FAMILIES`] (at most
/// [`MAX_EASY_TASKS_PER_FUNCTION`] per function, fewer if the held-out pool runs out), then
/// `count` tasks of [`heldout_tasks`] with prompts distinct from the easy tier's. Both tiers are
/// held out of training exactly like [`heldout_tasks`]; the tier only changes which held-out
/// tasks are measured, and each task keeps its [`CodeTask::family`] as its difficulty label.
/// With `easy == 0` this is [`heldout_tasks`].
pub fn tiered_heldout_tasks(seed: u64, easy: usize, count: usize) -> Vec<CodeTask> {
    let mut prompts = std::collections::HashSet::new();
    let mut out = if easy == 0 {
        Vec::new()
    } else {
        scan_heldout_capped(
            seed,
            easy,
            |t| EASY_FAMILIES.contains(&t.family.as_str()),
            MAX_EASY_TASKS_PER_FUNCTION,
            &mut prompts,
        )
    };
    out.extend(fill_heldout(seed, count, &mut prompts));
    out
}

/// Held-out tasks passing `keep`, at most `per_function` per reference, with prompts not yet
/// in `prompts` (which collects the chosen ones); never exceeds the cap, so it may return fewer.
fn scan_heldout_capped(
    seed: u64,
    count: usize,
    keep: impl Fn(&CodeTask) -> bool,
    per_function: usize,
    prompts: &mut std::collections::HashSet<String>,
) -> Vec<CodeTask> {
    let limit = SCAN_PER_TASK * count as u64 + 10_000;
    let mut uses: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(count);
    for index in 0..limit {
        if out.len() == count {
            break;
        }
        let task = code_task_at(seed, index);
        if !is_heldout(&task) || !keep(&task) || prompts.contains(&task.prompt) {
            continue;
        }
        let n = uses.entry(task.reference.clone()).or_insert(0);
        if *n < per_function {
            *n += 1;
            prompts.insert(task.prompt.clone());
            out.push(task);
        }
    }
    out
}

/// `count` held-out tasks with prompts not yet in `prompts`: at most
/// [`MAX_TASKS_PER_FUNCTION`] per reference first, then the cap is lifted to fill the list
/// (see [`heldout_tasks`]).
fn fill_heldout(seed: u64, count: usize, prompts: &mut std::collections::HashSet<String>) -> Vec<CodeTask> {
    let mut out = scan_heldout_capped(seed, count, |_| true, MAX_TASKS_PER_FUNCTION, prompts);
    if out.len() < count {
        let more = scan_heldout_capped(seed, count - out.len(), |_| true, usize::MAX, prompts);
        out.extend(more);
    }
    out
}

/// A random non-held-out task, for training text.
pub fn training_task(rng: &mut SplitMix64) -> CodeTask {
    loop {
        let task = random_task(rng);
        if !is_heldout(&task) {
            return task;
        }
    }
}

/// Whether `completion` (the model's text after the prompt, up to its newline) is a body
/// expression that reproduces every shown example and hidden test. An optional leading
/// `return` is accepted. Never panics; overflow and division by zero fail the completion.
pub fn check_completion(task: &CodeTask, completion: &str) -> bool {
    let body = completion.lines().next().unwrap_or("").trim();
    let body = body.strip_prefix("return ").unwrap_or(body).trim();
    if body.is_empty() || body.len() > MAX_COMPLETION_BYTES {
        return false;
    }
    let Some(expr) = parse(body) else {
        return false;
    };
    task.examples.iter().chain(&task.tests).all(|&(x, y)| expr.eval(x) == Some(y))
}

// ---------------------------------------------------------------------------------------------
// The language.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    FloorDiv,
    Mod,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::FloorDiv => "//",
            Op::Mod => "%",
        }
    }

    fn precedence(self) -> u8 {
        match self {
            Op::Add | Op::Sub => 1,
            Op::Mul | Op::FloorDiv | Op::Mod => 2,
        }
    }

    fn apply(self, a: i64, b: i64) -> Option<i64> {
        match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            // Python floors toward negative infinity; Rust's `/` truncates toward zero.
            Op::FloorDiv => {
                let q = a.checked_div(b)?;
                Some(if a % b != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q })
            }
            Op::Mod => {
                let r = a.checked_rem(b)?;
                Some(if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r })
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Max,
    Min,
    Abs,
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Max => "max",
            Func::Min => "min",
            Func::Abs => "abs",
        }
    }

    fn arity(self) -> usize {
        match self {
            Func::Max | Func::Min => 2,
            Func::Abs => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    X,
    Num(i64),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

fn bin(op: Op, a: Expr, b: Expr) -> Expr {
    Expr::Bin(op, Box::new(a), Box::new(b))
}

fn num(n: i64) -> Expr {
    Expr::Num(n)
}

impl Expr {
    fn eval(&self, x: i64) -> Option<i64> {
        match self {
            Expr::X => Some(x),
            Expr::Num(n) => Some(*n),
            Expr::Neg(e) => e.eval(x)?.checked_neg(),
            Expr::Bin(op, a, b) => op.apply(a.eval(x)?, b.eval(x)?),
            Expr::Call(f, args) => {
                let vals: Vec<i64> = args.iter().map(|a| a.eval(x)).collect::<Option<_>>()?;
                match (f, vals.as_slice()) {
                    (Func::Max, [a, b]) => Some(*a.max(b)),
                    (Func::Min, [a, b]) => Some(*a.min(b)),
                    (Func::Abs, [a]) => a.checked_abs(),
                    _ => None,
                }
            }
        }
    }

    /// Canonical text with the fewest parentheses Python needs.
    fn render(&self) -> String {
        match self {
            Expr::X => "x".into(),
            Expr::Num(n) if *n < 0 => format!("({n})"),
            Expr::Num(n) => n.to_string(),
            Expr::Neg(e) => match **e {
                Expr::X | Expr::Num(_) | Expr::Call(..) => format!("-{}", e.render()),
                _ => format!("-({})", e.render()),
            },
            Expr::Bin(op, a, b) => {
                let side = |e: &Expr, right: bool| {
                    let needs = match e {
                        // Left operands of equal precedence associate; right ones need parentheses.
                        Expr::Bin(inner, ..) => inner.precedence() < op.precedence() || (right && inner.precedence() == op.precedence()),
                        _ => false,
                    };
                    if needs {
                        format!("({})", e.render())
                    } else {
                        e.render()
                    }
                };
                format!("{} {} {}", side(a, false), op.symbol(), side(b, true))
            }
            Expr::Call(f, args) => {
                let args: Vec<String> = args.iter().map(Expr::render).collect();
                format!("{}({})", f.name(), args.join(", "))
            }
        }
    }
}

fn function_is_heldout(expr: &Expr) -> bool {
    let mut h = HELDOUT_SALT;
    for x in ALL_INPUTS {
        // An undefined value (never the case for generated references) still hashes deterministically.
        let v = expr.eval(x).map_or(u64::MAX, |v| v as u64);
        h = mix(h ^ v);
    }
    h.is_multiple_of(HELDOUT_MODULUS)
}

// ---------------------------------------------------------------------------------------------
// Parsing: recursive descent over bytes, returning `None` on anything outside the language.

fn parse(text: &str) -> Option<Expr> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let e = p.sum()?;
    p.skip_ws();
    (p.pos == p.s.len()).then_some(e)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(|c| *c == b' ' || *c == b'\t') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn sum(&mut self) -> Option<Expr> {
        self.enter()?;
        let mut e = self.product()?;
        loop {
            let op = if self.eat("+") {
                Op::Add
            } else if self.eat("-") {
                Op::Sub
            } else {
                break;
            };
            e = bin(op, e, self.product()?);
        }
        self.depth -= 1;
        Some(e)
    }

    fn product(&mut self) -> Option<Expr> {
        let mut e = self.unary()?;
        loop {
            // `//` before `/`: a lone `/` is not in the language.
            let op = if self.eat("//") {
                Op::FloorDiv
            } else if self.eat("*") {
                Op::Mul
            } else if self.eat("%") {
                Op::Mod
            } else {
                break;
            };
            e = bin(op, e, self.unary()?);
        }
        Some(e)
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat("-") {
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Some(Expr::Neg(Box::new(e)));
        }
        if self.eat("+") {
            return self.unary();
        }
        self.atom()
    }

    fn atom(&mut self) -> Option<Expr> {
        self.skip_ws();
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_alphanumeric) || self.s.get(self.pos) == Some(&b'_') {
            self.pos += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
        if word.is_empty() {
            if !self.eat("(") {
                return None;
            }
            let e = self.sum()?;
            return self.eat(")").then_some(e);
        }
        if word.bytes().all(|c| c.is_ascii_digit()) {
            return word.parse().ok().map(Expr::Num);
        }
        let func = match word {
            "x" => return Some(Expr::X),
            "max" => Func::Max,
            "min" => Func::Min,
            "abs" => Func::Abs,
            _ => return None,
        };
        if !self.eat("(") {
            return None;
        }
        let mut args = vec![self.sum()?];
        while self.eat(",") {
            args.push(self.sum()?);
        }
        (self.eat(")") && args.len() == func.arity()).then_some(Expr::Call(func, args))
    }
}

// ---------------------------------------------------------------------------------------------
// Generation.

/// Families from easiest to hardest, as a rough guide; each draws its constants from the rng
/// and may look at the shown inputs so that piecewise functions show both of their pieces.
const FAMILIES: &[&str] = &[
    "const",
    "identity",
    "shift",
    "scale",
    "affine",
    "square",
    "floordiv",
    "mod",
    "clamp",
    "quadratic",
    "abs",
    "affine_mod",
    "compose",
];

fn random_task(rng: &mut SplitMix64) -> CodeTask {
    let mut inputs: Vec<i64> = EXAMPLE_INPUTS.collect();
    rng.shuffle(&mut inputs);
    let mut shown = inputs[..SHOWN_EXAMPLES].to_vec();
    shown.sort_unstable();
    let (lo, hi) = (shown[0], shown[SHOWN_EXAMPLES - 1]);
    let family = *rng.choose(FAMILIES);
    let x = || Expr::X;
    let expr = match family {
        "const" => num(rng.range(0, 30)),
        "identity" => x(),
        "shift" => {
            let c = rng.range(1, 20);
            if rng.below(2) == 0 {
                bin(Op::Add, x(), num(c))
            } else {
                bin(Op::Sub, x(), num(c))
            }
        }
        "scale" => bin(Op::Mul, num(rng.range(2, 19)), x()),
        "affine" => {
            let op = if rng.below(3) == 0 { Op::Sub } else { Op::Add };
            bin(op, bin(Op::Mul, num(rng.range(2, 9)), x()), num(rng.range(1, 15)))
        }
        "square" => {
            let c = rng.range(0, 12);
            if c == 0 {
                bin(Op::Mul, x(), x())
            } else {
                bin(Op::Add, bin(Op::Mul, x(), x()), num(c))
            }
        }
        // Offsets give these families enough distinct functions that some are held out.
        "floordiv" => {
            let c = rng.range(0, 6);
            let top = if c == 0 { x() } else { bin(Op::Add, x(), num(c)) };
            bin(Op::FloorDiv, top, num(rng.range(2, 5)))
        }
        "mod" => {
            let (m, c) = (rng.range(2, 7), rng.range(0, 6));
            let e = bin(Op::Mod, x(), num(m));
            if c == 0 {
                e
            } else {
                bin(Op::Add, e, num(c))
            }
        }
        "clamp" => {
            // A threshold strictly inside the shown inputs shows both pieces.
            let c = rng.range(lo + 1, hi - 1);
            let f = if rng.below(2) == 0 { Func::Max } else { Func::Min };
            Expr::Call(f, vec![x(), num(c)])
        }
        "quadratic" => {
            let (a, b) = (rng.range(1, 6), rng.range(1, 6));
            bin(Op::Mul, bin(Op::Add, x(), num(a)), bin(Op::Add, x(), num(b)))
        }
        "abs" => Expr::Call(Func::Abs, vec![bin(Op::Sub, x(), num(rng.range(lo + 1, hi - 1)))]),
        "affine_mod" => {
            let inner = bin(Op::Add, bin(Op::Mul, num(rng.range(2, 5)), x()), num(rng.range(1, 6)));
            bin(Op::Mod, inner, num(rng.range(3, 9)))
        }
        _ => match rng.below(3) {
            0 => bin(
                Op::Add,
                bin(Op::Mod, x(), num(rng.range(2, 5))),
                bin(Op::Mul, num(rng.range(2, 4)), x()),
            ),
            1 => bin(Op::FloorDiv, bin(Op::Mul, x(), x()), num(rng.range(2, 5))),
            _ => Expr::Call(
                Func::Max,
                vec![
                    bin(Op::Sub, bin(Op::Mul, num(rng.range(2, 4)), x()), num(rng.range(3, 12))),
                    num(rng.range(0, 4)),
                ],
            ),
        },
    };
    let value = |x: i64| expr.eval(x).unwrap_or(0);
    let examples: Vec<(i64, i64)> = shown.iter().map(|&x| (x, value(x))).collect();
    let mut hidden: Vec<i64> = ALL_INPUTS.filter(|x| !shown.contains(x)).collect();
    rng.shuffle(&mut hidden);
    let mut hidden = hidden[..HIDDEN_TESTS].to_vec();
    hidden.sort_unstable();
    // One comment line without spaces before numbers keeps the prompt short in tokens (the
    // tokenizer splits digits and spaces apart) for the ladder's contexts, as short as 64.
    let pairs: Vec<String> = examples.iter().map(|(x, y)| format!("f({x})={y}")).collect();
    let prompt = format!("# {}\ndef f(x):", pairs.join(" "));
    CodeTask {
        id: String::new(),
        prompt,
        reference: expr.render(),
        tests: hidden.iter().map(|&x| (x, value(x))).collect(),
        family: family.to_string(),
        examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_semantics_and_precedence() {
        let cases: &[(&str, i64, i64)] = &[
            ("x * 3 + 2", 4, 14),
            ("2 + x * 3", 4, 14),
            ("(x + 1) * (x + 2)", 3, 20),
            ("-7 // 2", 0, -4),
            ("-7 % 3", 0, 2),
            ("7 % -3", 0, -2),
            ("x - 3 - 2", 10, 5),
            ("x // 2 * 3", 5, 6),
            ("-x * 2", 3, -6),
            ("max(x, 4) + min(x, 2)", 3, 6),
            ("abs(x - 7)", 2, 5),
            ("return x+1", 1, 2),
        ];
        for &(src, x, want) in cases {
            let body = src.strip_prefix("return ").unwrap_or(src);
            let e = parse(body).unwrap_or_else(|| panic!("{src} should parse"));
            assert_eq!(e.eval(x), Some(want), "{src} at x={x}");
        }
        for bad in [
            "",
            "x +",
            "y",
            "max(x)",
            "abs(x, 1)",
            "(x",
            "x)",
            "x / 2",
            "1 2",
            "x ** 2",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} should not parse");
        }
        assert_eq!(parse("x // 0").and_then(|e| e.eval(1)), None);
        assert_eq!(parse("x * 9223372036854775807").and_then(|e| e.eval(2)), None);
    }

    #[test]
    fn rendering_round_trips() {
        for i in 0..3000 {
            let t = code_task_at(4, i);
            let e = parse(&t.reference).unwrap_or_else(|| panic!("{} does not parse", t.reference));
            assert_eq!(e.render(), t.reference);
        }
        // Right operands of equal precedence keep their parentheses; left ones drop them.
        let x_minus = |c| bin(Op::Sub, Expr::X, num(c));
        let nested = bin(Op::Sub, x_minus(1), x_minus(2));
        assert_eq!(nested.render(), "x - 1 - (x - 2)");
        assert_eq!(parse(&nested.render()).unwrap().eval(5), Some(1));
        let neg = Expr::Neg(Box::new(x_minus(3)));
        assert_eq!(neg.render(), "-(x - 3)");
        assert_eq!(parse(&neg.render()).unwrap().eval(5), Some(-2));
    }

    #[test]
    fn tiers_are_held_out_distinct_and_deterministic() {
        let plain = heldout_tasks(0, 40);
        assert_eq!(tiered_heldout_tasks(0, 0, 40), plain);
        let tiered = tiered_heldout_tasks(0, 24, 40);
        assert_eq!(tiered, tiered_heldout_tasks(0, 24, 40));
        assert_eq!(tiered.len(), 64);
        let (easy, rest) = tiered.split_at(24);
        assert!(rest.iter().all(|t| !easy.contains(t)));
        assert!(easy.iter().all(|t| EASY_FAMILIES.contains(&t.family.as_str())));
        assert!(tiered.iter().all(is_heldout));
        let prompts: std::collections::HashSet<&str> = tiered.iter().map(|t| t.prompt.as_str()).collect();
        assert_eq!(prompts.len(), tiered.len());
        let mut per_function = std::collections::HashMap::new();
        for t in easy {
            *per_function.entry(t.reference.as_str()).or_insert(0) += 1;
        }
        assert!(per_function.values().all(|&n| n <= MAX_EASY_TASKS_PER_FUNCTION));
        // The general tier keeps the plain order, skipping prompts the easy tier took.
        let shared: Vec<&CodeTask> = plain.iter().filter(|t| rest.contains(t)).collect();
        assert_eq!(shared, rest.iter().take(shared.len()).collect::<Vec<_>>());
        // The easy pool is small: asking for more than it holds returns what exists.
        let all_easy = tiered_heldout_tasks(0, 200, 0);
        assert!(all_easy.len() < 200 && all_easy.len() >= 24, "{}", all_easy.len());
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_none());
        assert!(parse(&"-".repeat(10_000)).is_none());
    }
}

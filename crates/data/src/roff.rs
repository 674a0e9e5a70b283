//! A small roff-to-text converter for manual pages (`man` and the common `mdoc` macros).
//!
//! The aim is training text that reads like `man` output: headings, paragraphs joined into
//! lines, option tags on their own line with indented bodies, escapes turned into the
//! characters they stand for. Layout details (line width, exact indents, fonts) are dropped.

use std::collections::HashMap;

/// Converts a roff source to plain text. Pages that only redirect (`.so other.1`) give "".
pub fn roff_to_text(src: &str) -> String {
    let mut r = Renderer::default();
    let lines: Vec<&str> = src.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let mut line = lines[i].to_string();
        i += 1;
        // A trailing backslash continues the line.
        while line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1 && i < lines.len() {
            line.pop();
            line.push_str(lines[i]);
            i += 1;
        }
        if let Some(end) = r.skip_until.as_deref() {
            if line.trim_start().starts_with(end) || (end == "\\}" && line.contains("\\}")) {
                r.skip_until = None;
            }
            continue;
        }
        r.line(&line);
    }
    r.finish()
}

#[derive(Default)]
struct Renderer {
    out: String,
    para: String,
    nofill: bool,
    /// Indent from `.RS` nesting (and mdoc lists).
    base: usize,
    /// Extra indent of the current list item's body (`.TP`, `.IP`, `.It`).
    item: usize,
    /// The next line of text is a `.TP` tag.
    tag_next: bool,
    /// The next line of text is a section heading (`.SH` without arguments).
    heading_next: bool,
    /// Skip input lines until one starting with this (`..` after `.de`, `\}` after a false `.if`).
    skip_until: Option<String>,
    strings: HashMap<String, String>,
    /// Result of the last `.ie` condition, consulted by `.el`.
    last_ie: bool,
    /// mdoc `.Nm` name, repeated by argument-less `.Nm`.
    name: String,
    url: Option<String>,
    /// Rows of a tbl table are being read (after its format lines).
    table: Option<bool>,
    /// The last line written was a section heading (no blank line may follow it).
    after_heading: bool,
    /// Title of the current `.SH` section.
    section: String,
}

impl Renderer {
    fn line(&mut self, line: &str) {
        if let Some(format_done) = self.table {
            self.table_line(line, format_done);
            return;
        }
        let is_control = line.starts_with('.') || line.starts_with('\'');
        if !is_control {
            self.text(line);
            return;
        }
        let body = line[1..].trim_start();
        if body.starts_with("\\\"") || body.is_empty() {
            return;
        }
        let (name, rest) = split_name(body);
        // The `'` control character means "no break": `'br` does nothing.
        if line.starts_with('\'') && name == "br" {
            return;
        }
        self.request(name, rest);
    }

    fn request(&mut self, name: &str, rest: &str) {
        let args = || parse_args(rest);
        match name {
            "TH" | "Dt" => {
                let a = args();
                if let Some(title) = a.first() {
                    let sec = a.get(1).map(String::as_str).unwrap_or("");
                    self.emit_line(&format!("{}({})", self.unescape(title), self.unescape(sec)));
                    self.blank();
                }
            }
            "SH" | "Sh" | "SS" | "Ss" => {
                self.blank();
                self.base = 0;
                self.item = 0;
                let heading = self.inline(name, &args());
                if heading.is_empty() {
                    self.heading_next = true;
                } else {
                    self.emit_heading(&heading);
                }
            }
            "PP" | "LP" | "P" | "Pp" | "sp" | "Sp" | "HP" => {
                self.blank();
                self.item = 0;
            }
            "br" | "ne" => self.flush(),
            "TP" | "TQ" => {
                self.blank_unless_tq(name);
                self.item = 0;
                self.tag_next = true;
            }
            "IP" => {
                self.blank();
                let a = args();
                let tag = a.first().map(|t| self.unescape(t)).unwrap_or_default();
                self.item = 0;
                match tag.chars().count() {
                    0 => {}
                    // Bullets and short numbers share the line with the body, as man shows them.
                    1..=4 => self.para = format!("{tag} "),
                    _ => self.emit_line(&tag),
                }
                self.item = 4;
            }
            "RS" | "Bl" => {
                self.flush();
                self.base += 4;
            }
            "RE" | "El" => {
                self.flush();
                self.base = self.base.saturating_sub(4);
                self.item = 0;
            }
            "nf" | "EX" | "Vb" => {
                self.flush();
                self.nofill = true;
            }
            "fi" | "EE" | "Ve" => {
                self.flush();
                self.nofill = false;
            }
            "Bd" => {
                self.flush();
                self.nofill = rest.contains("-literal") || rest.contains("-unfilled");
                self.base += 4;
            }
            "Ed" => {
                self.flush();
                self.nofill = false;
                self.base = self.base.saturating_sub(4);
            }
            "de" | "de1" | "am" | "ig" => self.skip_until = Some("..".into()),
            "TS" => {
                self.flush();
                self.table = Some(false);
            }
            "EQ" => self.skip_until = Some(".EN".into()),
            "ds" | "ds1" => {
                let (key, value) = split_name(rest);
                let value = value.strip_prefix('"').unwrap_or(value);
                self.strings.insert(key.to_string(), value.to_string());
            }
            "if" => {
                let (cond, body) = self.condition(rest);
                self.conditional(cond, body);
            }
            "ie" => {
                let (cond, body) = self.condition(rest);
                self.last_ie = cond;
                self.conditional(cond, body);
            }
            "el" => {
                let cond = !self.last_ie;
                self.conditional(cond, rest.trim_start());
            }
            "UR" | "MT" => self.url = args().into_iter().next(),
            "UE" | "ME" => {
                if let Some(url) = self.url.take() {
                    let url = self.unescape(&url);
                    self.add_words(&format!("<{url}>"));
                }
            }
            "Nm" => {
                if self.section == "SYNOPSIS" {
                    // Each synopsis form starts on its own line.
                    self.flush();
                }
                let a = args();
                if self.name.is_empty() {
                    if let Some(first) = a.first() {
                        self.name = self.unescape(first);
                    }
                }
                let text = if a.is_empty() { self.name.clone() } else { self.inline(name, &a) };
                self.add_words(&text);
            }
            "Nd" => {
                let text = self.inline(name, &args());
                self.add_words(&format!("- {text}"));
            }
            "It" => {
                self.blank();
                self.item = 0;
                let tag = self.inline(name, &args());
                if !tag.is_empty() {
                    self.emit_line(&tag);
                }
                self.item = 4;
            }
            "D1" | "Dl" => {
                self.flush();
                let text = self.inline(name, &args());
                self.emit_line(&format!("    {text}"));
            }
            // Requests and macros that only affect layout, fonts, indexes or registers.
            "ft" | "ps" | "in" | "ti" | "ll" | "ad" | "na" | "hy" | "nh" | "PD" | "IX" | "INDENT" | "UNINDENT" | "so" | "nr" | "rr"
            | "rm" | "tr" | "cu" | "ul" | "ta" | "fam" | "lf" | "mso" | "do" | "hw" | "ev" | "ss" | "cs" | "bd" | "pc" | "ns" | "rs"
            | "ec" | "eo" | "cc" | "c2" | "Dd" | "Os" | "Ed1" | "pl" | "bp" | "ch" | "wh" | "it" | "lt" | "po" | "tl" | "ce" | "OP"
            | "ll1" | "Pp1" | "Ud" | "Bk" | "Ek" | "hc" | "als" | "chop" | "nroff" | "troff" | "blm" | "em" | "mk" | "rt" | "vs" | "ls"
            | "nm" | "nn" | "Dx" | "AT" | "UC" | "LO" | "sy" | "pso" | "hcode" | "hla" | "hlm" | "hym" | "hys" | "shc" | "cp" | "warn"
            | "fp" | "fschar" | "fspecial" | "ftr" | "kern" | "lg" | "sty" | "evc" | "ecs" | "ecr" | "char" | "schar" | "rchar" | "rn"
            | "return" | "shift" | "while" | "break" | "continue" | "tm" | "tm1" | "tmc" | "ab" | "ex" | "fl" | "output" | "nx" | "rd"
            | "pi" | "open" | "opena" | "write" | "close" | "writec" | "writem" | "substring" | "length" | "index" | "asciify"
            | "unformat" | "device" | "devicem" | "psbb" | "pm" | "pnr" | "ptr" | "pev" | "spreadwarn" | "linetabs" | "tkf" | "trf"
            | "trin" | "trnt" | "vpt" | "defcolor" | "gcolor" | "fcolor" | "color" | "cflags" | "nop" | "Tn" | "Ux" | "At" | "Bx"
            | "Bsx" | "Fx" | "Nx" | "Ox" | "Lb" | "In" | "Rs" | "Re" | "Zq" => {}
            _ => {
                // Font macros (man) and inline semantic macros (mdoc) carry text.
                let a = args();
                let text = self.inline(name, &a);
                if !text.is_empty() {
                    self.text_line(&text);
                }
            }
        }
    }

    /// Blank line before `.TP`, except for `.TQ` (an extra tag for the same body).
    fn blank_unless_tq(&mut self, name: &str) {
        if name == "TQ" {
            self.flush();
        } else {
            self.blank();
        }
    }

    /// Evaluates an `.if`/`.ie` condition; nroff-mode conditions are the only ones taken as
    /// true (we render for a terminal), anything else as false.
    fn condition<'a>(&self, rest: &'a str) -> (bool, &'a str) {
        let rest = rest.trim_start();
        let (neg, rest) = match rest.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (cond, body) = if let Some(r) = rest.strip_prefix('n') {
            (true, r)
        } else if let Some(r) = rest.strip_prefix('t') {
            (false, r)
        } else {
            // Numeric or string comparisons: skip one word.
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (false, &rest[end..])
        };
        (cond != neg, body.trim_start())
    }

    fn conditional(&mut self, cond: bool, body: &str) {
        let (block, body) = match body.strip_prefix("\\{") {
            Some(b) => (true, b.trim_start()),
            None => (false, body),
        };
        let closes = body.contains("\\}");
        if !cond {
            if block && !closes {
                self.skip_until = Some("\\}".into());
            }
            return;
        }
        let body = body.replace("\\}", "");
        let body = body.trim_start_matches("\\&");
        if !body.trim().is_empty() {
            self.line(body);
        }
    }

    fn table_line(&mut self, line: &str, format_done: bool) {
        if line.starts_with(".TE") {
            self.table = None;
            self.flush();
            return;
        }
        if !format_done {
            // Options (ending in ';') and format lines (the last ends in '.') are skipped.
            if line.trim_end().ends_with('.') {
                self.table = Some(true);
            }
            return;
        }
        if line.starts_with('.') || line.trim() == "_" || line.trim() == "=" {
            return;
        }
        let row = line.replace("T{", "").replace("T}", "");
        let cells: Vec<String> = row.split('\t').map(|c| self.unescape(c.trim())).collect();
        let text = cells.join("  ");
        if !text.trim().is_empty() {
            self.emit_line(text.trim_end());
        }
    }

    fn text(&mut self, line: &str) {
        let text = self.unescape(line);
        if line.trim().is_empty() {
            if self.nofill {
                self.emit_line("");
            } else {
                self.blank();
            }
            return;
        }
        if !self.nofill && line.starts_with(' ') {
            // Leading space forces a break in fill mode.
            self.flush();
        }
        self.text_line(&text);
    }

    fn text_line(&mut self, text: &str) {
        if self.heading_next {
            self.heading_next = false;
            self.emit_heading(text.trim());
            return;
        }
        if self.tag_next {
            self.tag_next = false;
            self.flush();
            self.emit_line(text.trim());
            self.item = 4;
            return;
        }
        if self.nofill {
            self.emit_line(text);
        } else {
            self.add_words(text);
        }
    }

    fn add_words(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if !self.para.is_empty() && !self.para.ends_with(' ') {
            self.para.push(' ');
        }
        self.para.push_str(text);
    }

    fn flush(&mut self) {
        if !self.para.is_empty() {
            let para = std::mem::take(&mut self.para);
            self.emit_line(para.trim_end());
        }
    }

    fn emit_heading(&mut self, text: &str) {
        self.emit_line(text);
        self.section = text.to_string();
        self.after_heading = true;
    }

    fn emit_line(&mut self, text: &str) {
        if !self.para.is_empty() {
            self.flush();
        }
        self.after_heading = false;
        if !text.is_empty() {
            self.out.extend(std::iter::repeat_n(' ', self.base + self.item));
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Ends the paragraph and leaves exactly one empty line (none at the start of the page).
    fn blank(&mut self) {
        self.flush();
        if !self.after_heading && !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn finish(mut self) -> String {
        self.flush();
        let trimmed = self.out.trim_end();
        let mut s = trimmed.to_string();
        if !s.is_empty() {
            s.push('\n');
        }
        s
    }

    /// Text of a font (man) or semantic (mdoc) macro call.
    fn inline(&self, name: &str, args: &[String]) -> String {
        match name {
            // Alternating fonts: arguments are joined without spaces.
            "BR" | "RB" | "BI" | "IB" | "IR" | "RI" => args.iter().map(|a| self.unescape(a)).collect::<Vec<_>>().concat(),
            "B" | "I" | "SM" | "SB" | "SH" | "SS" => args.iter().map(|a| self.unescape(a)).collect::<Vec<_>>().join(" "),
            _ => self.mdoc(name, args),
        }
    }

    /// Renders an mdoc macro line; callable macros nested in the arguments are applied.
    fn mdoc(&self, name: &str, args: &[String]) -> String {
        let mut words: Vec<String> = Vec::new();
        let mut no_space = false;
        let mut closers: Vec<&str> = Vec::new();
        let mut mode = name;
        let open = |m: &str| match m {
            "Op" | "Oo" => Some(("[", "]")),
            "Dq" | "Do" => Some(("\u{201C}", "\u{201D}")),
            "Sq" | "So" => Some(("'", "'")),
            "Qq" | "Qo" => Some(("\"", "\"")),
            "Pq" | "Po" => Some(("(", ")")),
            "Aq" | "Ao" => Some(("<", ">")),
            "Brq" | "Bro" => Some(("{", "}")),
            "Bq" | "Bo" => Some(("[", "]")),
            _ => None,
        };
        let mut pending_open = String::new();
        if let Some((o, c)) = open(name) {
            pending_open.push_str(o);
            closers.push(c);
        }
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            i += 1;
            if is_callable(a) {
                mode = a;
                match a {
                    "Ns" => no_space = true,
                    "Fl" if i >= args.len() || is_callable(&args[i]) => words.push("-".into()),
                    "Nm" if i >= args.len() || is_callable(&args[i]) => words.push(self.name.clone()),
                    "Oc" | "Dc" | "Sc" | "Qc" | "Pc" | "Ac" | "Brc" | "Bc" => {
                        if let (Some(c), Some(last)) = (closers.pop(), words.last_mut()) {
                            last.push_str(c);
                        }
                    }
                    _ => {
                        if let Some((o, c)) = open(a) {
                            pending_open.push_str(o);
                            closers.push(c);
                        }
                    }
                }
                continue;
            }
            let mut w = self.unescape(a);
            if mode == "Fl" {
                w = format!("-{w}");
            }
            if mode == "Xr" && i < args.len() && args[i].chars().all(|c| c.is_ascii_alphanumeric()) {
                w = format!("{w}({})", args[i]);
                i += 1;
            }
            let punct = w.len() == 1 && ".,;:)]?!".contains(w.as_str());
            if (punct || no_space) && !words.is_empty() {
                if let Some(last) = words.last_mut() {
                    last.push_str(&w);
                }
            } else {
                words.push(format!("{}{w}", std::mem::take(&mut pending_open)));
            }
            no_space = false;
        }
        if !pending_open.is_empty() {
            words.push(pending_open);
        }
        let mut s = words.join(" ");
        while let Some(c) = closers.pop() {
            s.push_str(c);
        }
        s
    }

    /// Replaces roff escapes with the characters they stand for and drops formatting ones.
    fn unescape(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = chars.next() else { break };
            match e {
                '"' | '#' => break,
                '-' | '=' => out.push(e),
                'e' | '\\' => out.push('\\'),
                '(' => {
                    let name: String = chars.by_ref().take(2).collect();
                    out.push_str(glyph(&name));
                }
                '[' => {
                    let name = take_until(&mut chars, ']');
                    out.push_str(glyph(&name));
                }
                '*' => {
                    let name = take_name(&mut chars);
                    if let Some(v) = self.strings.get(&name) {
                        out.push_str(&self.unescape(v));
                    } else {
                        out.push_str(string_default(&name));
                    }
                }
                'f' | 'F' | 'n' | 'g' | 'k' | 'm' | 'M' | 'V' | 'Y' => {
                    take_name(&mut chars);
                }
                's' => {
                    // \s+1, \s-2, \s0, \s(12, \s[12]
                    if matches!(chars.peek(), Some('+') | Some('-')) {
                        chars.next();
                    }
                    match chars.peek() {
                        Some('(') | Some('[') => {
                            take_name(&mut chars);
                        }
                        Some(d) if d.is_ascii_digit() => {
                            chars.next();
                        }
                        _ => {}
                    }
                }
                'h' | 'v' | 'w' | 'o' | 'l' | 'L' | 'X' | 'D' | 'Z' | 'b' | 'x' | 'N' | 'C' | 'A' | 'B' | 'R' | 'S' | 'H' => {
                    if let Some(&d) = chars.peek() {
                        chars.next();
                        let inner = take_until(&mut chars, d);
                        if e == 'C' {
                            out.push_str(glyph(inner.trim_matches('\'')));
                        }
                    }
                }
                ' ' | '~' | '0' | '_' => out.push(if e == '_' { '_' } else { ' ' }),
                't' => out.push('\t'),
                '&' | '|' | '^' | '%' | ':' | '/' | ',' | 'c' | 'd' | 'u' | 'z' | 'p' | 'r' | 'a' | '{' | '}' | '\n' | '!' | '?' | ')' => {}
                '\'' => out.push('\''),
                '`' => out.push('`'),
                '.' => out.push('.'),
                other => out.push(other),
            }
        }
        out
    }
}

/// Splits a control line into the request name and the rest.
fn split_name(body: &str) -> (&str, &str) {
    // A name ends at a blank or an escape (`.el\{` is `el` followed by `\{`).
    let end = body.find(|c: char| c.is_whitespace() || c == '\\').unwrap_or(body.len());
    (&body[..end], body[end..].trim_start())
}

/// Splits macro arguments on spaces, honouring double quotes (`""` inside quotes is `"`).
fn parse_args(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                    } else {
                        break;
                    }
                } else {
                    arg.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    break;
                }
                arg.push(c);
                chars.next();
                // An escaped space stays inside the argument.
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        arg.push(n);
                    }
                }
            }
        }
        if arg.starts_with("\\\"") {
            break;
        }
        args.push(arg);
    }
    args
}

fn take_until(chars: &mut std::iter::Peekable<std::str::Chars>, end: char) -> String {
    let mut s = String::new();
    for c in chars.by_ref() {
        if c == end {
            break;
        }
        s.push(c);
    }
    s
}

/// Name after `\*`, `\f`, `\n`: one char, `(xx`, or `[long]`.
fn take_name(chars: &mut std::iter::Peekable<std::str::Chars>) -> String {
    match chars.next() {
        Some('(') => chars.by_ref().take(2).collect(),
        Some('[') => take_until(chars, ']'),
        Some(c) => c.to_string(),
        None => String::new(),
    }
}

fn is_callable(word: &str) -> bool {
    matches!(
        word,
        "Fl" | "Ar"
            | "Op"
            | "Oo"
            | "Oc"
            | "Cm"
            | "Ic"
            | "Pa"
            | "Ev"
            | "Va"
            | "Li"
            | "Em"
            | "Sy"
            | "Dv"
            | "Er"
            | "Fn"
            | "Fa"
            | "Ft"
            | "Xr"
            | "Nm"
            | "Ns"
            | "Dq"
            | "Do"
            | "Dc"
            | "Sq"
            | "So"
            | "Sc"
            | "Qq"
            | "Qo"
            | "Qc"
            | "Pq"
            | "Po"
            | "Pc"
            | "Aq"
            | "Ao"
            | "Ac"
            | "Brq"
            | "Bro"
            | "Brc"
            | "Bq"
            | "Bo"
            | "Bc"
            | "Ql"
            | "Sx"
            | "Tn"
            | "Ux"
            | "No"
            | "Cd"
            | "Ad"
            | "An"
            | "Mt"
            | "Lk"
            | "Vt"
            | "St"
            | "Ms"
            | "Ot"
            | "Pf"
            | "Xo"
            | "Xc"
    )
}

/// Default values of predefined strings (`\*(lq` etc.); unknown ones vanish.
fn string_default(name: &str) -> &'static str {
    match name {
        "lq" | "L\"" => "\u{201C}",
        "rq" | "R\"" => "\u{201D}",
        "R" => "\u{00AE}",
        "Tm" | "tm" => "\u{2122}",
        "C+" => "C++",
        "C'" | "'" => "'",
        "C`" | "`" => "`",
        "--" => "--",
        "PI" => "\u{03C0}",
        "Aq" => "'",
        "Gt" => ">",
        "Lt" => "<",
        "Le" => "<=",
        "Ge" => ">=",
        "Ba" => "|",
        "Ne" => "!=",
        "Pm" => "+-",
        "q" => "\"",
        _ => "",
    }
}

/// Named glyphs (`\(xx`, `\[xx]`, `\[u00E9]`).
fn glyph(name: &str) -> &'static str {
    if let Some(hex) = name.strip_prefix('u') {
        if let Some(c) = u32::from_str_radix(hex.split('_').next().unwrap_or(""), 16)
            .ok()
            .and_then(char::from_u32)
        {
            return leak_char(c);
        }
    }
    match name {
        "em" => "\u{2014}",
        "en" => "\u{2013}",
        "hy" | "mi" | "-" | "-D" => "-",
        "bu" => "\u{2022}",
        "aq" | "cq" | "oq" | "fm" => "'",
        "dq" => "\"",
        "lq" => "\u{201C}",
        "rq" => "\u{201D}",
        "Fo" => "\u{00AB}",
        "Fc" => "\u{00BB}",
        "ga" => "`",
        "ha" | "a^" => "^",
        "ti" | "a~" | "ap" => "~",
        "rs" => "\\",
        "sl" => "/",
        "ba" | "br" | "bv" => "|",
        "ul" | "ru" => "_",
        "co" => "\u{00A9}",
        "rg" => "\u{00AE}",
        "tm" => "\u{2122}",
        "de" => "\u{00B0}",
        "mu" | "x" => "\u{00D7}",
        "di" => "\u{00F7}",
        "pl" => "+",
        "eq" => "=",
        "<=" => "<=",
        ">=" => ">=",
        "!=" => "!=",
        "->" | "rh" => "->",
        "<-" | "lh" => "<-",
        "<>" => "<->",
        "lt" | "la" | "fo" => "<",
        "rt" | "ra" | "fc" => ">",
        "Eu" | "eu" => "\u{20AC}",
        "Po" => "\u{00A3}",
        "ct" => "\u{00A2}",
        "sc" => "\u{00A7}",
        "ps" => "\u{00B6}",
        "+-" => "\u{00B1}",
        "**" | "as" => "*",
        "at" => "@",
        "sh" => "#",
        "Do" => "$",
        "pc" | "md" => "\u{00B7}",
        "ss" => "\u{00DF}",
        ":a" => "\u{00E4}",
        ":o" => "\u{00F6}",
        ":u" => "\u{00FC}",
        ":A" => "\u{00C4}",
        ":O" => "\u{00D6}",
        ":U" => "\u{00DC}",
        "'e" => "\u{00E9}",
        "`e" => "\u{00E8}",
        "'a" => "\u{00E1}",
        "`a" => "\u{00E0}",
        "~n" => "\u{00F1}",
        ",c" => "\u{00E7}",
        "if" | "Inf" => "\u{221E}",
        "aa" => "\u{00B4}",
        "hA" => "=>",
        "lB" => "[",
        "rB" => "]",
        "lC" => "{",
        "rC" => "}",
        "dg" => "\u{2020}",
        "OK" => "\u{2713}",
        _ => "",
    }
}

/// `&'static str` for an arbitrary char, via a small table of common ones; others are leaked
/// once each (the set of distinct escaped code points in a man corpus is tiny).
fn leak_char(c: char) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<char, &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = match cache.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(c).or_insert_with(|| Box::leak(c.to_string().into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#".\" Generated by hand for the test
.TH LS "1" "September 2022" "GNU coreutils 9.1" "User Commands"
.SH NAME
ls \- list directory contents
.SH SYNOPSIS
.B ls
[\fI\,OPTION\/\fR]... [\fI\,FILE\/\fR]...
.SH DESCRIPTION
.PP
List information about the FILEs (the current directory by default).
Sort entries alphabetically if none of \fB\-cftuvSUX\fR nor \fB\-\-sort\fR is specified.
.TP
\fB\-a\fR, \fB\-\-all\fR
do not ignore entries starting with .
.TP
.BR \-A ", " \-\-almost\-all
do not list implied . and ..
.IP \(bu 2
a bullet item with \(lqquotes\(rq and an em\(emdash
.de XX
this macro body must not appear
..
.ie n \{\
.    ds Q "nroff
'br\}
.el\{\
.    ds Q "troff
'br\}
Rendered by \*Q.
.nf
  line one
  line two
.fi
.SH "SEE ALSO"
.BR dir (1),
.UR https://example.org
home page
.UE
"#;

    #[test]
    fn man_sample_reads_like_man_output() {
        let text = roff_to_text(SAMPLE);
        let expected = "LS(1)

NAME
ls - list directory contents

SYNOPSIS
ls [OPTION]... [FILE]...

DESCRIPTION
List information about the FILEs (the current directory by default). Sort entries alphabetically if none of -cftuvSUX nor --sort is specified.

-a, --all
    do not ignore entries starting with .

-A, --almost-all
    do not list implied . and ..

    \u{2022} a bullet item with \u{201C}quotes\u{201D} and an em\u{2014}dash Rendered by nroff.
      line one
      line two

SEE ALSO
dir(1), home page <https://example.org>
";
        assert_eq!(text, expected);
    }

    #[test]
    fn mdoc_sample() {
        let src = ".Dd March 1, 2020
.Dt CAT 1
.Os
.Sh NAME
.Nm cat
.Nd concatenate files
.Sh SYNOPSIS
.Nm
.Op Fl belnstuv
.Ar
.Nm
.Fl h
.Sh DESCRIPTION
The
.Nm
utility reads files sequentially.
.Bl -tag -width Ds
.It Fl b
Number the non-blank output lines.
.El
See
.Xr head 1 .
";
        let text = roff_to_text(src);
        assert!(text.starts_with("CAT(1)\n\nNAME\ncat - concatenate files\n"), "{text}");
        assert!(text.contains("\ncat [-belnstuv]\ncat -h\n"), "{text}");
        assert!(text.contains("The cat utility reads files sequentially."), "{text}");
        assert!(text.contains("    -b\n        Number the non-blank output lines."), "{text}");
        assert!(text.contains("See head(1)."), "{text}");
    }

    #[test]
    fn redirect_pages_and_tables() {
        assert_eq!(roff_to_text(".so man1/other.1\n"), "");
        let src = ".TS\nallbox;\nl l.\nName\tValue\nT{\nalpha\nT}\tone\n.TE\nafter\n";
        let text = roff_to_text(src);
        assert!(text.contains("Name  Value"), "{text}");
        assert!(text.ends_with("after\n"), "{text}");
    }

    #[test]
    fn escapes() {
        let r = Renderer::default();
        assert_eq!(
            r.unescape(r"a\-b \fBbold\fP \(co \[u00E9] \e \s-1small\s0 \&."),
            "a-b bold \u{a9} \u{e9} \\ small ."
        );
        assert_eq!(r.unescape(r#"keep \" comment dropped"#), "keep ");
        assert_eq!(r.unescape(r"\h'3'x\v'1'y"), "xy");
    }
}

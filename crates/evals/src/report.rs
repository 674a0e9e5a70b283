//! Reading run logs back: `ferrogpt eval show` (terminal) and `ferrogpt eval report`
//! (one self-contained static HTML page comparing runs side by side, with per-sample
//! drill-down and, for multiple-choice scoring runs, a reliability diagram).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::log::{Event, RunLog};
use crate::metrics::{calibration, CalibrationBin};

/// One sample's outcome in a run: a score in [0, 1] where the eval defines one.
fn sample_score(events: &[&Event]) -> Option<f64> {
    for ev in events.iter().filter(|e| e.kind == "metrics") {
        for key in ["accuracy", "acc", "score", "pass@1", "metascore", "bits_per_byte"] {
            if let Some(v) = ev.data.get(key) {
                if let Some(f) = v.as_f64().or_else(|| v.as_bool().map(|b| f64::from(u8::from(b)))) {
                    return Some(f);
                }
            }
        }
    }
    let matches: Vec<bool> = events
        .iter()
        .filter(|e| e.kind == "match")
        .filter_map(|e| e.data.get("correct").and_then(Value::as_bool))
        .collect();
    (!matches.is_empty()).then(|| matches.iter().filter(|c| **c).count() as f64 / matches.len() as f64)
}

fn by_sample(log: &RunLog) -> BTreeMap<String, Vec<&Event>> {
    let mut map: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for ev in &log.events {
        if let Some(id) = &ev.sample_id {
            map.entry(id.clone()).or_default().push(ev);
        }
    }
    map
}

/// Sort sample ids by their numeric suffix (`base.split.12`), then by name.
fn sample_sort_key(id: &str) -> (String, u64) {
    match id.rsplit_once('.') {
        Some((head, n)) => (head.to_string(), n.parse().unwrap_or(u64::MAX)),
        None => (id.to_string(), 0),
    }
}

/// Reliability-diagram data when the run logged per-sample `confidence` and `acc`.
pub fn run_calibration(log: &RunLog) -> Option<(f64, Vec<CalibrationBin>)> {
    let mut conf = Vec::new();
    let mut correct = Vec::new();
    for ev in log.events.iter().filter(|e| e.kind == "metrics") {
        if let (Some(c), Some(a)) = (
            ev.data.get("confidence").and_then(Value::as_f64),
            ev.data.get("acc").and_then(Value::as_f64),
        ) {
            conf.push(c);
            correct.push(a > 0.5);
        }
    }
    (!conf.is_empty()).then(|| calibration(&conf, &correct, 10))
}

fn clip(s: &str, n: usize) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' { '⏎' } else { c }).collect();
    if one_line.chars().count() > n {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    } else {
        one_line
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if crate::prompt::is_chat(v) => crate::prompt::chat_to_text(items, false),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The terminal view of one log: spec, final report, then one line per sample.
pub fn show(log: &RunLog, max_rows: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  eval {}  completion fns {}",
        log.run_id,
        log.eval_name(),
        log.completion_fns()
    );
    let _ = writeln!(out, "final report:");
    for (k, v) in &log.final_report {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let samples = by_sample(log);
    let mut ids: Vec<&String> = samples.keys().collect();
    ids.sort_by_key(|id| sample_sort_key(id));
    let _ = writeln!(out, "{} samples, {} events", ids.len(), log.events.len());
    for id in ids.iter().take(max_rows) {
        let evs = &samples[*id];
        let score = sample_score(evs).map_or("   -".to_string(), |s| format!("{s:4.2}"));
        let m = evs.iter().find(|e| e.kind == "match").map(|e| &e.data);
        let sampled = m
            .and_then(|d| d.get("sampled").or_else(|| d.get("picked")))
            .or_else(|| evs.iter().find(|e| e.kind == "sampling").and_then(|e| e.data.get("sampled")))
            .map(|v| match v {
                Value::Array(a) => a.first().map(text_of).unwrap_or_default(),
                other => text_of(other),
            })
            .unwrap_or_default();
        let expected = m.and_then(|d| d.get("expected")).map(text_of).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {score}  {id:<28} got {:<40} want {}",
            clip(&sampled, 40),
            clip(&expected, 30)
        );
    }
    if ids.len() > max_rows {
        let _ = writeln!(out, "  … {} more (use --rows)", ids.len() - max_rows);
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn reliability_svg(bins: &[CalibrationBin], label: &str) -> String {
    let (w, h, pad) = (260.0, 260.0, 30.0);
    let plot = w - 2.0 * pad;
    let mut s = format!(
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="reliability diagram {}">"#,
        esc(label)
    );
    let _ = write!(
        s,
        r##"<rect x="{pad}" y="{pad}" width="{plot}" height="{plot}" fill="#fafafa" stroke="#999"/>"##
    );
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{}" x2="{}" y2="{pad}" stroke="#bbb" stroke-dasharray="4"/>"##,
        pad + plot,
        pad + plot
    );
    for b in bins.iter().filter(|b| b.count > 0) {
        let x = pad + b.lo * plot;
        let bw = (b.hi - b.lo) * plot - 2.0;
        let bh = b.accuracy * plot;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="#4a7bd0" opacity="0.8"><title>conf {:.2}-{:.2}: acc {:.2}, mean conf {:.2}, n={}</title></rect>"##,
            x + 1.0,
            pad + plot - bh,
            b.lo,
            b.hi,
            b.accuracy,
            b.mean_confidence,
            b.count
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">confidence</text>"#,
        pad + plot / 2.0,
        h - 8.0
    );
    let _ = write!(
        s,
        r#"<text x="10" y="{}" font-size="11" transform="rotate(-90 10 {})" text-anchor="middle">accuracy</text>"#,
        pad + plot / 2.0,
        pad + plot / 2.0
    );
    s.push_str("</svg>");
    s
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#dff5e1}.bad{background:#fbe3e3}.mid{background:#fff4d6}
tr.sample{cursor:pointer}tr.sample:hover td{outline:1px solid #88a}
tr.detail td{background:#fcfcfc}pre{white-space:pre-wrap;margin:2px 0;max-width:560px;font-size:12px}
.ev{border-left:3px solid #ccd;padding-left:6px;margin:4px 0}.muted{color:#777}
.controls{margin:8px 0}.cal{display:inline-block;margin-right:16px;text-align:center}
"#;

const SCRIPT: &str = r#"
const D = JSON.parse(document.getElementById('data').textContent);
const body = document.getElementById('samples');
function cls(s){ if(s===null||s===undefined) return ''; return s>=0.999?'ok':(s<=0.001?'bad':'mid'); }
function esc(s){ return String(s).replace(/[&<>"]/g, c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function render(){
  const q = document.getElementById('q').value.toLowerCase();
  const dis = document.getElementById('dis').checked;
  body.innerHTML = '';
  for (const s of D.samples){
    const scores = s.runs.map(r => r ? r.score : null);
    const known = scores.filter(x => x !== null);
    if (dis && (known.length < 2 || known.every(x => x === known[0]))) continue;
    if (q && !s.search.includes(q)) continue;
    const tr = document.createElement('tr'); tr.className = 'sample';
    tr.innerHTML = '<td>' + esc(s.id) + '</td>' + scores.map(x => '<td class="num ' + cls(x) + '">' + (x===null?'–':x.toFixed(2)) + '</td>').join('') + '<td class="muted">' + esc(s.preview) + '</td>';
    const det = document.createElement('tr'); det.className = 'detail'; det.style.display = 'none';
    det.innerHTML = '<td></td>' + s.runs.map(r => '<td>' + (r ? r.events.map(e => '<div class="ev"><b>' + esc(e.type) + '</b><pre>' + esc(e.text) + '</pre></div>').join('') : '') + '</td>').join('') + '<td></td>';
    tr.onclick = () => { det.style.display = det.style.display === 'none' ? '' : 'none'; };
    body.appendChild(tr); body.appendChild(det);
  }
  document.getElementById('count').textContent = body.querySelectorAll('tr.sample').length + ' of ' + D.samples.length + ' samples shown';
}
document.getElementById('q').oninput = render;
document.getElementById('dis').onchange = render;
render();
"#;

fn event_text(ev: &Event) -> String {
    let d = &ev.data;
    match ev.kind.as_str() {
        "sampling" => format!(
            "prompt:\n{}\n\nsampled:\n{}",
            text_of(d.get("prompt").unwrap_or(&Value::Null)),
            match d.get("sampled") {
                Some(Value::Array(a)) => a.iter().map(text_of).collect::<Vec<_>>().join("\n---\n"),
                Some(other) => text_of(other),
                None => String::new(),
            }
        ),
        _ => serde_json::to_string_pretty(d).unwrap_or_default(),
    }
}

/// A self-contained HTML page comparing `logs` (all data and script inline).
pub fn html_report(logs: &[RunLog]) -> String {
    let per_run: Vec<BTreeMap<String, Vec<&Event>>> = logs.iter().map(by_sample).collect();
    let mut ids: Vec<String> = per_run.iter().flat_map(|m| m.keys().cloned()).collect();
    ids.sort_by_key(|id| sample_sort_key(id));
    ids.dedup();
    let samples: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut preview = String::new();
            let runs: Vec<Value> = per_run
                .iter()
                .map(|m| match m.get(id) {
                    None => Value::Null,
                    Some(evs) => {
                        if preview.is_empty() {
                            if let Some(p) = evs.iter().find_map(|e| e.data.get("prompt")) {
                                preview = clip(&text_of(p), 90);
                            } else if let Some(e) = evs.iter().find_map(|e| e.data.get("expected")) {
                                preview = format!("expected {}", clip(&text_of(e), 80));
                            }
                        }
                        json!({
                            "score": sample_score(evs),
                            "events": evs.iter().map(|e| json!({"type": e.kind, "text": event_text(e)})).collect::<Vec<_>>(),
                        })
                    }
                })
                .collect();
            let search = format!("{id} {}", runs.iter().map(|r| r.to_string()).collect::<String>()).to_lowercase();
            json!({"id": id, "preview": preview, "runs": runs, "search": search})
        })
        .collect();
    let data = json!({ "samples": samples }).to_string().replace("</", "<\\/");

    let mut keys: Vec<String> = Vec::new();
    for log in logs {
        for k in log.final_report.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>ferrogpt eval report</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body><h1>Eval report</h1><h2>Runs</h2><table><tr><th></th>");
    for i in 0..logs.len() {
        let _ = write!(h, "<th>run {}</th>", i + 1);
    }
    h.push_str("</tr>");
    for name in ["eval", "completion fn", "run id", "samples"] {
        let _ = write!(h, "<tr><th>{name}</th>");
        for log in logs {
            let cell = match name {
                "eval" => log.eval_name().to_string(),
                "completion fn" => log.completion_fns(),
                "run id" => log.run_id.clone(),
                _ => by_sample(log).len().to_string(),
            };
            let _ = write!(h, "<td>{}</td>", esc(&cell));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><h2>Final reports</h2><table><tr><th>metric</th>");
    for i in 0..logs.len() {
        let _ = write!(h, "<th>run {}</th>", i + 1);
    }
    h.push_str("</tr>");
    for k in &keys {
        let _ = write!(h, "<tr><th>{}</th>", esc(k));
        for log in logs {
            let cell = match log.final_report.get(k) {
                Some(Value::Number(n)) => n.as_f64().map_or(n.to_string(), |f| format!("{f:.4}")),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_f64().map_or(v.to_string(), |f| format!("{f:.3}")))
                    .collect::<Vec<_>>()
                    .join(" – "),
                Some(other) => other.to_string(),
                None => "–".into(),
            };
            let _ = write!(h, "<td class=\"num\">{}</td>", esc(&cell));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    let cals: Vec<(usize, f64, Vec<CalibrationBin>)> = logs
        .iter()
        .enumerate()
        .filter_map(|(i, l)| run_calibration(l).map(|(e, b)| (i, e, b)))
        .collect();
    if !cals.is_empty() {
        h.push_str("<h2>Calibration</h2>");
        for (i, ece, bins) in &cals {
            let label = format!("run {}", i + 1);
            let _ = write!(
                h,
                "<div class=\"cal\">{}<br>{label}: ECE {ece:.3}</div>",
                reliability_svg(bins, &label)
            );
        }
    }
    h.push_str("<h2>Samples</h2><div class=\"controls\"><input id=\"q\" placeholder=\"filter samples\" size=\"30\"> <label><input type=\"checkbox\" id=\"dis\"> only where runs disagree</label> <span id=\"count\" class=\"muted\"></span></div>");
    h.push_str("<p class=\"muted\">Click a row to see each run's events for that sample.</p><table><thead><tr><th>sample</th>");
    for i in 0..logs.len() {
        let _ = write!(h, "<th>run {}</th>", i + 1);
    }
    h.push_str("<th>prompt</th></tr></thead><tbody id=\"samples\"></tbody></table>");
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"data\">{data}</script><script>{SCRIPT}</script></body></html>"
    );
    h
}

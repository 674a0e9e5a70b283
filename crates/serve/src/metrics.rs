//! Prometheus metrics, rendered in the text exposition format by hand (a handful of counters
//! and histograms do not justify a metrics framework).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::backend::BackendStats;

const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    prompt_tokens: BTreeMap<String, u64>,
    completion_tokens: BTreeMap<String, u64>,
    latency: BTreeMap<String, Histogram>,
    ttft: BTreeMap<String, Histogram>,
    rate_limited: BTreeMap<String, u64>,
    in_flight: i64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counter updates cannot fail half-way; a poisoned lock still holds usable numbers.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        let mut m = self.lock();
        *m.requests.entry((endpoint.to_string(), status)).or_default() += 1;
        m.latency.entry(endpoint.to_string()).or_default().observe(seconds);
    }

    pub fn tokens(&self, model: &str, prompt: u64, completion: u64) {
        let mut m = self.lock();
        *m.prompt_tokens.entry(model.to_string()).or_default() += prompt;
        *m.completion_tokens.entry(model.to_string()).or_default() += completion;
    }

    pub fn first_token(&self, model: &str, seconds: f64) {
        self.lock().ttft.entry(model.to_string()).or_default().observe(seconds);
    }

    pub fn rate_limited(&self, kind: &str) {
        *self.lock().rate_limited.entry(kind.to_string()).or_default() += 1;
    }

    pub fn in_flight(&self, delta: i64) {
        self.lock().in_flight += delta;
    }

    /// The exposition text; `backends` gives each snapshot's scheduler load.
    pub fn render(&self, backends: &[(String, BackendStats)]) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP ferrogpt_requests_total API requests by endpoint and HTTP status.\n# TYPE ferrogpt_requests_total counter\n");
        for ((ep, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "ferrogpt_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                escape(ep)
            );
        }
        for (name, help, map) in [
            ("ferrogpt_prompt_tokens_total", "Prompt tokens processed.", &m.prompt_tokens),
            (
                "ferrogpt_completion_tokens_total",
                "Completion tokens generated.",
                &m.completion_tokens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, n) in map {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", escape(model));
            }
        }
        out.push_str(
            "# HELP ferrogpt_rate_limited_total Requests refused with 429, by limit.\n# TYPE ferrogpt_rate_limited_total counter\n",
        );
        for (kind, n) in &m.rate_limited {
            let _ = writeln!(out, "ferrogpt_rate_limited_total{{limit=\"{}\"}} {n}", escape(kind));
        }
        out.push_str("# HELP ferrogpt_request_duration_seconds Time from request to last byte.\n# TYPE ferrogpt_request_duration_seconds histogram\n");
        for (ep, h) in &m.latency {
            h.render(
                &mut out,
                "ferrogpt_request_duration_seconds",
                &format!("endpoint=\"{}\"", escape(ep)),
            );
        }
        out.push_str("# HELP ferrogpt_time_to_first_token_seconds Time from admission to the first generated text.\n# TYPE ferrogpt_time_to_first_token_seconds histogram\n");
        for (model, h) in &m.ttft {
            h.render(
                &mut out,
                "ferrogpt_time_to_first_token_seconds",
                &format!("model=\"{}\"", escape(model)),
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferrogpt_requests_in_flight Requests being served.\n# TYPE ferrogpt_requests_in_flight gauge\nferrogpt_requests_in_flight {}",
            m.in_flight
        );
        for (name, help, get) in [
            (
                "ferrogpt_queue_depth",
                "Sequences waiting for a KV-cache slot.",
                (|s: &BackendStats| s.waiting as u64) as fn(&BackendStats) -> u64,
            ),
            ("ferrogpt_running_sequences", "Sequences holding a KV-cache slot.", |s| {
                s.running as u64
            }),
            ("ferrogpt_batch_size", "Sequences in the latest forward pass.", |s| {
                s.last_batch_size as u64
            }),
            ("ferrogpt_scheduler_steps_total", "Forward passes run by the scheduler.", |s| {
                s.steps
            }),
            (
                "ferrogpt_scheduler_restarts_total",
                "Times the scheduler recovered from a panic, failing the sequences it held.",
                |s| s.restarts,
            ),
        ] {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (model, stats) in backends {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(model), get(stats));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("chat", 200, 0.02);
        m.request("chat", 200, 3.0);
        m.tokens("m", 10, 4);
        let text = m.render(&[(
            "m".into(),
            BackendStats {
                waiting: 2,
                running: 3,
                last_batch_size: 3,
                steps: 9,
                restarts: 1,
                ..BackendStats::default()
            },
        )]);
        assert!(text.contains("ferrogpt_requests_total{endpoint=\"chat\",status=\"200\"} 2"));
        assert!(text.contains("ferrogpt_request_duration_seconds_bucket{endpoint=\"chat\",le=\"0.025\"} 1"));
        assert!(text.contains("ferrogpt_request_duration_seconds_bucket{endpoint=\"chat\",le=\"+Inf\"} 2"));
        assert!(text.contains("ferrogpt_queue_depth{model=\"m\"} 2"));
        assert!(text.contains("ferrogpt_scheduler_restarts_total{model=\"m\"} 1"));
        assert!(text.contains("ferrogpt_completion_tokens_total{model=\"m\"} 4"));
    }
}

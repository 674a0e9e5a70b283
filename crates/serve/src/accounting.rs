//! What one admitted request costs, from admission to its end: its ledger row (opened at
//! admission, brought up to date while it runs, settled when it ends), its rate-limit
//! reservation (settled to the tokens actually used) and its metrics. The end is whenever the
//! [`Accounting`] is dropped: on success, on error, or when the request's future or stream task
//! is dropped because the client went away — then the prompt and every completion token seen
//! so far are charged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogpt_infer::GenerationEvent;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::backend::GenEvent;
use crate::error::ApiError;
use crate::ledger::{Committed, Ticket};
use crate::ratelimit::Reservation;
use crate::server::{unix_now, AppState};
use crate::store::{LedgerEntry, OUTCOME_INTERRUPTED, OUTCOME_OPEN};

/// How often a running request's completion tokens are written to the ledger at most, so a
/// crash loses little and the database is not written once per token.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The outcome of a request that ends without having answered in full.
pub const OUTCOME_DISCONNECTED: &str = "client_disconnected";

pub struct Accounting {
    pub state: Arc<AppState>,
    reservation: Option<Reservation>,
    key_id: i64,
    model: String,
    endpoint: &'static str,
    pub started: Instant,
    /// Charged from admission on; 0 only when the request never reached the model.
    pub prompt_tokens: u64,
    /// Completion tokens of each choice: counted from its text events while it runs, then
    /// confirmed by its `Finished`.
    choice_tokens: Vec<u64>,
    pub status: u16,
    pub outcome: &'static str,
    /// Dollars per 1,000 (prompt, completion) tokens.
    price: (f64, f64),
    ticket: Ticket,
    committed: Option<Committed>,
    /// When progress was last queued for the ledger, and with how many tokens.
    last_progress: Option<(Instant, u64)>,
}

impl Accounting {
    /// Starts accounting for a request that holds `reservation`: opens its ledger row.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        state: Arc<AppState>,
        reservation: Reservation,
        key_id: i64,
        model: &str,
        endpoint: &'static str,
        price: (f64, f64),
        prompt_tokens: u64,
        choices: usize,
    ) -> Self {
        let mut acct = Self {
            state,
            reservation: Some(reservation),
            key_id,
            model: model.to_string(),
            endpoint,
            started: Instant::now(),
            prompt_tokens,
            choice_tokens: vec![0; choices],
            status: 200,
            outcome: OUTCOME_DISCONNECTED,
            price,
            ticket: 0,
            committed: None,
            last_progress: None,
        };
        let (ticket, committed) = acct.state.ledger.open(acct.entry(OUTCOME_OPEN));
        acct.ticket = ticket;
        acct.committed = Some(committed);
        acct.state.metrics.in_flight(1);
        acct
    }

    /// Waits until the request's ledger row is committed; call before generating, so that a
    /// request the server answers always has a row, even if the process is then killed.
    pub async fn row_written(&mut self) -> Result<(), ApiError> {
        let Some(committed) = self.committed.take() else {
            return Ok(());
        };
        match committed.await {
            Ok(Ok(())) => Ok(()),
            failed => {
                if let Ok(Err(e)) = failed {
                    tracing::error!("{e}");
                }
                self.prompt_tokens = 0;
                self.status = 503;
                self.outcome = "error";
                Err(ApiError::unavailable("The usage ledger is unavailable; the request was not run."))
            }
        }
    }

    pub fn completion_tokens(&self) -> u64 {
        self.choice_tokens.iter().sum()
    }

    /// Bills the `sampled` tokens behind a piece of choice `i`'s text and, at the request's
    /// first text (`first` still set), records its time to first token.
    pub fn text_arrived(&mut self, i: usize, sampled: usize, text: &str, first: &mut bool) {
        self.sampled(i, sampled);
        if *first && !text.is_empty() {
            *first = false;
            self.state.metrics.first_token(&self.model, self.started.elapsed().as_secs_f64());
        }
    }

    /// Counts `tokens` newly sampled for `choice` (those of one text event).
    pub fn sampled(&mut self, choice: usize, tokens: usize) {
        if let Some(n) = self.choice_tokens.get_mut(choice) {
            *n += tokens as u64;
        }
        self.report_progress();
    }

    /// A choice finished with exactly `completion_tokens`.
    pub fn done(&mut self, choice: usize, completion_tokens: usize) {
        if let Some(n) = self.choice_tokens.get_mut(choice) {
            *n = completion_tokens as u64;
        }
    }

    /// Counts the events generated but not yet delivered when the client left: their tokens
    /// were generated before the disconnect was noticed, and are charged.
    pub fn count_undelivered(&mut self, events: &mut UnboundedReceiver<(usize, GenEvent)>) {
        while let Ok((choice, event)) = events.try_recv() {
            match event {
                GenEvent::Sequence(GenerationEvent::Text { tokens, .. }) => self.sampled(choice, tokens.len()),
                GenEvent::Sequence(GenerationEvent::Finished { completion_tokens, .. }) => self.done(choice, completion_tokens),
                GenEvent::Sequence(GenerationEvent::Prompt(_)) | GenEvent::Failed(_) => {}
            }
        }
    }

    fn cost(&self, completion_tokens: u64) -> f64 {
        (self.prompt_tokens as f64 * self.price.0 + completion_tokens as f64 * self.price.1) / 1000.0
    }

    fn entry(&self, outcome: &str) -> LedgerEntry {
        let completion_tokens = self.completion_tokens();
        LedgerEntry {
            ts: unix_now() as i64,
            key_id: self.key_id,
            model: self.model.clone(),
            endpoint: self.endpoint.to_string(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            cost: self.cost(completion_tokens),
            latency_ms: self.started.elapsed().as_millis() as u64,
            status: self.status,
            outcome: outcome.to_string(),
        }
    }

    /// Queues the tokens so far for the ledger, at most once per [`PROGRESS_EVERY`].
    fn report_progress(&mut self) {
        let tokens = self.completion_tokens();
        let due = match self.last_progress {
            None => true,
            Some((at, sent)) => sent != tokens && at.elapsed() >= PROGRESS_EVERY,
        };
        if due {
            let latency = self.started.elapsed().as_millis() as u64;
            self.state.ledger.progress(self.ticket, tokens, self.cost(tokens), latency);
            self.last_progress = Some((Instant::now(), tokens));
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        let completion_tokens = self.completion_tokens();
        if let Some(r) = self.reservation.take() {
            self.state.limiter.settle(r, self.prompt_tokens + completion_tokens);
        }
        // Cut short by a shutdown whose drain deadline passed, not by its client.
        if self.outcome == OUTCOME_DISCONNECTED && self.state.is_interrupting() {
            self.outcome = OUTCOME_INTERRUPTED;
        }
        let latency = self.started.elapsed();
        self.state.metrics.request(self.endpoint, self.status, latency.as_secs_f64());
        self.state.metrics.tokens(&self.model, self.prompt_tokens, completion_tokens);
        self.state.metrics.in_flight(-1);
        self.state.ledger.settle(self.ticket, self.entry(self.outcome));
        tracing::info!(
            endpoint = self.endpoint,
            model = %self.model,
            key = self.key_id,
            status = self.status,
            outcome = self.outcome,
            prompt_tokens = self.prompt_tokens,
            completion_tokens,
            latency_ms = latency.as_millis() as u64,
            "request finished"
        );
    }
}

//! ferrogpt-serve: the OpenAI-compatible HTTP server — `/v1/chat/completions`,
//! `/v1/completions`, `/v1/moderations`, `/v1/models`, the waitlist, API keys, per-key rate
//! limits, the SQLite usage ledger, Prometheus metrics and the chat page.
//!
//! A request takes one path through the modules: `auth` (which key asks), `admission` (may it
//! run: model, context, limits, seats), `completion` (the endpoints' bodies into one admission)
//! and `run` (generation into a buffered response or an SSE stream), in the typed bodies of
//! `respond`; `server` holds the shared state, the routes and the graceful shutdown.
//!
//! What a request costs is settled in one place, `accounting`: its ledger row is opened at
//! admission, kept up to date while it runs and settled when it ends (also when the client
//! leaves, or the server is killed: the next start closes such rows as interrupted); the rows
//! are written by one thread (`ledger`) on a connection of its own.
//!
//! It also owns the scheduler thread of [`engine::EngineBackend`], which drives ferrogpt-infer's
//! batch decoder and passes it each request's API key as its fair-admission group, and recovers
//! it from a panic (the batch fails with a 500, the scheduler starts over, `/health` tells).
//! `seats` bounds the sequences a model, and each key on it, holds at once. The HTTP
//! layer reaches models only through the [`backend::Backend`] trait. It must not touch the
//! transformer, the KV cache, generation (the decoder, sampling, JSON mode, the BOS policy),
//! the chat template or the translation of request fields into generation inputs: those are
//! ferrogpt-engine's and ferrogpt-infer's.
//!
//! `moderation` serves a trained moderation classifier (loaded with ferrogpt-infer, beside the
//! chat models rather than behind a scheduler: one forward pass per input, off the runtime) at
//! `/v1/moderations` in OpenAI's shape, and checks the chat page's input with it. What the
//! classifier reads is ferrogpt-chatdata's `request_text` as plain text, what its
//! probabilities mean in OpenAI's category names is ferrogpt-chatdata's (`moderation`).

mod accounting;
mod admission;
pub mod api;
mod auth;
pub mod backend;
mod completion;
pub mod config;
pub mod engine;
pub mod error;
mod ledger;
pub mod metrics;
pub mod moderation;
mod page;
pub mod ratelimit;
mod respond;
mod run;
mod seats;
pub mod server;
pub mod store;
mod waitlist;

#[cfg(test)]
mod tests;

pub use config::Config;
pub use error::{ApiError, ServeError};
pub use server::{router, serve, AppState};
pub use store::Store;

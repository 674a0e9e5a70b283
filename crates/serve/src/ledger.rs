//! The ledger writer: one thread that owns every write to the usage ledger, on a connection of
//! its own, so that request handlers (and the `Drop` of a request whose client went away) only
//! queue messages and never wait on the database.
//!
//! A request's row is opened at admission and the handler waits (asynchronously) for that
//! commit before anything is generated, so every request that got a 200 has a row even if the
//! process is killed; progress updates and the final settlement follow in place. The thread
//! writes whatever is queued in one transaction, keeping only the latest progress of each
//! request, so a burst of requests costs one commit rather than one per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::ServeError;
use crate::store::{LedgerConn, LedgerEntry, Store};

/// Names one request's row between the handler and the writer thread, which alone knows the
/// row id (the handler may be gone before the row is written).
pub type Ticket = u64;

/// Messages written in one transaction at most.
const MAX_BATCH: usize = 1024;

/// Why a request's row could not be opened; the writer thread logs the database's error.
#[derive(Debug, thiserror::Error)]
#[error("the usage ledger could not record the request")]
pub struct NotRecorded;

/// Resolves once the row opened for a request is committed (a closed channel means the writer
/// thread has stopped).
pub type Committed = oneshot::Receiver<Result<(), NotRecorded>>;

enum Msg {
    Open {
        ticket: Ticket,
        entry: LedgerEntry,
        committed: oneshot::Sender<Result<(), NotRecorded>>,
    },
    Progress {
        ticket: Ticket,
        completion_tokens: u64,
        cost: f64,
        latency_ms: u64,
    },
    Settle {
        ticket: Ticket,
        entry: LedgerEntry,
    },
    Flush(SyncSender<()>),
}

pub struct LedgerWriter {
    tx: Mutex<Sender<Msg>>,
    next_ticket: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LedgerWriter {
    /// Closes the rows a previous run left open as interrupted, then starts the writer.
    pub fn start(store: &Store) -> Result<Self, ServeError> {
        let conn = store.ledger_connection()?;
        let closed = conn.close_interrupted()?;
        if closed > 0 {
            tracing::warn!("closed {closed} ledger row(s) that a previous run left open as interrupted");
        }
        let (tx, rx) = channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("ferrogpt-ledger".into())
            .spawn(move || write_until_closed(&conn, &rx))
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the ledger thread; usage will not be recorded");
        }
        Ok(Self {
            tx: Mutex::new(tx),
            next_ticket: AtomicU64::new(0),
            thread: Mutex::new(thread),
        })
    }

    fn send(&self, msg: Msg) -> bool {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(msg).is_ok()
    }

    /// Queues the row of a request being admitted; await the receiver before answering 200.
    pub fn open(&self, entry: LedgerEntry) -> (Ticket, Committed) {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (committed, rx) = oneshot::channel();
        // If the thread is gone the sender is dropped with the message and `rx` reports it.
        self.send(Msg::Open { ticket, entry, committed });
        (ticket, rx)
    }

    /// Queues the completion tokens (and their cost) of a running request.
    pub fn progress(&self, ticket: Ticket, completion_tokens: u64, cost: f64, latency_ms: u64) {
        self.send(Msg::Progress {
            ticket,
            completion_tokens,
            cost,
            latency_ms,
        });
    }

    /// Queues a request's final row.
    pub fn settle(&self, ticket: Ticket, entry: LedgerEntry) {
        if !self.send(Msg::Settle { ticket, entry }) {
            tracing::error!("ledger thread has stopped; a request's final usage was lost");
        }
    }

    /// Blocks until everything queued before this call is committed.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel(1);
        if self.send(Msg::Flush(done_tx)) {
            let _ = done_rx.recv();
        }
    }
}

impl Drop for LedgerWriter {
    fn drop(&mut self) {
        self.flush();
        // Closing the channel ends the thread's loop once the queue is empty.
        let (dead, _) = channel();
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = dead;
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn write_until_closed(conn: &LedgerConn, rx: &Receiver<Msg>) {
    // Row ids of the requests still running.
    let mut rows: HashMap<Ticket, i64> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(MAX_BATCH - 1));
        write_batch(conn, &mut rows, batch);
    }
}

/// Writes one batch in one transaction, then answers those waiting for it.
fn write_batch(conn: &LedgerConn, rows: &mut HashMap<Ticket, i64>, batch: Vec<Msg>) {
    let mut opens = Vec::new();
    let mut progress: HashMap<Ticket, (u64, f64, u64)> = HashMap::new();
    let mut settles = Vec::new();
    let mut flushes = Vec::new();
    for msg in batch {
        match msg {
            Msg::Open { ticket, entry, committed } => opens.push((ticket, entry, committed)),
            Msg::Progress {
                ticket,
                completion_tokens,
                cost,
                latency_ms,
            } => {
                progress.insert(ticket, (completion_tokens, cost, latency_ms));
            }
            Msg::Settle { ticket, entry } => settles.push((ticket, entry)),
            Msg::Flush(done) => flushes.push(done),
        }
    }
    // A message's order within its kind is kept, and a request's open always comes before its
    // progress and its settlement, so applying the kinds in that order is faithful.
    let result = (|| -> Result<Vec<Result<(), NotRecorded>>, ServeError> {
        conn.begin()?;
        let mut opened = Vec::with_capacity(opens.len());
        for (ticket, entry, _) in &opens {
            opened.push(match conn.insert(entry) {
                Ok(row) => {
                    rows.insert(*ticket, row);
                    Ok(())
                }
                Err(e) => {
                    tracing::error!("could not open a ledger row: {e}");
                    Err(NotRecorded)
                }
            });
        }
        for (ticket, (completion_tokens, cost, latency_ms)) in &progress {
            if let Some(&row) = rows.get(ticket) {
                if let Err(e) = conn.progress(row, *completion_tokens, *cost, *latency_ms) {
                    tracing::error!("ledger progress write failed: {e}");
                }
            }
        }
        for (ticket, entry) in &settles {
            let written = match rows.remove(ticket) {
                Some(row) => conn.settle(row, entry),
                // The row could not be opened: record the request now if the database allows.
                None => conn.insert(entry).map(|_| ()),
            };
            if let Err(e) = written {
                tracing::error!("ledger write failed, entry lost: {e}: {entry:?}");
            }
        }
        conn.commit()?;
        Ok(opened)
    })();
    match result {
        Ok(opened) => {
            for ((_, _, committed), outcome) in opens.into_iter().zip(opened) {
                // The handler may have gone (client disconnected); its settlement follows.
                let _ = committed.send(outcome);
            }
        }
        Err(e) => {
            conn.rollback();
            tracing::error!("ledger transaction failed, {} settlement(s) lost: {e}", settles.len());
            for (ticket, _, committed) in opens {
                rows.remove(&ticket);
                let _ = committed.send(Err(NotRecorded));
            }
        }
    }
    for done in flushes {
        let _ = done.send(());
    }
}

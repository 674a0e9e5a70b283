//! The ledger writer: one thread that owns inserts into the usage ledger, so a request that
//! ends (even from a `Drop` when a client disconnects) only queues its entry and never waits
//! on the database.

use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::store::{LedgerEntry, Store};

enum Msg {
    Entry(LedgerEntry),
    Flush(SyncSender<()>),
}

pub struct LedgerWriter {
    tx: Mutex<Sender<Msg>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LedgerWriter {
    pub fn start(store: Arc<Store>) -> Self {
        let (tx, rx) = channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("ferrogpt-ledger".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Entry(e) => {
                            if let Err(err) = store.record(&e) {
                                tracing::error!("ledger write failed, entry lost: {err}: {e:?}");
                            }
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the ledger thread; usage will not be recorded");
        }
        Self {
            tx: Mutex::new(tx),
            thread: Mutex::new(thread),
        }
    }

    fn send(&self, msg: Msg) -> bool {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(msg).is_ok()
    }

    pub fn record(&self, entry: LedgerEntry) {
        if !self.send(Msg::Entry(entry)) {
            tracing::error!("ledger thread has stopped; an entry was lost");
        }
    }

    /// Blocks until everything queued before this call is written.
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

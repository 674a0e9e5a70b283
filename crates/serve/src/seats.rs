//! The bound on the sequences a model holds at once, running in a decode slot or waiting for
//! one. Without it one client could queue any number of sequences in front of everyone (each
//! costs memory for its prompt and state, and delays every request behind it): a request takes
//! a place for each of its sequences at admission and gives them back when it ends. A key has
//! a bound of its own below the model's, so one key's flood leaves room for other keys; the
//! decoder then hands free slots round-robin over keys (ferrogpt-infer's fair admission).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Places of one model.
pub(crate) struct SequenceSeats {
    per_model: usize,
    per_key: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_key: HashMap<i64, usize>,
}

/// Why places were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeatsRefused {
    /// The key holds its share now.
    KeyFull { held: usize, limit: usize },
    /// The model holds its bound now.
    ModelFull { limit: usize },
}

impl SequenceSeats {
    pub(crate) fn new(per_model: usize, per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            per_model,
            per_key,
            held: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most places one key may hold: a request asking for more can never be admitted.
    pub(crate) fn per_key(&self) -> usize {
        self.per_key
    }

    /// Takes `count` places for `key`, all or none.
    pub(crate) fn take(self: &Arc<Self>, key: i64, count: usize) -> Result<Seats, SeatsRefused> {
        let mut held = self.lock();
        let of_key = held.by_key.get(&key).copied().unwrap_or(0);
        if of_key + count > self.per_key {
            return Err(SeatsRefused::KeyFull {
                held: of_key,
                limit: self.per_key,
            });
        }
        if held.total + count > self.per_model {
            return Err(SeatsRefused::ModelFull { limit: self.per_model });
        }
        held.total += count;
        *held.by_key.entry(key).or_insert(0) += count;
        Ok(Seats {
            pool: self.clone(),
            key,
            count,
        })
    }

    /// Places held now.
    pub(crate) fn held(&self) -> usize {
        self.lock().total
    }
}

/// Places held by one request; dropping them gives them back.
pub(crate) struct Seats {
    pool: Arc<SequenceSeats>,
    key: i64,
    count: usize,
}

impl Drop for Seats {
    fn drop(&mut self) {
        let mut held = self.pool.lock();
        held.total -= self.count;
        if let Some(n) = held.by_key.get_mut(&self.key) {
            *n -= self.count;
            if *n == 0 {
                held.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_model_and_given_back_on_drop() {
        let seats = SequenceSeats::new(10, 6);
        assert_eq!(seats.take(1, 7).err(), Some(SeatsRefused::KeyFull { held: 0, limit: 6 }));
        let a = seats.take(1, 4).unwrap();
        assert_eq!(seats.take(1, 3).err(), Some(SeatsRefused::KeyFull { held: 4, limit: 6 }));
        let a2 = seats.take(1, 2).unwrap();
        let b = seats.take(2, 4).unwrap();
        assert_eq!(seats.take(3, 1).err(), Some(SeatsRefused::ModelFull { limit: 10 }));
        assert_eq!(seats.held(), 10);
        drop(a);
        assert_eq!(seats.held(), 6);
        let c = seats.take(3, 4).unwrap();
        drop((a2, b, c));
        assert_eq!(seats.held(), 0);
        assert!(seats.lock().by_key.is_empty());
    }
}

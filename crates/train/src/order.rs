//! A seeded order over a fixed list of items, reshuffled each epoch, whose cursor
//! is all a checkpoint needs to continue it exactly.

use ferrogpt_rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Where an [`EpochOrder`] is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCursor {
    pub epoch: u64,
    /// Items of this epoch already taken.
    pub position: usize,
}

pub struct EpochOrder {
    seed: u64,
    order: Vec<usize>,
    cursor: OrderCursor,
}

impl EpochOrder {
    /// An order over `len` items (at least one).
    pub fn new(len: usize, seed: u64) -> Result<Self, TrainError> {
        if len == 0 {
            return Err(TrainError::Config {
                key: "data".into(),
                why: "there are no items to train on".into(),
            });
        }
        let mut order = EpochOrder {
            seed,
            order: (0..len).collect(),
            cursor: OrderCursor { epoch: 0, position: 0 },
        };
        order.shuffle();
        Ok(order)
    }

    fn shuffle(&mut self) {
        self.order.sort_unstable();
        SplitMix64::derived(self.seed, self.cursor.epoch).shuffle(&mut self.order);
    }

    /// The next item, without taking it; starts the next epoch when this one is done.
    pub fn peek(&mut self) -> usize {
        if self.cursor.position >= self.order.len() {
            self.cursor.epoch += 1;
            self.cursor.position = 0;
            self.shuffle();
        }
        self.order[self.cursor.position]
    }

    /// Takes the next item.
    pub fn take(&mut self) -> usize {
        let next = self.peek();
        self.cursor.position += 1;
        next
    }

    pub fn cursor(&self) -> OrderCursor {
        self.cursor.clone()
    }

    pub fn restore(&mut self, cursor: OrderCursor) -> Result<(), TrainError> {
        if cursor.position > self.order.len() {
            return Err(TrainError::Config {
                key: "cursor".into(),
                why: format!("position {} is past the {} items", cursor.position, self.order.len()),
            });
        }
        self.cursor = cursor;
        self.shuffle();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_is_a_permutation_and_restoring_continues_exactly() {
        let mut a = EpochOrder::new(7, 3).unwrap();
        let first: Vec<usize> = (0..7).map(|_| a.take()).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        let second: Vec<usize> = (0..3).map(|_| a.take()).collect();
        assert_eq!(a.cursor(), OrderCursor { epoch: 1, position: 3 });
        let mut b = EpochOrder::new(7, 3).unwrap();
        b.restore(a.cursor()).unwrap();
        let rest_a: Vec<usize> = (0..10).map(|_| a.take()).collect();
        let rest_b: Vec<usize> = (0..10).map(|_| b.take()).collect();
        assert_eq!(rest_a, rest_b);
        assert_ne!(first[..3], second[..], "a new epoch reshuffles (for this seed)");
        assert!(EpochOrder::new(0, 1).is_err());
        assert!(b.restore(OrderCursor { epoch: 0, position: 8 }).is_err());
    }
}

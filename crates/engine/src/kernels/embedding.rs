//! Token embedding lookup and its scatter-add backward.

use crate::float::Float;
use crate::EngineError;

/// `x[n] = table[tokens[n]]`; an out-of-range id is an error, not a panic.
pub fn embed_forward<T: Float>(x: &mut [T], table: &[T], tokens: &[u32], d: usize) -> Result<(), EngineError> {
    let vocab = table.len() / d;
    for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
        let t = t as usize;
        if t >= vocab {
            return Err(EngineError::Shape(format!("token id {t} is outside the vocabulary of {vocab}")));
        }
        row.copy_from_slice(&table[t * d..(t + 1) * d]);
    }
    Ok(())
}

/// `dtable[tokens[n]] += dx[n]`, serially in token order (deterministic; it is
/// a small fraction of a step).
pub fn embed_backward<T: Float>(dtable: &mut [T], dx: &[T], tokens: &[u32], d: usize) {
    for (row, &t) in dx.chunks_exact(d).zip(tokens) {
        let t = t as usize;
        for (a, &b) in dtable[t * d..(t + 1) * d].iter_mut().zip(row) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_scatter() {
        let table: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let mut x = vec![0.0; 6];
        embed_forward(&mut x, &table, &[2, 0], 3).unwrap();
        assert_eq!(x, vec![6.0, 7.0, 8.0, 0.0, 1.0, 2.0]);
        let mut d = vec![0.0; 12];
        embed_backward(&mut d, &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], &[1, 1], 3);
        assert_eq!(&d[3..6], &[3.0, 3.0, 3.0]);
        assert!(embed_forward(&mut x, &table, &[4], 3)
            .unwrap_err()
            .to_string()
            .contains("token id 4"));
    }
}

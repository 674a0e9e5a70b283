//! ferrogpt-scaling: predictable scaling. Fits power laws to the final losses
//! of a ladder of small runs and extrapolates them, with honest intervals.
//!
//! Owns: the fitting of `L(C) = a·C^b + c` and of Chinchilla's
//! `L(N, D) = E + A/N^α + B/D^β` ([`fit`]), and bootstrap prediction intervals.
//! Must not touch: training itself (ferrogpt-train runs the rungs) or the
//! engine's FLOP accounting (ferrogpt-engine's `ModelConfig` owns it).

pub mod fit;

#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    #[error("need at least {need} fit points, got {got}")]
    TooFewPoints { need: usize, got: usize },
    #[error("fit point {index} is not finite and positive: {value}")]
    BadPoint { index: usize, value: f64 },
    #[error("the optimiser failed on every start: {0}")]
    Optimiser(String),
}

//! Losses of post-training that are not next-token cross-entropy, each with its
//! gradient beside it. They read the head's output rows that a forward pass
//! left in `acts.logits` and write dLoss/dlogits there for
//! [`crate::Model::backward_from_logits`].
//!
//! Pairwise reward-model loss (Bradley–Terry, as in InstructGPT): for a
//! chosen and a rejected response with scalar scores `r_c`, `r_r`,
//!   `L = −log σ(r_c − r_r) = softplus(r_r − r_c)`,
//!   `∂L/∂r_c = −σ(r_r − r_c)`, `∂L/∂r_r = +σ(r_r − r_c)`.
//!
//! Policy loss with a KL penalty, for one generated token `a` at one position,
//! with policy logits `z` (p = softmax z), reference logits `y` (q = softmax y),
//! advantage `A` and KL weight `β`:
//!   `L = −A · log p_a + β · KL(p ‖ q)`, `KL(p ‖ q) = Σ_j p_j (log p_j − log q_j)`,
//!   `∂L/∂z_k = −A (1[k=a] − p_k) + β p_k (log p_k − log q_k − KL)`.
//! The KL is the exact one over the whole vocabulary (both models' logits are
//! at hand), not a one-sample estimate: no variance from the penalty.

use crate::float::Float;

/// `log σ(x)` without overflow for large |x|.
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The pairwise loss of one preference pair and `∂L/∂r_c` (`∂L/∂r_r` is its negative).
pub fn pairwise_loss(chosen: f64, rejected: f64) -> (f64, f64) {
    let margin = chosen - rejected;
    (-log_sigmoid(margin), -sigmoid(-margin))
}

/// What [`policy_kl_backward`] measured at one position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyStep {
    /// `log p_a`, the policy's log-probability of the generated token.
    pub logprob: f64,
    /// `KL(p ‖ q)` at this position.
    pub kl: f64,
}

/// Turns one row of policy logits into `scale · ∂L/∂z` in place (see the
/// module's formula) and returns the position's log-probability and KL.
pub fn policy_kl_backward<T: Float>(logits: &mut [T], reference: &[T], action: usize, advantage: f64, beta: f64, scale: f64) -> PolicyStep {
    let log_p = log_softmax(logits);
    let log_q = log_softmax(reference);
    let kl: f64 = log_p.iter().zip(&log_q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum();
    for (k, z) in logits.iter_mut().enumerate() {
        let p = log_p[k].exp();
        let onehot = if k == action { 1.0 } else { 0.0 };
        let grad = -advantage * (onehot - p) + beta * p * (log_p[k] - log_q[k] - kl);
        *z = T::from_f64(scale * grad);
    }
    PolicyStep {
        logprob: log_p[action],
        kl,
    }
}

/// Log-softmax of one row in f64 (post-training rows are few; precision over speed).
pub fn log_softmax<T: Float>(row: &[T]) -> Vec<f64> {
    let max = row.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
    let log_sum = row.iter().map(|v| (v.to_f64() - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|v| v.to_f64() - log_sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, fd, randn};

    #[test]
    fn pairwise_gradient_matches_finite_differences_and_is_stable() {
        for (c, r) in [(0.3, -1.2), (-2.0, 5.0), (40.0, -40.0), (-40.0, 40.0)] {
            let (loss, d_chosen) = pairwise_loss(c, r);
            assert!(loss.is_finite() && loss >= 0.0);
            let mut x = [c, r];
            let numeric_c = fd(&mut x, 0, &mut |x| pairwise_loss(x[0], x[1]).0);
            let numeric_r = fd(&mut x, 1, &mut |x| pairwise_loss(x[0], x[1]).0);
            assert_close(d_chosen, numeric_c, "dL/dr_c");
            assert_close(-d_chosen, numeric_r, "dL/dr_r");
        }
        // Equal scores: log 2; a wide right margin: almost no loss.
        assert!((pairwise_loss(1.0, 1.0).0 - 2f64.ln()).abs() < 1e-12);
        assert!(pairwise_loss(40.0, -40.0).0 < 1e-30);
        assert!((pairwise_loss(-40.0, 40.0).0 - 80.0).abs() < 1e-9);
    }

    #[test]
    fn policy_kl_gradient_matches_finite_differences() {
        let vocab = 7;
        let z = randn(vocab, 3);
        let y = randn(vocab, 4);
        let (action, advantage, beta, scale) = (2, 0.7, 0.3, 0.5);
        let loss = |z: &[f64]| {
            let lp = log_softmax(z);
            let lq = log_softmax(&y);
            let kl: f64 = lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum();
            scale * (-advantage * lp[action] + beta * kl)
        };
        let mut grad = z.clone();
        let step = policy_kl_backward(&mut grad, &y, action, advantage, beta, scale);
        assert!((step.logprob - log_softmax(&z)[action]).abs() < 1e-12);
        assert!(step.kl > 0.0);
        let mut x = z.clone();
        for k in 0..vocab {
            assert_close(grad[k], fd(&mut x, k, &mut |x| loss(x)), "dL/dz");
        }
        // Identical policy and reference: no KL and no KL gradient.
        let mut same = z.clone();
        let step = policy_kl_backward(&mut same, &z, action, 0.0, 1.0, 1.0);
        assert!(step.kl.abs() < 1e-12);
        assert!(same.iter().all(|g| g.abs() < 1e-12));
    }
}

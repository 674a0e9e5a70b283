//! Every path this CPU supports against the portable one: bit for bit where
//! the arithmetic is the same, within rounding where the portable path lacks
//! FMA, and all of them against an f64 reference. (Paths the CPU lacks are
//! skipped; `KernelPath::supported` says which ran.)

use super::*;
use crate::quant::{quantize_q8_0, Q8_0_BLOCK};
use ferrogpt_rng::Xoshiro256StarStar;

/// Runs `$body` once per supported path with `$isa` bound to its token.
macro_rules! each_isa {
    (|$isa:ident| $body:block) => {{
        {
            let $isa = Portable(());
            $body
        }
        #[cfg(target_arch = "x86_64")]
        {
            if KernelPath::Avx2.is_supported() {
                // SAFETY: checked just above.
                let $isa = unsafe { Avx2::proven() };
                $body
            }
            if KernelPath::Avx512.is_supported() {
                // SAFETY: checked just above.
                let $isa = unsafe { Avx512::proven() };
                $body
            }
        }
    }};
}

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Xoshiro256StarStar::new(seed);
    (0..n).map(|_| r.normal() as f32).collect()
}

/// Lengths around the 16-lane and 32-block boundaries, and the reference
/// model's widths.
const LENGTHS: [usize; 10] = [0, 1, 15, 16, 17, 33, 64, 256, 688, 691];

/// How far a dot product computed with two roundings per step (no FMA) may
/// stray from the fused one: each step's product rounding, `2^-24` of each
/// term, plus the sums' differing roundings, bounded by `n·2^-23·Σ|wᵢxᵢ|`.
fn unfused_tolerance(terms: impl Iterator<Item = f64>, n: usize) -> f64 {
    let magnitude: f64 = terms.map(f64::abs).sum();
    (n as f64 + 2.0) * 2f64.powi(-23) * magnitude + 1e-30
}

fn same_or_close(path: &str, got: f32, want: f32, tol: f64, what: &str) {
    if Portable::FUSED {
        assert_eq!(got.to_bits(), want.to_bits(), "{path} {what}: {got} vs portable {want}");
    } else {
        assert!(
            ((got - want) as f64).abs() <= tol,
            "{path} {what}: {got} vs portable {want} (tolerance {tol:e})"
        );
    }
}

#[test]
fn f32_and_f16_dot_products_match_the_portable_path_and_f64() {
    for n in LENGTHS {
        let x = randn(n, 1);
        let rows: Vec<Vec<f32>> = (0..4).map(|j| randn(n + 3, 10 + j)).collect();
        let halves: Vec<Vec<F16>> = rows.iter().map(|r| r.iter().map(|&v| F16::from_f32(v)).collect()).collect();
        let widened: Vec<Vec<f32>> = halves.iter().map(|r| r.iter().map(|h| h.to_f32()).collect()).collect();
        let block: [&[f32]; 4] = std::array::from_fn(|j| rows[j].as_slice());
        let half_block: [&[F16]; 4] = std::array::from_fn(|j| halves[j].as_slice());
        let wide_block: [&[f32]; 4] = std::array::from_fn(|j| widened[j].as_slice());
        let portable = Portable(()).dot_rows_f32(&block, &x);
        let portable_f16 = Portable(()).dot_rows_f16(&half_block, &x);
        each_isa!(|isa| {
            let name = std::any::type_name_of_val(&isa);
            let four = isa.dot_rows_f32(&block, &x);
            let four_f16 = isa.dot_rows_f16(&half_block, &x);
            // f16 rows give exactly what their widened values give.
            assert_eq!(four_f16, isa.dot_rows_f32(&wide_block, &x), "{name} n={n}");
            for j in 0..4 {
                // One row at a time gives the same as four at once.
                assert_eq!(isa.dot_rows_f32(&[block[j]], &x)[0].to_bits(), four[j].to_bits(), "{name} n={n}");
                assert_eq!(isa.dot_rows_f16(&[half_block[j]], &x)[0].to_bits(), four_f16[j].to_bits());
                let terms = || rows[j][..n].iter().zip(&x).map(|(&w, &v)| w as f64 * v as f64);
                let tol = unfused_tolerance(terms(), n);
                same_or_close(name, four[j], portable[j], tol, &format!("f32 n={n} row {j}"));
                same_or_close(name, four_f16[j], portable_f16[j], tol, &format!("f16 n={n} row {j}"));
                let exact: f64 = terms().sum();
                assert!(
                    ((four[j] as f64) - exact).abs() <= tol,
                    "{name} n={n}: {} vs exact {exact}",
                    four[j]
                );
            }
        });
    }
}

#[test]
fn q8_dot_products_are_exact_integer_sums_scaled_per_block() {
    for blocks in [0, 1, 2, 3, 8, 21] {
        let n = blocks * Q8_0_BLOCK;
        let x = quantize_q8_0(&randn(n, 3)).unwrap();
        let mut rows: Vec<Vec<BlockQ8_0>> = (0..4).map(|j| quantize_q8_0(&randn(n, 20 + j)).unwrap()).collect();
        // The extremes the kernels must not saturate on: -128 (possible in
        // foreign q8_0 files) against ±127 activations.
        if blocks > 0 {
            rows[0][0].qs = [-128; Q8_0_BLOCK];
            rows[1][0].qs = [127; Q8_0_BLOCK];
        }
        let block: [&[BlockQ8_0]; 4] = std::array::from_fn(|j| rows[j].as_slice());
        let portable = Portable(()).dot_rows_q8(&block, &x);
        each_isa!(|isa| {
            let name = std::any::type_name_of_val(&isa);
            let four = isa.dot_rows_q8(&block, &x);
            for j in 0..4 {
                assert_eq!(isa.dot_rows_q8(&[block[j]], &x)[0].to_bits(), four[j].to_bits());
                // Per block: the integer sum is exact, so the reference is
                // Σ d_w·d_x·Σ q_w·q_x in f64.
                let terms = || {
                    rows[j].iter().zip(&x).map(|(w, v)| {
                        let dot: i32 = w.qs.iter().zip(&v.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
                        (w.d.to_f32() * v.d.to_f32()) as f64 * dot as f64
                    })
                };
                let tol = unfused_tolerance(terms(), 8 * blocks);
                same_or_close(name, four[j], portable[j], tol, &format!("q8 blocks={blocks} row {j}"));
                let exact: f64 = terms().sum();
                assert!(((four[j] as f64) - exact).abs() <= tol, "{name}: {} vs exact {exact}", four[j]);
            }
        });
    }
}

#[test]
fn f16_axpy_is_bit_identical_on_every_path() {
    for n in LENGTHS {
        let v: Vec<F16> = randn(n, 5).iter().map(|&x| F16::from_f32(x)).collect();
        let start = randn(n, 6);
        let mut want = start.clone();
        portable::axpy_f16(&mut want, 0.37, &v);
        each_isa!(|isa| {
            let mut got = start.clone();
            isa.axpy_f16(&mut got, 0.37, &v);
            assert_eq!(got, want, "n={n}");
        });
    }
}

#[test]
fn paths_parse_and_report_support() {
    assert_eq!("AVX2".parse::<KernelPath>().unwrap(), KernelPath::Avx2);
    assert!("sse".parse::<KernelPath>().is_err());
    assert!(KernelPath::Portable.is_supported());
    assert!(KernelPath::best().is_supported());
    assert!(Kernels::new(KernelPath::Portable).is_ok());
    for p in KernelPath::ALL {
        assert_eq!(Kernels::new(p).is_ok(), p.is_supported(), "{p}");
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(KernelPath::supported(), vec![KernelPath::Portable]);
}

/// Every kernel [`Kernels`] value this CPU supports, for tests of the
/// multiversioned kernels elsewhere in the crate.
pub(crate) fn all_kernels() -> Vec<Kernels> {
    KernelPath::supported().into_iter().filter_map(|p| Kernels::new(p).ok()).collect()
}

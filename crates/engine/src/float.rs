//! The scalar type the kernels are generic over. Training and inference run in
//! `f32`; the gradient checks instantiate the very same kernels in `f64` so that
//! finite differences are accurate to ~1e-8 instead of ~1e-3. The trait's
//! `dot_rows*` methods are where f32 reaches the explicit SIMD kernels of
//! [`crate::simd`]; other types take the portable ones.

use crate::quant::F16;
use crate::simd::{portable, Isa};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + Default
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    const INFINITY: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// exp(x); for f32 a branch-free polynomial that auto-vectorises (rel. error < 2e-7).
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, other: Self) -> Self;
    /// `self·a + b` in one rounding. Kernels call it through
    /// [`crate::simd::fmadd`], which falls back to two roundings on targets
    /// without FMA instead of a libm call.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;

    /// `B` dot products of rows (each at least `x.len()` long) with `x`, the
    /// inner loop of decoding's matrix-vector products: the canonical result
    /// of [`crate::simd`] for each row, whatever `B` and the row's neighbours.
    /// f32 runs the path's explicit SIMD kernel; other types the portable one.
    #[inline(always)]
    fn dot_rows<I: Isa, const B: usize>(isa: I, rows: &[&[Self]; B], x: &[Self]) -> [Self; B] {
        portable::dot_rows(isa, rows, x)
    }
    /// As [`Float::dot_rows`], with f16 rows (weights or cached keys).
    #[inline(always)]
    fn dot_rows_f16<I: Isa, const B: usize>(isa: I, rows: &[&[F16]; B], x: &[Self]) -> [Self; B] {
        portable::dot_rows_f16(isa, rows, x)
    }
    /// `out[i] += a · v[i]` over f16 values (cached values in attention).
    #[inline(always)]
    fn axpy_f16<I: Isa>(isa: I, out: &mut [Self], a: Self, v: &[F16]) {
        let _ = isa;
        portable::axpy_f16(out, a, v)
    }
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const INFINITY: Self = f32::INFINITY;
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp(self) -> Self {
        fast_exp(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f32::ln(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn dot_rows<I: Isa, const B: usize>(isa: I, rows: &[&[Self]; B], x: &[Self]) -> [Self; B] {
        isa.dot_rows_f32(rows, x)
    }
    #[inline(always)]
    fn dot_rows_f16<I: Isa, const B: usize>(isa: I, rows: &[&[F16]; B], x: &[Self]) -> [Self; B] {
        isa.dot_rows_f16(rows, x)
    }
    #[inline(always)]
    fn axpy_f16<I: Isa>(isa: I, out: &mut [Self], a: Self, v: &[F16]) {
        isa.axpy_f16(out, a, v)
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const INFINITY: Self = f64::INFINITY;
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f64::ln(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }
}

/// e^x = 2^n · e^r with n = round(x·log2 e) and |r| <= ln2/2; e^r by a degree-6
/// polynomial (Cephes coefficients), 2^n assembled in the exponent bits.
/// Inputs below -87.3 give 0 (exactly, so masked scores vanish) and above 88.7 saturate.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let underflow = x < -87.336_54;
    let xc = x.clamp(-87.336_54, 88.722_83);
    // Round to nearest with the 1.5·2²³ trick: `f32::round` is a libm call
    // that would stop the loop around us from vectorising.
    const MAGIC: f32 = 12_582_912.0;
    let n = (xc * LOG2E + MAGIC) - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n is in [-126, 128]; build 2^n through two halves so 2^128 cannot overflow the exponent field.
    let ni = n as i32;
    let half = ni >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = er * scale_a * scale_b;
    if underflow {
        0.0
    } else {
        y
    }
}

/// `v[i] = exp(v[i] − shift)` for every element, returning the sum. Sums in
/// 16 independent lanes so both the exp and the reduction vectorise.
#[inline(always)]
pub fn exp_shifted_sum<T: Float>(v: &mut [T], shift: T) -> T {
    const L: usize = 16;
    let mut acc = [T::ZERO; L];
    let (chunks, tail) = v.as_chunks_mut::<L>();
    for c in chunks {
        for i in 0..L {
            c[i] = (c[i] - shift).exp();
            acc[i] += c[i];
        }
    }
    let mut rest = T::ZERO;
    for x in tail {
        *x = (*x - shift).exp();
        rest += *x;
    }
    acc.iter().fold(rest, |s, &a| s + a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = fast_exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-100.0), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn exp_shifted_sum_matches_a_plain_loop() {
        let mut v: Vec<f64> = (0..37).map(|i| i as f64 * 0.1).collect();
        let want: f64 = v.iter().map(|x| (x - 2.0).exp()).sum();
        let got = exp_shifted_sum(&mut v, 2.0);
        assert!((got - want).abs() < 1e-12);
        assert!((v[5] - (0.5f64 - 2.0).exp()).abs() < 1e-15);
    }
}

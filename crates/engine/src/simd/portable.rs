//! The canonical kernels in plain Rust, generic over the float type: the
//! portable path runs them, the gradient checks run them in f64, and the
//! explicit-SIMD paths compute exactly what they define (see the module doc
//! of `simd`).

use super::{fmadd, Isa};
use crate::float::Float;
use crate::quant::{BlockQ8_0, F16, Q8_0_BLOCK};

/// Lanes of a dot product's accumulator: one AVX-512 register, two AVX2 ones.
pub const LANES: usize = 16;

/// `((a[i] + a[i+8]) + (… + a[i+4])) …`: halves folded onto each other, the
/// order the SIMD paths reduce their registers in.
#[inline(always)]
pub fn reduce16<T: Float>(a: [T; 16]) -> T {
    reduce8(std::array::from_fn(|i| a[i] + a[i + 8]))
}

#[inline(always)]
pub fn reduce8<T: Float>(b: [T; 8]) -> T {
    let c: [T; 4] = std::array::from_fn(|i| b[i] + b[i + 4]);
    let d = [c[0] + c[2], c[1] + c[3]];
    d[0] + d[1]
}

/// `B` dot products of rows with `x`: lane `i` accumulates elements `i`,
/// `i+16`, … with [`fmadd`], the lanes are reduced by [`reduce16`], then the
/// tail (`x.len() % 16` elements) is added in order.
#[inline(always)]
pub fn dot_rows<I: Isa, T: Float, const B: usize>(isa: I, rows: &[&[T]; B], x: &[T]) -> [T; B] {
    dot_rows_by(isa, rows, x, |w| w)
}

/// [`dot_rows`] over f16 rows, each weight widened exactly before use.
#[inline(always)]
pub fn dot_rows_f16<I: Isa, T: Float, const B: usize>(isa: I, rows: &[&[F16]; B], x: &[T]) -> [T; B] {
    dot_rows_by(isa, rows, x, |w: F16| T::from_f32(w.to_f32()))
}

#[inline(always)]
fn dot_rows_by<I: Isa, T: Float, W: Copy, const B: usize>(isa: I, rows: &[&[W]; B], x: &[T], widen: impl Fn(W) -> T) -> [T; B] {
    let n = x.len();
    let (xc, xt) = x.as_chunks::<LANES>();
    let full = xc.len() * LANES;
    std::array::from_fn(|j| {
        let row = &rows[j][..n];
        let (rc, rt) = row.as_chunks::<LANES>();
        let mut acc = [T::ZERO; LANES];
        for (wv, xv) in rc.iter().zip(xc) {
            for i in 0..LANES {
                acc[i] = fmadd(isa, widen(wv[i]), xv[i], acc[i]);
            }
        }
        debug_assert_eq!(rt.len(), n - full);
        let mut s = reduce16(acc);
        for (&w, &xv) in rt.iter().zip(xt) {
            s = fmadd(isa, widen(w), xv, s);
        }
        s
    })
}

/// `B` q8_0 dot products with a quantized `x`. Per block, lane `k` holds the
/// exact integer sum of products `4k..4k+4` (what AVX2's `maddubs` + `madd`
/// leave), which is scaled by `d_w·d_x` and accumulated with [`fmadd`] into
/// one of two 8-lane accumulators, even blocks in one and odd in the other;
/// the sum of the two is reduced by [`reduce8`].
#[inline(always)]
pub fn dot_rows_q8<I: Isa, const B: usize>(isa: I, rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B] {
    std::array::from_fn(|j| {
        let mut acc = [[0.0f32; 8]; 2];
        for (b, (wb, xb)) in rows[j].iter().zip(x).enumerate() {
            let scale = wb.d.to_f32() * xb.d.to_f32();
            let sums = block_lane_sums(&wb.qs, &xb.qs);
            let a = &mut acc[b % 2];
            for k in 0..8 {
                a[k] = fmadd(isa, scale, sums[k] as f32, a[k]);
            }
        }
        reduce8(std::array::from_fn(|k| acc[0][k] + acc[1][k]))
    })
}

#[inline(always)]
fn block_lane_sums(w: &[i8; Q8_0_BLOCK], x: &[i8; Q8_0_BLOCK]) -> [i32; 8] {
    let mut products = [0i32; Q8_0_BLOCK];
    for i in 0..Q8_0_BLOCK {
        products[i] = w[i] as i32 * x[i] as i32;
    }
    std::array::from_fn(|k| products[4 * k] + products[4 * k + 1] + products[4 * k + 2] + products[4 * k + 3])
}

/// `out[i] += a · v[i]`, rounded twice (as [`axpy`]).
#[inline(always)]
pub fn axpy_f16<T: Float>(out: &mut [T], a: T, v: &[F16]) {
    for (o, &h) in out.iter_mut().zip(v) {
        *o += a * T::from_f32(h.to_f32());
    }
}

/// `out[i] += a · v[i]`.
#[inline(always)]
pub fn axpy<T: Float>(out: &mut [T], a: T, v: &[T]) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o += a * x;
    }
}

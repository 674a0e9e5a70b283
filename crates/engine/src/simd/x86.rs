//! The AVX2 and AVX-512 paths' explicit kernels. Each computes exactly the
//! canonical result of its `portable` counterpart with FMA (same lanes, same
//! reduction order); the tests in `simd::tests` hold them to it.

use super::{portable, sealed, Isa};
use crate::quant::{BlockQ8_0, F16, Q8_0_BLOCK};
use std::arch::x86_64::*;

/// Token of the AVX2 + FMA + F16C path.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

/// Token of the AVX-512 (F + BW) path, which includes AVX2 + FMA + F16C.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx2 {
    /// # Safety
    /// The CPU must support [`super::KernelPath::Avx2`].
    #[inline(always)]
    pub(crate) unsafe fn proven() -> Self {
        Avx2(())
    }
}

impl Avx512 {
    /// # Safety
    /// The CPU must support [`super::KernelPath::Avx512`].
    #[inline(always)]
    pub(crate) unsafe fn proven() -> Self {
        Avx512(())
    }
}

impl sealed::Sealed for Avx2 {}
impl sealed::Sealed for Avx512 {}

impl Isa for Avx2 {
    const FUSED: bool = true;
    #[inline(always)]
    fn dot_rows_f32<const B: usize>(self, rows: &[&[f32]; B], x: &[f32]) -> [f32; B] {
        check_rows(rows, x.len());
        // SAFETY: the token proves AVX2 + FMA + F16C; lengths checked above.
        unsafe { dot_rows_f32_avx2(rows, x) }
    }
    #[inline(always)]
    fn dot_rows_f16<const B: usize>(self, rows: &[&[F16]; B], x: &[f32]) -> [f32; B] {
        check_rows(rows, x.len());
        // SAFETY: as above.
        unsafe { dot_rows_f16_avx2(rows, x) }
    }
    #[inline(always)]
    fn dot_rows_q8<const B: usize>(self, rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B] {
        check_rows(rows, x.len());
        // SAFETY: as above.
        unsafe { dot_rows_q8_avx2(rows, x) }
    }
    #[inline(always)]
    fn axpy_f16(self, out: &mut [f32], a: f32, v: &[F16]) {
        // SAFETY: as above; the kernel bounds itself by the shorter slice.
        unsafe { axpy_f16_avx2(out, a, v) }
    }
}

impl Isa for Avx512 {
    const FUSED: bool = true;
    #[inline(always)]
    fn dot_rows_f32<const B: usize>(self, rows: &[&[f32]; B], x: &[f32]) -> [f32; B] {
        check_rows(rows, x.len());
        // SAFETY: the token proves AVX-512 F + BW (and AVX2 + FMA + F16C).
        unsafe { dot_rows_f32_avx512(rows, x) }
    }
    #[inline(always)]
    fn dot_rows_f16<const B: usize>(self, rows: &[&[F16]; B], x: &[f32]) -> [f32; B] {
        check_rows(rows, x.len());
        // SAFETY: as above.
        unsafe { dot_rows_f16_avx512(rows, x) }
    }
    #[inline(always)]
    fn dot_rows_q8<const B: usize>(self, rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B] {
        check_rows(rows, x.len());
        // SAFETY: as above.
        unsafe { dot_rows_q8_avx512(rows, x) }
    }
    #[inline(always)]
    fn axpy_f16(self, out: &mut [f32], a: f32, v: &[F16]) {
        // SAFETY: AVX-512 implies the AVX2 + F16C this kernel needs.
        unsafe { axpy_f16_avx2(out, a, v) }
    }
}

/// The kernels read `n` elements of every row.
#[inline(always)]
fn check_rows<W, const B: usize>(rows: &[&[W]; B], n: usize) {
    assert!(rows.iter().all(|r| r.len() >= n), "dot product rows shorter than the vector");
}

/// Reduces the 16 lanes held as `lo` (0..8) and `hi` (8..16) in the canonical order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce_2x8(lo: __m256, hi: __m256) -> f32 {
    reduce_8(_mm256_add_ps(lo, hi))
}

/// Reduces 8 lanes as `portable::reduce8`: `b[i] + b[i+4]`, then `+2`, then `+1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce_8(b: __m256) -> f32 {
    let c = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps::<1>(b));
    let d = _mm_add_ps(c, _mm_movehl_ps(c, c));
    let e = _mm_add_ss(d, _mm_shuffle_ps::<1>(d, d));
    _mm_cvtss_f32(e)
}

/// One f16 → f32 with F16C (exact, as `F16::to_f32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_scalar(h: F16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.0 as i32)))
}

/// # Safety
/// Every row holds at least `x.len()` elements.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_f32_avx2<const B: usize>(rows: &[&[f32]; B], x: &[f32]) -> [f32; B] {
    let n = x.len();
    let full = n / portable::LANES * portable::LANES;
    let mut lo = [_mm256_setzero_ps(); B];
    let mut hi = [_mm256_setzero_ps(); B];
    let mut c = 0;
    while c < full {
        let x0 = _mm256_loadu_ps(x.as_ptr().add(c));
        let x1 = _mm256_loadu_ps(x.as_ptr().add(c + 8));
        for j in 0..B {
            let w = rows[j].as_ptr().add(c);
            lo[j] = _mm256_fmadd_ps(_mm256_loadu_ps(w), x0, lo[j]);
            hi[j] = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(8)), x1, hi[j]);
        }
        c += portable::LANES;
    }
    let mut out = [0.0f32; B];
    for j in 0..B {
        let mut s = reduce_2x8(lo[j], hi[j]);
        for k in full..n {
            s = rows[j][k].mul_add(x[k], s);
        }
        out[j] = s;
    }
    out
}

/// # Safety
/// Every row holds at least `x.len()` elements.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_f16_avx2<const B: usize>(rows: &[&[F16]; B], x: &[f32]) -> [f32; B] {
    let n = x.len();
    let full = n / portable::LANES * portable::LANES;
    let mut lo = [_mm256_setzero_ps(); B];
    let mut hi = [_mm256_setzero_ps(); B];
    let mut c = 0;
    while c < full {
        let x0 = _mm256_loadu_ps(x.as_ptr().add(c));
        let x1 = _mm256_loadu_ps(x.as_ptr().add(c + 8));
        for j in 0..B {
            let w = rows[j].as_ptr().add(c) as *const __m128i;
            lo[j] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(w)), x0, lo[j]);
            hi[j] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(w.add(1))), x1, hi[j]);
        }
        c += portable::LANES;
    }
    let mut out = [0.0f32; B];
    for j in 0..B {
        let mut s = reduce_2x8(lo[j], hi[j]);
        for k in full..n {
            s = f16_scalar(rows[j][k]).mul_add(x[k], s);
        }
        out[j] = s;
    }
    out
}

/// The 8 lane sums of one q8_0 block pair's products (see `portable::dot_rows_q8`):
/// `maddubs(|w|, x·sign(w))` pairs, then `madd` with ones sums pairs of pairs.
/// No saturation: |w| <= 128 and |x| <= 127 give pair sums within ±32512.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_sums_avx2(w: __m256i, x: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// # Safety
/// Every row holds at least `x.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows_q8_avx2<const B: usize>(rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B] {
    let nb = x.len();
    let mut even = [_mm256_setzero_ps(); B];
    let mut odd = [_mm256_setzero_ps(); B];
    let load = |b: &BlockQ8_0| _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
    let mut b = 0;
    while b + 1 < nb {
        let (x0, x1) = (&x[b], &x[b + 1]);
        let (xq0, xq1) = (load(x0), load(x1));
        let (xd0, xd1) = (f16_scalar(x0.d), f16_scalar(x1.d));
        for j in 0..B {
            let (w0, w1) = (rows[j].get_unchecked(b), rows[j].get_unchecked(b + 1));
            let s0 = _mm256_set1_ps(f16_scalar(w0.d) * xd0);
            even[j] = _mm256_fmadd_ps(s0, block_sums_avx2(load(w0), xq0), even[j]);
            let s1 = _mm256_set1_ps(f16_scalar(w1.d) * xd1);
            odd[j] = _mm256_fmadd_ps(s1, block_sums_avx2(load(w1), xq1), odd[j]);
        }
        b += 2;
    }
    if b < nb {
        let xb = &x[b];
        let (xq, xd) = (load(xb), f16_scalar(xb.d));
        for j in 0..B {
            let wb = rows[j].get_unchecked(b);
            let s = _mm256_set1_ps(f16_scalar(wb.d) * xd);
            even[j] = _mm256_fmadd_ps(s, block_sums_avx2(load(wb), xq), even[j]);
        }
    }
    let mut out = [0.0f32; B];
    for j in 0..B {
        out[j] = reduce_8(_mm256_add_ps(even[j], odd[j]));
    }
    out
}

/// `out[i] += a · v[i]` for the common length, rounded twice.
#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_f16_avx2(out: &mut [f32], a: f32, v: &[F16]) {
    let n = out.len().min(v.len());
    let (out, v) = (&mut out[..n], &v[..n]);
    let av = _mm256_set1_ps(a);
    let (oc, ot) = out.as_chunks_mut::<8>();
    let (vc, vt) = v.as_chunks::<8>();
    for (o, h) in oc.iter_mut().zip(vc) {
        // SAFETY: `o` is 8 f32 and `h` 8 f16 (16 bytes); unaligned access is allowed.
        unsafe {
            let wide = _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i));
            let sum = _mm256_add_ps(_mm256_loadu_ps(o.as_ptr()), _mm256_mul_ps(av, wide));
            _mm256_storeu_ps(o.as_mut_ptr(), sum);
        }
    }
    for (o, &h) in ot.iter_mut().zip(vt) {
        *o += a * f16_scalar(h);
    }
}

/// Reduces the 16 lanes of `acc` in the canonical order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn reduce_16(acc: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(acc);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    reduce_2x8(lo, hi)
}

/// # Safety
/// Every row holds at least `x.len()` elements.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn dot_rows_f32_avx512<const B: usize>(rows: &[&[f32]; B], x: &[f32]) -> [f32; B] {
    let n = x.len();
    let full = n / portable::LANES * portable::LANES;
    let mut acc = [_mm512_setzero_ps(); B];
    let mut c = 0;
    while c < full {
        let xv = _mm512_loadu_ps(x.as_ptr().add(c));
        for j in 0..B {
            acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(rows[j].as_ptr().add(c)), xv, acc[j]);
        }
        c += portable::LANES;
    }
    let mut out = [0.0f32; B];
    for j in 0..B {
        let mut s = reduce_16(acc[j]);
        for k in full..n {
            s = rows[j][k].mul_add(x[k], s);
        }
        out[j] = s;
    }
    out
}

/// # Safety
/// Every row holds at least `x.len()` elements.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn dot_rows_f16_avx512<const B: usize>(rows: &[&[F16]; B], x: &[f32]) -> [f32; B] {
    let n = x.len();
    let full = n / portable::LANES * portable::LANES;
    let mut acc = [_mm512_setzero_ps(); B];
    let mut c = 0;
    while c < full {
        let xv = _mm512_loadu_ps(x.as_ptr().add(c));
        for j in 0..B {
            let w = _mm256_loadu_si256(rows[j].as_ptr().add(c) as *const __m256i);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtph_ps(w), xv, acc[j]);
        }
        c += portable::LANES;
    }
    let mut out = [0.0f32; B];
    for j in 0..B {
        let mut s = reduce_16(acc[j]);
        for k in full..n {
            s = f16_scalar(rows[j][k]).mul_add(x[k], s);
        }
        out[j] = s;
    }
    out
}

/// Two consecutive blocks' 64 weights in one register: block `b` in the low
/// half, `b + 1` in the high half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn load_pair(b0: &BlockQ8_0, b1: &BlockQ8_0) -> __m512i {
    // SAFETY: each `qs` is 32 bytes; unaligned loads are allowed.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_si256(b0.qs.as_ptr() as *const __m256i),
            _mm256_loadu_si256(b1.qs.as_ptr() as *const __m256i),
        )
    };
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// A register whose low 8 lanes are `a` and high 8 lanes `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn halves(a: f32, b: f32) -> __m512 {
    let lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(a)));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(_mm256_set1_ps(b))))
}

/// # Safety
/// Every row holds at least `x.len()` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn dot_rows_q8_avx512<const B: usize>(rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B] {
    let nb = x.len();
    // Low half accumulates the even blocks, high half the odd ones.
    let mut acc = [_mm512_setzero_ps(); B];
    let ones = _mm512_set1_epi16(1);
    let mut b = 0;
    while b + 1 < nb {
        let (x0, x1) = (&x[b], &x[b + 1]);
        let xq = load_pair(x0, x1);
        let (xd0, xd1) = (f16_scalar(x0.d), f16_scalar(x1.d));
        for j in 0..B {
            let (w0, w1) = (rows[j].get_unchecked(b), rows[j].get_unchecked(b + 1));
            let wq = load_pair(w0, w1);
            // x with the sign of w (negated where w < 0), against |w|.
            let negative = _mm512_movepi8_mask(wq);
            let signed_x = _mm512_mask_sub_epi8(xq, negative, _mm512_setzero_si512(), xq);
            let pairs = _mm512_maddubs_epi16(_mm512_abs_epi8(wq), signed_x);
            let sums = _mm512_cvtepi32_ps(_mm512_madd_epi16(pairs, ones));
            let scale = halves(f16_scalar(w0.d) * xd0, f16_scalar(w1.d) * xd1);
            acc[j] = _mm512_fmadd_ps(scale, sums, acc[j]);
        }
        b += 2;
    }
    let mut out = [0.0f32; B];
    for j in 0..B {
        let mut even = _mm512_castps512_ps256(acc[j]);
        let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[j])));
        if b < nb {
            let (xb, wb) = (&x[b], rows[j].get_unchecked(b));
            let load = |q: &BlockQ8_0| _mm256_loadu_si256(q.qs.as_ptr() as *const __m256i);
            let s = _mm256_set1_ps(f16_scalar(wb.d) * f16_scalar(xb.d));
            even = _mm256_fmadd_ps(s, block_sums_avx2(load(wb), load(xb)), even);
        }
        out[j] = reduce_8(_mm256_add_ps(even, odd));
    }
    out
}

const _: () = assert!(Q8_0_BLOCK == 32, "the q8_0 kernels load a block as one 256-bit register");

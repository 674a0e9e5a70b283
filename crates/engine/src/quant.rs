//! Compact weight formats for inference: IEEE half precision ([`F16`]) and
//! llama.cpp's `q8_0` ([`BlockQ8_0`]: 32 int8 weights sharing one f16 scale,
//! 34 bytes, the exact `block_q8_0` of ggml so GGUF files map onto it without
//! conversion), and [`PackedMatrix`], a weight matrix stored in one of them.
//!
//! Training always runs in f32; these formats only feed the inference
//! kernels, which widen the weights to f32 as they stream them.

use crate::float::Float;
use crate::EngineError;
use std::fmt;
use std::str::FromStr;

/// Storage type of inference weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    /// llama.cpp's 8-bit blocks; matrices whose rows are not a multiple of
    /// [`Q8_0_BLOCK`] fall back to f16, as llama.cpp's converter does.
    Q8_0,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::Q8_0];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Q8_0 => "q8_0",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        DType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| EngineError::Unsupported(format!("weight dtype `{s}` (f32, f16 and q8_0 are)")))
    }
}

/// An IEEE 754 binary16 value, by its bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct F16(pub u16);

impl F16 {
    /// Rounds to the nearest f16, ties to even; overflow gives ±infinity and
    /// NaN stays NaN.
    #[inline]
    pub fn from_f32(x: f32) -> F16 {
        let bits = x.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let abs = bits & 0x7fff_ffff;
        let half = if abs >= 0x4780_0000 {
            // |x| >= 65536 (beyond the largest finite f16 after rounding), inf or NaN.
            if abs > 0x7f80_0000 {
                0x7e00
            } else {
                0x7c00
            }
        } else if abs < 0x3880_0000 {
            // |x| < 2^-14: an f16 subnormal or zero. Adding 0.5 puts the f16
            // subnormal's bits at the bottom of the f32 mantissa, and the f32
            // addition rounds them to nearest even.
            let shifted = f32::from_bits(abs) + 0.5;
            (shifted.to_bits() - 0.5f32.to_bits()) as u16
        } else {
            // Normal: rebias the exponent, round the 13 dropped bits to
            // nearest even (a carry into the exponent is the correct result).
            let odd = (abs >> 13) & 1;
            let rebased = abs.wrapping_sub((127 - 15) << 23);
            ((rebased + 0xfff + odd) >> 13) as u16
        };
        F16(sign | half)
    }

    /// Exact widening.
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        let h = self.0 as u32;
        let sign = (h & 0x8000) << 16;
        let magnitude = h & 0x7fff;
        let bits = if magnitude >= 0x7c00 {
            0x7f80_0000 | ((magnitude & 0x3ff) << 13)
        } else {
            // Shifting puts exponent and mantissa in f32 position with a bias
            // 112 too small; multiplying by 2^112 fixes it exactly, subnormals
            // included.
            (f32::from_bits(magnitude << 13) * f32::from_bits((127 + 112) << 23)).to_bits()
        };
        f32::from_bits(bits | sign)
    }
}

/// Weights per [`BlockQ8_0`].
pub const Q8_0_BLOCK: usize = 32;

/// ggml's `block_q8_0`: weight `i` is `d · qs[i]`, with `d = max|w| / 127`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: F16,
    pub qs: [i8; Q8_0_BLOCK],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Rounds half away from zero, like C's `roundf` (what ggml's reference
/// quantizer uses), without a libm call so the loop around it vectorises.
/// Exact for |v| < 2^23.
#[inline(always)]
fn round_half_away(v: f32) -> i32 {
    let t = v as i32;
    let frac = v - t as f32;
    t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32
}

/// Quantizes one block of 32 values exactly as ggml's `quantize_row_q8_0_ref`.
#[inline(always)]
pub(crate) fn quantize_block(x: &[f32; Q8_0_BLOCK]) -> BlockQ8_0 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; Q8_0_BLOCK];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = round_half_away(v * id) as i8;
    }
    BlockQ8_0 { d: F16::from_f32(d), qs }
}

/// `dst[b]` = block `b` of `src`; `src.len()` must be `32 · dst.len()`.
#[inline(always)]
pub(crate) fn quantize_into(src: &[f32], dst: &mut [BlockQ8_0]) {
    let (blocks, _) = src.as_chunks::<Q8_0_BLOCK>();
    for (out, x) in dst.iter_mut().zip(blocks) {
        *out = quantize_block(x);
    }
}

/// Quantizes a row-major f32 tensor whose length is a multiple of 32.
pub fn quantize_q8_0(src: &[f32]) -> Result<Vec<BlockQ8_0>, EngineError> {
    if !src.len().is_multiple_of(Q8_0_BLOCK) {
        return Err(EngineError::Shape(format!(
            "q8_0 needs a multiple of {Q8_0_BLOCK} values, got {}",
            src.len()
        )));
    }
    let mut out = vec![BlockQ8_0::default(); src.len() / Q8_0_BLOCK];
    quantize_into(src, &mut out);
    Ok(out)
}

/// The f32 values the blocks stand for.
pub fn dequantize_q8_0(blocks: &[BlockQ8_0]) -> Vec<f32> {
    let mut out = vec![0.0; blocks.len() * Q8_0_BLOCK];
    dequantize_q8_0_into(blocks, &mut out);
    out
}

pub(crate) fn dequantize_q8_0_into(blocks: &[BlockQ8_0], out: &mut [f32]) {
    let (chunks, _) = out.as_chunks_mut::<Q8_0_BLOCK>();
    for (o, b) in chunks.iter_mut().zip(blocks) {
        let d = b.d.to_f32();
        for (v, &q) in o.iter_mut().zip(&b.qs) {
            *v = d * q as f32;
        }
    }
}

/// A weight matrix `[rows, cols]` (row-major, a row per output feature) in
/// one storage type; `T` is the engine's float type (f32 outside gradient
/// tests).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix<T = f32> {
    rows: usize,
    cols: usize,
    data: PackedData<T>,
}

/// The values of a [`PackedMatrix`].
#[derive(Clone, Debug, PartialEq)]
pub enum PackedData<T> {
    Full(Vec<T>),
    F16(Vec<F16>),
    /// `cols / 32` blocks per row.
    Q8_0(Vec<BlockQ8_0>),
}

/// A borrowed run of whole rows of a weight matrix, in its storage type.
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a, T> {
    Full(&'a [T]),
    F16(&'a [F16]),
    Q8_0(&'a [BlockQ8_0]),
}

impl<'a, T> WeightRef<'a, T> {
    pub fn dtype(&self) -> Option<DType> {
        match self {
            WeightRef::Full(_) => None,
            WeightRef::F16(_) => Some(DType::F16),
            WeightRef::Q8_0(_) => Some(DType::Q8_0),
        }
    }

    /// Rows `range` of a matrix with `cols` columns; `None` if they are not all there.
    pub fn rows(&self, range: std::ops::Range<usize>, cols: usize) -> Option<WeightRef<'a, T>> {
        let (start, end) = (range.start * cols, range.end * cols);
        Some(match *self {
            WeightRef::Full(w) => WeightRef::Full(w.get(start..end)?),
            WeightRef::F16(w) => WeightRef::F16(w.get(start..end)?),
            WeightRef::Q8_0(w) => WeightRef::Q8_0(w.get(start / Q8_0_BLOCK..end / Q8_0_BLOCK)?),
        })
    }

    /// Bytes of the values viewed.
    pub fn bytes(&self) -> usize {
        match self {
            WeightRef::Full(w) => std::mem::size_of_val(*w),
            WeightRef::F16(w) => std::mem::size_of_val(*w),
            WeightRef::Q8_0(w) => std::mem::size_of_val(*w),
        }
    }

    /// Whether it holds at least `rows` rows of `cols` columns.
    pub(crate) fn holds(&self, rows: usize, cols: usize) -> bool {
        match self {
            WeightRef::Full(w) => w.len() >= rows * cols,
            WeightRef::F16(w) => w.len() >= rows * cols,
            WeightRef::Q8_0(w) => cols.is_multiple_of(Q8_0_BLOCK) && w.len() >= rows * (cols / Q8_0_BLOCK),
        }
    }
}

impl<T: Float> WeightRef<'_, T> {
    /// Row `r` (of `out.len()` columns) widened into `out`.
    pub(crate) fn row_into(&self, r: usize, out: &mut [T]) {
        let cols = out.len();
        match *self {
            WeightRef::Full(w) => out.copy_from_slice(&w[r * cols..(r + 1) * cols]),
            WeightRef::F16(w) => {
                for (o, h) in out.iter_mut().zip(&w[r * cols..(r + 1) * cols]) {
                    *o = T::from_f32(h.to_f32());
                }
            }
            WeightRef::Q8_0(w) => {
                let per_row = cols / Q8_0_BLOCK;
                let (chunks, _) = out.as_chunks_mut::<Q8_0_BLOCK>();
                for (o, b) in chunks.iter_mut().zip(&w[r * per_row..(r + 1) * per_row]) {
                    let d = b.d.to_f32();
                    for (v, &q) in o.iter_mut().zip(&b.qs) {
                        *v = T::from_f32(d * q as f32);
                    }
                }
            }
        }
    }
}

impl<T: Float> PackedMatrix<T> {
    /// Packs `values` (`rows · cols`, row-major) as `dtype`. q8_0 needs rows
    /// that are a multiple of 32 long; other shapes are stored in f16 (see
    /// [`DType::Q8_0`]).
    pub fn pack(rows: usize, cols: usize, values: &[T], dtype: DType) -> Result<Self, EngineError> {
        if values.len() != rows * cols {
            return Err(EngineError::Shape(format!("{} values for a {rows}x{cols} matrix", values.len())));
        }
        let data = match dtype {
            DType::F32 => PackedData::Full(values.to_vec()),
            DType::Q8_0 if cols.is_multiple_of(Q8_0_BLOCK) => {
                let mut blocks = vec![BlockQ8_0::default(); values.len() / Q8_0_BLOCK];
                let mut buf = [0.0f32; Q8_0_BLOCK];
                for (b, chunk) in blocks.iter_mut().zip(values.chunks_exact(Q8_0_BLOCK)) {
                    for (o, &v) in buf.iter_mut().zip(chunk) {
                        *o = v.to_f32();
                    }
                    *b = quantize_block(&buf);
                }
                PackedData::Q8_0(blocks)
            }
            DType::F16 | DType::Q8_0 => PackedData::F16(values.iter().map(|v| F16::from_f32(v.to_f32())).collect()),
        };
        Ok(PackedMatrix {
            rows,
            cols,
            data: data.into_huge_pages(),
        })
    }

    /// Wraps already packed values (e.g. read from a GGUF file), checking their count.
    pub fn from_data(rows: usize, cols: usize, data: PackedData<T>) -> Result<Self, EngineError> {
        let matrix = PackedMatrix { rows, cols, data };
        let fits = match &matrix.data {
            PackedData::Full(v) => v.len() == rows * cols,
            PackedData::F16(v) => v.len() == rows * cols,
            PackedData::Q8_0(v) => cols.is_multiple_of(Q8_0_BLOCK) && v.len() * Q8_0_BLOCK == rows * cols,
        };
        if !fits {
            return Err(EngineError::Shape(format!(
                "{:?} data of the wrong size for a {rows}x{cols} matrix{}",
                matrix.dtype(),
                if cols.is_multiple_of(Q8_0_BLOCK) {
                    ""
                } else {
                    " (q8_0 rows must be a multiple of 32 long)"
                }
            )));
        }
        Ok(PackedMatrix {
            data: matrix.data.into_huge_pages(),
            ..matrix
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn data(&self) -> &PackedData<T> {
        &self.data
    }

    /// The storage type (`F32` stands for the engine's float type).
    pub fn dtype(&self) -> DType {
        match self.data {
            PackedData::Full(_) => DType::F32,
            PackedData::F16(_) => DType::F16,
            PackedData::Q8_0(_) => DType::Q8_0,
        }
    }

    /// Bytes the values occupy.
    pub fn bytes(&self) -> usize {
        match &self.data {
            PackedData::Full(v) => std::mem::size_of_val(v.as_slice()),
            PackedData::F16(v) => std::mem::size_of_val(v.as_slice()),
            PackedData::Q8_0(v) => std::mem::size_of_val(v.as_slice()),
        }
    }

    pub fn view(&self) -> WeightRef<'_, T> {
        match &self.data {
            PackedData::Full(v) => WeightRef::Full(v),
            PackedData::F16(v) => WeightRef::F16(v),
            PackedData::Q8_0(v) => WeightRef::Q8_0(v),
        }
    }

    /// All values widened to `T`, row-major.
    pub fn to_full(&self) -> Vec<T> {
        let mut out = vec![T::ZERO; self.rows * self.cols];
        let view = self.view();
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            view.row_into(r, row);
        }
        out
    }
}

impl<T: Copy> PackedData<T> {
    /// Big buffers move to huge pages: decoding streams them every token (see `huge`).
    fn into_huge_pages(self) -> Self {
        use crate::huge::copy_to_huge_pages;
        match self {
            PackedData::Full(v) => PackedData::Full(copy_to_huge_pages(v)),
            PackedData::F16(v) => PackedData::F16(copy_to_huge_pages(v)),
            PackedData::Q8_0(v) => PackedData::Q8_0(copy_to_huge_pages(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogpt_rng::Xoshiro256StarStar;

    #[test]
    fn f16_conversion_matches_ieee_rounding() {
        assert_eq!(F16::from_f32(1.0), F16(0x3c00));
        assert_eq!(F16::from_f32(-2.0), F16(0xc000));
        assert_eq!(F16::from_f32(65504.0), F16(0x7bff));
        assert_eq!(F16::from_f32(65520.0), F16(0x7c00), "rounds up to infinity");
        assert_eq!(F16::from_f32(65519.0), F16(0x7bff));
        assert_eq!(F16::from_f32(f32::INFINITY), F16(0x7c00));
        assert_eq!(F16::from_f32(f32::NEG_INFINITY), F16(0xfc00));
        assert!(F16::from_f32(f32::NAN).to_f32().is_nan());
        assert_eq!(F16::from_f32(2f32.powi(-24)), F16(0x0001), "smallest subnormal");
        assert_eq!(F16::from_f32(2f32.powi(-25)), F16(0x0000), "a tie rounds to even (zero)");
        assert_eq!(F16::from_f32(1.5 * 2f32.powi(-24)), F16(0x0002), "a tie rounds to even (two)");
        assert_eq!(F16::from_f32(1.0 + 2f32.powi(-11)), F16(0x3c00), "tie to even at 1");
        assert_eq!(F16::from_f32(1.0 + 3.0 * 2f32.powi(-11)), F16(0x3c02));
        assert_eq!(F16(0x0001).to_f32(), 2f32.powi(-24));
        assert_eq!(F16(0x7c00).to_f32(), f32::INFINITY);
        assert_eq!(F16(0x8000).to_f32().to_bits(), (-0.0f32).to_bits());
        // Every finite f16 survives the round trip, and every f32 rounds to
        // one of its two f16 neighbours, the nearer one.
        for h in 0..=u16::MAX {
            let v = F16(h).to_f32();
            if v.is_finite() {
                assert_eq!(F16::from_f32(v), F16(h), "{h:#06x}");
            }
        }
        let mut rng = Xoshiro256StarStar::new(3);
        for _ in 0..100_000 {
            let x = (rng.normal() * 100.0) as f32;
            let h = F16::from_f32(x).to_f32();
            let err = (h - x).abs();
            let ulp = (2f32.powi((x.abs().log2().floor() as i32).max(-14) - 10)).max(2f32.powi(-24));
            assert!(err <= ulp / 2.0, "{x}: {h} is off by {err} (ulp {ulp})");
        }
    }

    #[test]
    fn q8_0_round_trip_is_within_half_a_step_per_block() {
        let mut rng = Xoshiro256StarStar::new(7);
        let x: Vec<f32> = (0..32 * 50).map(|i| (rng.normal() * (1.0 + (i / 32) as f64)) as f32).collect();
        let blocks = quantize_q8_0(&x).unwrap();
        let back = dequantize_q8_0(&blocks);
        for (b, (xs, ys)) in blocks.iter().zip(x.chunks(32).zip(back.chunks(32))) {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // The scale is amax/127 rounded to f16 (relative error <= 2^-11),
            // and each weight is rounded to the nearest step of it: the error
            // is at most half a step plus the scale's error times 127.
            let d = b.d.to_f32();
            assert!((d - amax / 127.0).abs() <= amax / 127.0 * 2f32.powi(-11));
            let bound = d / 2.0 + 127.0 * (d - amax / 127.0).abs() + 1e-6;
            for (x, y) in xs.iter().zip(ys) {
                assert!((x - y).abs() <= bound, "{x} -> {y} (bound {bound})");
            }
            assert!(b.qs.iter().any(|&q| q.abs() == 127), "the largest weight maps to ±127");
        }
        assert_eq!(quantize_q8_0(&[0.0; 32]).unwrap()[0], BlockQ8_0::default());
        assert!(quantize_q8_0(&[1.0; 33]).is_err());
    }

    #[test]
    fn quantizer_rounds_half_away_from_zero_like_ggml() {
        // 127 / 2 · {0.5, 1.5, ...} lands exactly on .5 steps: roundf rounds them away from zero.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 2.5;
        x[4] = -2.5;
        x[5] = 0.499_999_97;
        let b = quantize_q8_0(&x).unwrap()[0];
        assert_eq!(&b.qs[..6], &[127, 1, -1, 3, -3, 0]);
    }

    #[test]
    fn packed_matrices_keep_their_shape_and_fall_back_to_f16() {
        let values: Vec<f32> = (0..3 * 48).map(|i| (i as f32 * 0.37).sin()).collect();
        let m = PackedMatrix::pack(3, 48, &values, DType::Q8_0).unwrap();
        assert_eq!(m.dtype(), DType::F16, "48 columns are not whole q8_0 blocks");
        let values: Vec<f32> = (0..3 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let m = PackedMatrix::pack(3, 64, &values, DType::Q8_0).unwrap();
        assert_eq!(m.dtype(), DType::Q8_0);
        assert_eq!(m.bytes(), 3 * 2 * 34);
        let back = m.to_full();
        for (a, b) in values.iter().zip(&back) {
            assert!((a - b).abs() < 1.0 / 127.0);
        }
        assert!(PackedMatrix::from_data(3, 64, PackedData::<f32>::F16(vec![F16(0); 5])).is_err());
        assert!(PackedMatrix::from_data(2, 48, PackedData::<f32>::Q8_0(vec![BlockQ8_0::default(); 3])).is_err());
        assert!(PackedMatrix::<f32>::pack(3, 64, &values[..10], DType::F16).is_err());
        assert_eq!("Q8_0".parse::<DType>().unwrap(), DType::Q8_0);
        assert!("q4".parse::<DType>().is_err());
    }
}

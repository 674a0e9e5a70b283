//! The instruction set the hot kernels run on, chosen once at run time, so one
//! binary built for baseline x86-64 (or aarch64) runs at full speed on every
//! CPU: AVX-512 (F + BW), AVX2 (+ FMA + F16C), or a portable path.
//!
//! Two kinds of kernel use it:
//! - explicit SIMD for decoding's matrix-vector products and the f16 KV cache
//!   (the methods of [`Isa`], one implementation per path);
//! - everything else (norms, RoPE, softmax, SwiGLU, attention's elementwise
//!   loops, AdamW) is plain Rust written once and compiled once per path by
//!   [`multiversion!`], so the compiler vectorises it for AVX2 or AVX-512
//!   inside functions carrying those target features.
//!
//! A value of an [`Isa`] type is the proof that the CPU has its instructions:
//! only [`Kernels`], which checks the CPU when it is made, creates them. The
//! path in use is [`Kernels::active`]: the best one the CPU supports, unless
//! `FERROGPT_KERNELS=portable|avx2|avx512` (or [`Kernels::force`]) says otherwise.
//!
//! Results: every path computes a dot product in the same 16 lanes, reduced in
//! the same order (and q8_0 blocks in the same even/odd 8-lane order), so the
//! AVX2 and AVX-512 paths agree bit for bit; the portable path does too where
//! the target has FMA (aarch64) and otherwise differs by rounding (a·b+c
//! rounds twice without FMA). Elementwise kernels agree bit for bit on every
//! path: Rust never fuses or reorders float operations on its own.

use crate::quant::{BlockQ8_0, F16};
use crate::EngineError;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

/// An instruction-set path of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    Portable,
    Avx2,
    Avx512,
}

impl KernelPath {
    pub const ALL: [KernelPath; 3] = [KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Portable => "portable",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
        }
    }

    /// The CPU features the path needs, as `is_x86_feature_detected!` names them.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            KernelPath::Portable => &[],
            KernelPath::Avx2 => &["avx2", "fma", "f16c"],
            KernelPath::Avx512 => &["avx512f", "avx512bw", "avx2", "fma", "f16c"],
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"),
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2.is_supported() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            KernelPath::Avx2 | KernelPath::Avx512 => false,
        }
    }

    /// Every path this CPU can run, slowest first.
    pub fn supported() -> Vec<KernelPath> {
        KernelPath::ALL.into_iter().filter(|p| p.is_supported()).collect()
    }

    /// The fastest path this CPU can run.
    pub fn best() -> KernelPath {
        KernelPath::ALL
            .into_iter()
            .rev()
            .find(|p| p.is_supported())
            .unwrap_or(KernelPath::Portable)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelPath {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, EngineError> {
        KernelPath::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| EngineError::Unsupported(format!("kernel path `{s}` (portable, avx2 and avx512 exist)")))
    }
}

/// The environment variable that forces a path (`portable`, `avx2`,
/// `avx512`; `auto` or unset picks the best).
pub const KERNELS_ENV: &str = "FERROGPT_KERNELS";

/// A kernel path this CPU is known to support: the only way to run kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels(KernelPath);

/// 0 until the first [`Kernels::active`]; then 1 + the index of the path in [`KernelPath::ALL`].
static ACTIVE: AtomicU8 = AtomicU8::new(0);

impl Kernels {
    /// `path`, if this CPU supports it.
    pub fn new(path: KernelPath) -> Result<Kernels, EngineError> {
        if path.is_supported() {
            Ok(Kernels(path))
        } else {
            Err(EngineError::Unsupported(format!(
                "kernel path {path}: this CPU lacks {}",
                path.features().join(" + ")
            )))
        }
    }

    pub fn path(self) -> KernelPath {
        self.0
    }

    /// The path the engine runs on, decided on first use: `FERROGPT_KERNELS`
    /// if set to a path this CPU supports, else the best supported one (an
    /// unusable setting is reported by [`Kernels::from_env`] and logged).
    pub fn active() -> Kernels {
        match ACTIVE.load(Ordering::Relaxed) {
            0 => {
                let chosen = Kernels::from_env().unwrap_or_else(|e| {
                    tracing::warn!("{e}; using the best path");
                    Kernels(KernelPath::best())
                });
                Kernels::store(chosen);
                tracing::info!(
                    "kernels: {} (supported here: {})",
                    chosen.path(),
                    KernelPath::supported().iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                );
                chosen
            }
            // Only `store` writes ACTIVE, and only paths that were checked.
            i => Kernels(KernelPath::ALL[(i - 1) as usize]),
        }
    }

    /// What `FERROGPT_KERNELS` asks for: the best path when unset or `auto`,
    /// an error when it names an unknown path or one this CPU lacks.
    pub fn from_env() -> Result<Kernels, EngineError> {
        match std::env::var(KERNELS_ENV) {
            Err(_) => Ok(Kernels(KernelPath::best())),
            Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("auto") => Ok(Kernels(KernelPath::best())),
            Ok(v) => Kernels::new(
                v.parse()
                    .map_err(|e: EngineError| EngineError::Unsupported(format!("{KERNELS_ENV}={v}: {e}")))?,
            ),
        }
    }

    /// Makes `path` the active one for the rest of the process (benchmarks and
    /// tests comparing paths).
    pub fn force(path: KernelPath) -> Result<Kernels, EngineError> {
        let k = Kernels::new(path)?;
        Kernels::store(k);
        Ok(k)
    }

    fn store(k: Kernels) {
        let index = KernelPath::ALL.iter().position(|&p| p == k.0).unwrap_or(0);
        ACTIVE.store(index as u8 + 1, Ordering::Relaxed);
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An instruction-set path as a type. Its explicit-SIMD kernels take `self`:
/// holding a value proves the CPU supports the path (see the module doc).
///
/// The dot products return, per row, the canonical result described in the
/// module doc, whatever the path or the number of rows `B` asked for at once.
pub trait Isa: Copy + Send + Sync + 'static + sealed::Sealed {
    /// Whether `a·b + c` is computed with one rounding (hardware FMA).
    const FUSED: bool;

    /// `B` dot products of f32 rows with `x` (each row at least `x.len()` long).
    fn dot_rows_f32<const B: usize>(self, rows: &[&[f32]; B], x: &[f32]) -> [f32; B];

    /// As [`Isa::dot_rows_f32`] with f16 rows, widened exactly.
    fn dot_rows_f16<const B: usize>(self, rows: &[&[F16]; B], x: &[f32]) -> [f32; B];

    /// `B` dot products of q8_0 rows with a q8_0-quantized `x` (as many blocks
    /// as `x` has): exact integer products per block, scaled by both blocks'
    /// scales.
    fn dot_rows_q8<const B: usize>(self, rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B];

    /// `out[i] += a · v[i]` (rounded twice, like the f32 version).
    fn axpy_f16(self, out: &mut [f32], a: f32, v: &[F16]);
}

/// The portable path: plain Rust, vectorised by the compiler for the build target.
#[derive(Clone, Copy, Debug)]
pub struct Portable(pub(crate) ());

impl sealed::Sealed for Portable {}

impl Isa for Portable {
    /// aarch64 always has FMA; baseline x86-64 does not, and `mul_add` there
    /// would be a libm call per element.
    const FUSED: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

    #[inline(always)]
    fn dot_rows_f32<const B: usize>(self, rows: &[&[f32]; B], x: &[f32]) -> [f32; B] {
        portable::dot_rows(self, rows, x)
    }
    #[inline(always)]
    fn dot_rows_f16<const B: usize>(self, rows: &[&[F16]; B], x: &[f32]) -> [f32; B] {
        portable::dot_rows_f16(self, rows, x)
    }
    #[inline(always)]
    fn dot_rows_q8<const B: usize>(self, rows: &[&[BlockQ8_0]; B], x: &[BlockQ8_0]) -> [f32; B] {
        portable::dot_rows_q8(self, rows, x)
    }
    #[inline(always)]
    fn axpy_f16(self, out: &mut [f32], a: f32, v: &[F16]) {
        portable::axpy_f16(out, a, v)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

/// `a·b + c`, fused where the path has FMA.
#[inline(always)]
pub fn fmadd<I: Isa, T: crate::Float>(_: I, a: T, b: T, c: T) -> T {
    if I::FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines a function (optionally `unsafe`) compiled once per kernel path,
/// taking a [`Kernels`] first. The body is written once, over an `isa` value of some [`Isa`] type
/// (named by the first parameter), which it passes to [`fmadd`] and to
/// explicit kernels; each path's copy is compiled inside a function carrying
/// that path's target features, so the compiler vectorises it for them.
///
/// ```ignore
/// multiversion! {
///     pub(crate) fn scale_rows<T: Float>(isa: Isa, v: &mut [T], s: T) { ... }
/// }
/// scale_rows(Kernels::active(), &mut v, 2.0);
/// ```
macro_rules! multiversion {
    (
        @emit [$($qualifier:tt)*]
        $(#[$attr:meta])*
        $vis:vis fn $name:ident < $($g:ident : $bound:path),* > ( $isa:ident : Isa $(, $arg:ident : $ty:ty)* $(,)? ) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis $($qualifier)* fn $name<$($g: $bound),*>(kernels: $crate::simd::Kernels $(, $arg: $ty)*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused_variables, clippy::too_many_arguments, clippy::needless_range_loop)]
            $($qualifier)* fn imp<II: $crate::simd::Isa, $($g: $bound),*>($isa: II $(, $arg: $ty)*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<$($g: $bound),*>(isa: $crate::simd::Avx2 $(, $arg: $ty)*) $(-> $ret)? {
                #[allow(unused_unsafe)]
                unsafe { imp(isa $(, $arg)*) }
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<$($g: $bound),*>(isa: $crate::simd::Avx512 $(, $arg: $ty)*) $(-> $ret)? {
                #[allow(unused_unsafe)]
                unsafe { imp(isa $(, $arg)*) }
            }

            #[allow(unused_unsafe)]
            match kernels.path() {
                // SAFETY (both arms): a `Kernels` value exists only for a path
                // the CPU supports (`Kernels::new`), which is what these entry
                // points' target features and the tokens require; an `unsafe`
                // kernel's own contract is its caller's.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::KernelPath::Avx512 => unsafe { avx512($crate::simd::Avx512::proven() $(, $arg)*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::KernelPath::Avx2 => unsafe { avx2($crate::simd::Avx2::proven() $(, $arg)*) },
                // SAFETY: as above.
                _ => unsafe { imp($crate::simd::Portable(()) $(, $arg)*) },
            }
        }
    };
    ($(#[$attr:meta])* $vis:vis unsafe fn $($rest:tt)*) => {
        $crate::simd::multiversion!(@emit [unsafe] $(#[$attr])* $vis fn $($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        $crate::simd::multiversion!(@emit [] $(#[$attr])* $vis fn $($rest)*);
    };
}
pub(crate) use multiversion;

#[cfg(test)]
pub(crate) mod tests;

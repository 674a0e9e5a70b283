//! A global allocator that aborts on any single allocation above [`MAX_ALLOCATION`].
//!
//! libFuzzer's own `-malloc_limit_mb` only works with a sanitizer's malloc hooks, which stable
//! Rust cannot enable. Without a cap, a loader that trusts a header's size claim either dies
//! on a failed multi-gigabyte allocation (an abort the fuzzer reports without saying why) or,
//! with overcommit, succeeds lazily and slows every later input down. Aborting here with the
//! size makes that a reported, reproducible finding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// Inputs are at most a few hundred kilobytes; no honest parse of one needs more than this
/// in one piece. Large enough for the biggest table a valid config may ask for (the RoPE
/// table of a model with the longest context the engine accepts).
pub const MAX_ALLOCATION: usize = 1 << 30;

pub struct CappedAllocator;

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // Format into a stack buffer: allocating here would recurse.
        let mut buf = [0u8; 128];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = writeln!(
            cursor,
            "ferrogpt-fuzz: allocation of {size} bytes exceeds the cap of {MAX_ALLOCATION}"
        );
        let end = cursor.position() as usize;
        let _ = std::io::stderr().write_all(&buf[..end]);
        std::process::abort();
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator after the size check.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

//! Limits on what one plugin call may take: time (epoch interruption) and
//! memory (a resource limiter per store).
//!
//! Time: the engine's epoch is advanced by one background thread every
//! `TICK`; a call gets a deadline of `ceil(deadline / TICK)` ticks, so it is
//! interrupted between `deadline - TICK` and `deadline` after it starts. The
//! thread holds only a weak reference to the engine and ends with it.
//!
//! Memory: `MemoryCap` refuses any linear-memory growth beyond the cap and
//! remembers that it did. A guest that cannot grow its memory usually aborts
//! (Rust's `handle_alloc_error` traps with `unreachable`), so after a trap the
//! flag is what tells "out of memory" apart from any other trap.

use std::time::Duration;

use wasmtime::{Engine, ResourceLimiter};

/// Granularity of the epoch clock.
pub const TICK: Duration = Duration::from_millis(5);

/// Epoch ticks that make up `deadline` (at least one).
pub fn ticks(deadline: Duration) -> u64 {
    (deadline.as_nanos().div_ceil(TICK.as_nanos()) as u64).max(1)
}

/// Starts the thread that advances `engine`'s epoch every `TICK` for as long
/// as the engine lives.
pub fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("streamhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// A per-store memory cap that records whether the cap was hit.
#[derive(Debug)]
pub struct MemoryCap {
    pub max_bytes: usize,
    pub hit: bool,
    /// The largest linear memory granted so far.
    pub peak: usize,
}

impl MemoryCap {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            hit: false,
            peak: 0,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond
        // any honest plugin and bounds the host memory a guest can pin.
        Ok(desired <= 1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        assert_eq!(ticks(Duration::from_millis(100)), 20);
        assert_eq!(ticks(Duration::from_millis(101)), 21);
        assert_eq!(ticks(Duration::from_millis(1)), 1);
        assert_eq!(ticks(Duration::ZERO), 1);
    }

    #[test]
    fn cap_refuses_growth_beyond_it_and_remembers() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!cap.hit);
        assert_eq!(cap.peak, 1 << 20);
        assert!(
            !cap.memory_growing(1 << 20, (1 << 20) + 65536, None)
                .unwrap()
        );
        assert!(cap.hit);
    }
}

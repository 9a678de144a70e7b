//! What a plugin sees of time and chance through WASI, made a function of the
//! batch: replaying a batch gives the same answers.
//!
//! Components built by componentize-py and componentize-js import
//! `wasi:clocks` and `wasi:random`, and a Rust plugin can too. Refusing them
//! would refuse those languages, so streamhost answers them instead:
//! - both clocks read the batch's processing time (the wall clock as that
//!   instant, the monotonic clock as the same instant in nanoseconds), so
//!   `datetime.now()` in a rule equals the WIT's `processing-time`;
//! - random bytes come from a SplitMix64 stream seeded, at the start of each
//!   call, from the batch's processing time: the same call on the same
//!   batch draws the same bytes.
//!
//! A rule that waits for the clock to move (a busy wait on time) waits
//! forever, and its deadline interrupts it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rand_core::TryRng;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The current call's processing time, shared by a store's clocks and its
/// random source.
#[derive(Clone, Default)]
pub struct CallTime(Arc<Inner>);

#[derive(Default)]
struct Inner {
    ms: AtomicI64,
    /// Bumped at every call, so that the random stream restarts.
    call: AtomicU64,
}

impl CallTime {
    /// Starts a call at processing time `ms`.
    pub fn begin(&self, ms: i64) {
        self.0.ms.store(ms, Ordering::Relaxed);
        self.0.call.fetch_add(1, Ordering::Relaxed);
    }

    fn ms(&self) -> i64 {
        self.0.ms.load(Ordering::Relaxed)
    }

    pub fn wall_clock(&self) -> impl HostWallClock + 'static {
        WallClock(self.clone())
    }

    pub fn monotonic_clock(&self) -> impl HostMonotonicClock + 'static {
        MonotonicClock(self.clone())
    }

    pub fn random(&self, stream: u64) -> impl rand_core::Rng + Send + 'static {
        SeededRandom {
            time: self.clone(),
            stream,
            call: u64::MAX,
            state: 0,
        }
    }
}

struct WallClock(CallTime);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.ms().max(0) as u64)
    }
}

struct MonotonicClock(CallTime);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        (self.0.ms().max(0) as u64).saturating_mul(1_000_000)
    }
}

/// SplitMix64, restarted from the processing time at every call.
struct SeededRandom {
    time: CallTime,
    /// Tells the secure and insecure streams apart.
    stream: u64,
    /// The call the state belongs to.
    call: u64,
    state: u64,
}

impl SeededRandom {
    fn next(&mut self) -> u64 {
        let call = self.time.0.call.load(Ordering::Relaxed);
        if call != self.call {
            self.call = call;
            self.state = (self.time.ms() as u64) ^ self.stream.wrapping_mul(0xA076_1D64_78BD_642F);
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl TryRng for SeededRandom {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn each_call_draws_the_same_bytes_for_the_same_time() {
        let time = CallTime::default();
        let mut rng = time.random(1);
        let draw = |rng: &mut dyn Rng| (rng.next_u64(), rng.next_u64());
        time.begin(1_795_500_000_000);
        let a = draw(&mut rng);
        time.begin(1_795_500_000_000);
        assert_eq!(draw(&mut rng), a);
        time.begin(1_795_500_000_001);
        assert_ne!(draw(&mut rng), a);
        assert_eq!(
            time.wall_clock().now(),
            Duration::from_millis(1_795_500_000_001)
        );
        assert_eq!(time.monotonic_clock().now(), 1_795_500_000_001_000_000);
    }
}

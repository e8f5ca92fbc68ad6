//! A running hash of the event trace: same seed, same events, same hash.

/// FNV-1a over the 64-bit words describing each processed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceHash {
    /// The hash of an empty trace.
    pub fn new() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }

    /// Mixes one event's words in.
    pub fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.0 ^= u64::from(b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

//! The hasher of the ledger's in-memory maps.
//!
//! Almost every key here is chosen by a participant (transfer and account ids, participant
//! names), and participants are hostile: a hasher an outsider can predict lets one of them
//! send ids that all land in one bucket and slow every other participant's writes. std's
//! SipHash-1-3 is keyed per process and safe, but it was about a seventh of the writer's CPU
//! (BENCHMARKS.md, "The hasher"). aHash is also keyed with random per-process keys (from the
//! OS at start) and is built to resist the same collision attacks, at a fraction of the cost
//! on 16-byte ids. Its output is not stable between versions or runs, so nothing here may be
//! persisted or compared by hash value: these maps only live in memory.

/// A `HashMap` with per-process random keys (aHash). Build with `HashMap::default()` or
/// `HashMap::with_capacity_and_hasher(n, Default::default())`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A `HashSet` with per-process random keys (aHash).
pub type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_maps_hash_the_same_id_differently() {
        // The keys are random per map: an id's hash in one map says nothing about another's.
        let a: HashMap<u128, ()> = HashMap::default();
        let b: HashMap<u128, ()> = HashMap::default();
        let id = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128;
        assert_ne!(a.hasher().hash_one(id), b.hasher().hash_one(id));
    }
}

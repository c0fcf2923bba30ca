//! The one way Puente derives ids, and the namespace no participant can use.
//!
//! Participants choose their own account and transfer ids (128-bit, written as UUIDs). Some
//! ids are chosen by the system instead: the settlement hub's accounts, settlement transfers,
//! FX legs and cancellations, the FX house's accounts, the ledger's own expiry and automatic
//! post records. If a participant could create such an id before the system does, it could
//! block the system (a pre-created hub account that refuses credits aborts every settlement)
//! or another participant (a pre-created cancel id blocks a sender's right to cancel).
//!
//! So system ids live in a **reserved namespace**: their top 32 bits are
//! [`SYSTEM_ID_PREFIX`]. The ledger refuses any id in it from a participant or an operator
//! (`ID_RESERVED`), and only the system makes ids there, with [`system_id`]. This holds by
//! construction: a participant cannot claim a system id however it learns or guesses it.
//! The other 96 bits are a SHA-256 of the id's domain and parts (collisions among system ids
//! need about 2^48 of them).
//!
//! [`derive`] makes deterministic ids *outside* the namespace (simulated data, UETRs).

/// The top 32 bits of every system id: ASCII `PNTS` ("Puente system").
pub const SYSTEM_ID_PREFIX: u32 = 0x504e_5453;

/// The number of low bits of a system id that come from the hash.
const SYSTEM_HASH_BITS: u32 = 96;

/// True when `id` is in the reserved system namespace.
pub const fn is_system_id(id: u128) -> bool {
    (id >> SYSTEM_HASH_BITS) as u32 == SYSTEM_ID_PREFIX
}

/// SHA-256 over the domain and each part, each prefixed by its length (so that no two
/// different lists of parts hash the same bytes).
fn digest(domain: &str, parts: &[&[u8]]) -> u128 {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&(domain.len() as u32).to_be_bytes());
    context.update(domain.as_bytes());
    for part in parts {
        context.update(&(part.len() as u32).to_be_bytes());
        context.update(part);
    }
    let hash = context.finish();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    u128::from_be_bytes(bytes)
}

/// A system id: deterministic in (`domain`, `parts`), always in the reserved namespace,
/// never zero.
pub fn system_id(domain: &str, parts: &[&[u8]]) -> u128 {
    let low = digest(domain, parts) & ((1u128 << SYSTEM_HASH_BITS) - 1);
    let id = ((SYSTEM_ID_PREFIX as u128) << SYSTEM_HASH_BITS) | low;
    debug_assert!(is_system_id(id) && id != 0);
    id
}

/// A deterministic id outside the reserved namespace, never zero: for ids the system makes up
/// on a participant's behalf (simulated accounts and transfers) or for documents (UETRs).
pub fn derive(domain: &str, parts: &[&[u8]]) -> u128 {
    let mut id = digest(domain, parts);
    if is_system_id(id) {
        // Flip the top bit: out of the namespace, still deterministic.
        id ^= 1u128 << 127;
    }
    let id = id.max(1);
    debug_assert!(!is_system_id(id));
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn system_ids_are_reserved_and_derived_ones_are_not() {
        let hub = system_id("settlement/hub-account", &[b"USD"]);
        assert!(is_system_id(hub));
        assert_eq!(hub, system_id("settlement/hub-account", &[b"USD"]));
        assert_ne!(hub, system_id("settlement/hub-account", &[b"MXN"]));
        assert_eq!(format!("{hub:032x}")[..8].to_owned(), "504e5453");
        assert!(!is_system_id(derive("settlement/hub-account", &[b"USD"])));
        // Parts are length-prefixed: moving a byte between parts changes the id.
        assert_ne!(system_id("d", &[b"ab", b"c"]), system_id("d", &[b"a", b"bc"]));
        assert_ne!(system_id("d", &[b"abc"]), system_id("da", &[b"bc"]));
    }

    proptest! {
        #[test]
        fn the_two_spaces_never_meet(domain in "[a-z/]{0,20}", part in prop::collection::vec(any::<u8>(), 0..40)) {
            let system = system_id(&domain, &[&part]);
            let derived = derive(&domain, &[&part]);
            prop_assert!(is_system_id(system));
            prop_assert!(!is_system_id(derived));
            prop_assert!(system != 0 && derived != 0);
        }

        #[test]
        fn random_client_ids_are_almost_never_reserved(id in any::<u128>()) {
            // A UUIDv4 has 2^-32 odds of landing in the namespace; this checks the predicate.
            prop_assert_eq!(is_system_id(id), (id >> 96) as u32 == SYSTEM_ID_PREFIX);
        }
    }
}

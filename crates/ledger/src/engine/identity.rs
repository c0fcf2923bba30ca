//! Who may call: participants, their roles, their API keys and client certificates.
//!
//! The registry is engine state like accounts: every change is a journal op (so it is durable,
//! in backups, and covered by the journal's hash chain) and replay rebuilds it. Keys are never
//! stored, only their SHA-256: the client makes the key, sends its hash, and shows the key
//! once. A key is named by a `key_id` (chosen by the client, unique per ledger), which is also
//! the idempotency id of issuing it: issuing the same id with the same hash again is a retry;
//! with another hash it is refused.

use crate::hashing::HashMap;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Engine, Op, Output};
use crate::types::participant_valid;

pub use crate::limits::CERTIFICATES_PER_PARTICIPANT_MAX;
pub use crate::limits::KEYS_PER_PARTICIPANT_MAX;
pub use crate::limits::PARTICIPANT_NAME_LEN_MAX;
pub use crate::limits::PARTICIPANTS_MAX;
/// Longest key id, in bytes (`[a-z0-9]`).
pub const KEY_ID_LEN_MAX: usize = 32;

/// SHA-256 of an API key, or of a client certificate (DER).
pub type Digest = [u8; 32];

/// What a caller may do. Operators run settlement, set rates and administer participants, and
/// may read and write every account; participants see and move only their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Operator,
    Participant,
}

impl Role {
    pub fn code(self) -> &'static str {
        match self {
            Role::Operator => "OPERATOR",
            Role::Participant => "PARTICIPANT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: String,
    pub key_sha256: Digest,
    pub created_at_ns: u64,
    /// When it was revoked; a revoked key authenticates nobody.
    pub revoked_at_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub sha256: Digest,
    pub bound_at_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at_ns: u64,
    pub keys: Vec<ApiKey>,
    pub certificates: Vec<Certificate>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub participant: String,
    pub role: Role,
    /// The key it used (`None` for a client certificate).
    pub key_id: Option<String>,
}

impl Caller {
    /// The ownership scope handed to ledger operations: `None` (everything) for an operator,
    /// the participant's id otherwise.
    pub fn scope(&self) -> Option<&str> {
        match self.role {
            Role::Operator => None,
            Role::Participant => Some(&self.participant),
        }
    }

    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// How the ledger sees this caller's requests.
    pub fn actor(&self) -> crate::Actor {
        match self.role {
            Role::Operator => crate::Actor::Operator(self.participant.clone()),
            Role::Participant => crate::Actor::Participant(self.participant.clone()),
        }
    }

    /// True when this caller may see what `owner` owns.
    pub fn may_see(&self, owner: &str) -> bool {
        self.is_operator() || self.participant == owner
    }
}

/// The credentials that authenticate, by digest: what the server checks on every request.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    keys: HashMap<Digest, Caller>,
    certificates: HashMap<Digest, Caller>,
    operators: usize,
}

impl Credentials {
    pub fn by_key(&self, key_sha256: &Digest) -> Option<&Caller> {
        self.keys.get(key_sha256)
    }

    pub fn by_certificate(&self, cert_sha256: &Digest) -> Option<&Caller> {
        self.certificates.get(cert_sha256)
    }

    /// Operators registered (bootstrap is allowed only while there are none).
    pub fn operators(&self) -> usize {
        self.operators
    }
}

/// What `IdentityRequest::Create` registers.
struct NewParticipant {
    id: String,
    name: String,
    role: Role,
    key_id: String,
    key_sha256: Digest,
    bootstrap: bool,
}

/// Changes and reads of the registry (run by the single writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRequest {
    /// Registers a participant with its first key. `bootstrap`: only accepted while no operator
    /// exists (the first operator of a new ledger).
    Create {
        id: String,
        name: String,
        role: Role,
        key_id: String,
        key_sha256: Digest,
        bootstrap: bool,
    },
    /// Adds a key; `revoke_others` revokes every other live key of the participant at once.
    IssueKey {
        participant: String,
        key_id: String,
        key_sha256: Digest,
        revoke_others: bool,
    },
    RevokeKey {
        participant: String,
        key_id: String,
    },
    BindCertificate {
        participant: String,
        cert_sha256: Digest,
    },
    UnbindCertificate {
        participant: String,
        cert_sha256: Digest,
    },
    Get(String),
}

/// What every [`IdentityRequest`] answers: the participant after it, and whether it changed
/// anything (false for a read, or a retry of a change already made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantChange {
    pub participant: Participant,
    pub changed: bool,
}

/// Every participant (the registry is small: at most `PARTICIPANTS_MAX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParticipants;

impl super::Call for IdentityRequest {
    type Answer = IdentityResult;

    fn run(
        self,
        engine: &mut Engine,
        _: &super::Prefetched,
        now_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        engine.identity_command(self, now_ns, out)
    }
}

impl super::Call for ListParticipants {
    type Answer = Vec<Participant>;

    fn run(self, engine: &mut Engine, _: &super::Prefetched, _: u64, _: &mut Output) -> Vec<Participant> {
        engine.identity.participants.values().cloned().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefusal {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("participant {0} not found")]
    NotFound(String),
    #[error("participant {id} exists with a different {field}")]
    ExistsWithDifferent { id: String, field: &'static str },
    #[error("key id {0} is already used by another key")]
    KeyIdTaken(String),
    #[error("key {key_id} of participant {participant} not found")]
    KeyNotFound { participant: String, key_id: String },
    #[error("an operator already exists: bootstrap is over; ask an operator")]
    BootstrapOver,
    #[error("bootstrap creates an operator")]
    BootstrapNeedsOperator,
    #[error("this certificate is bound to another participant")]
    CertificateTaken,
    #[error("this API key is already registered (possibly revoked); make a new key")]
    KeyReused,
    #[error("{0}")]
    LimitReached(&'static str),
}

pub type IdentityResult = Result<ParticipantChange, IdentityRefusal>;

/// The registry inside the engine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdentityState {
    participants: BTreeMap<String, Participant>,
    /// key_id → participant (key ids are unique across the ledger).
    key_owner: HashMap<String, String>,
    /// Every key hash ever issued, live or revoked: a hash authenticates at most one key, ever.
    key_hashes: std::collections::HashSet<Digest>,
    cert_owner: HashMap<Digest, String>,
}

fn key_id_valid(key_id: &str) -> bool {
    !key_id.is_empty()
        && key_id.len() <= KEY_ID_LEN_MAX
        && key_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl IdentityState {
    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.get(id)
    }

    /// Every live credential, for the server's request path.
    pub fn credentials(&self) -> Credentials {
        let mut credentials = Credentials::default();
        for p in self.participants.values() {
            if p.role == Role::Operator {
                credentials.operators += 1;
            }
            for key in p.keys.iter().filter(|k| k.revoked_at_ns.is_none()) {
                let caller =
                    Caller { participant: p.id.clone(), role: p.role, key_id: Some(key.key_id.clone()) };
                credentials.keys.insert(key.key_sha256, caller);
            }
            for cert in &p.certificates {
                let caller = Caller { participant: p.id.clone(), role: p.role, key_id: None };
                credentials.certificates.insert(cert.sha256, caller);
            }
        }
        credentials
    }
}

impl Engine {
    pub fn identity(&self) -> &IdentityState {
        &self.identity
    }

    /// Runs one identity command; its ops go to `out` like any other write.
    pub fn identity_command(
        &mut self,
        request: IdentityRequest,
        now_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        let timestamp_ns = now_ns.max(self.last_timestamp_ns + 1);
        match request {
            IdentityRequest::Get(id) => self.participant_result(&id, false),
            IdentityRequest::Create { id, name, role, key_id, key_sha256, bootstrap } => {
                let new = NewParticipant { id, name, role, key_id, key_sha256, bootstrap };
                self.create_participant(new, timestamp_ns, out)
            }
            IdentityRequest::IssueKey { participant, key_id, key_sha256, revoke_others } => {
                self.issue_key(participant, key_id, key_sha256, revoke_others, timestamp_ns, out)
            }
            IdentityRequest::RevokeKey { participant, key_id } => {
                self.revoke_key(participant, key_id, timestamp_ns, out)
            }
            IdentityRequest::BindCertificate { participant, cert_sha256 } => {
                self.bind_certificate(participant, cert_sha256, timestamp_ns, out)
            }
            IdentityRequest::UnbindCertificate { participant, cert_sha256 } => {
                self.unbind_certificate(participant, cert_sha256, timestamp_ns, out)
            }
        }
    }

    /// Registers a participant with its first key; a retry with the same content returns it unchanged.
    fn create_participant(
        &mut self,
        new: NewParticipant,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        let NewParticipant { id, name, role, key_id, key_sha256, bootstrap } = new;
        if !participant_valid(&id) || crate::types::is_system_participant(&id) {
            return Err(IdentityRefusal::Invalid {
                field: "participant_id",
                reason: format!(
                    "1 to 64 of [a-z0-9._-], not starting with {:?} (reserved for Puente)",
                    crate::types::SYSTEM_PARTICIPANT_PREFIX
                ),
            });
        }
        if name.len() > PARTICIPANT_NAME_LEN_MAX || name.chars().any(char::is_control) {
            return Err(IdentityRefusal::Invalid {
                field: "display_name",
                reason: format!("at most {PARTICIPANT_NAME_LEN_MAX} bytes, no control characters"),
            });
        }
        if !key_id_valid(&key_id) {
            return Err(IdentityRefusal::Invalid {
                field: "key_id",
                reason: format!("1 to {KEY_ID_LEN_MAX} of [a-z0-9]"),
            });
        }
        if let Some(existing) = self.identity.participants.get(&id) {
            // A retry of the same creation returns the participant unchanged.
            if existing.role != role {
                return Err(IdentityRefusal::ExistsWithDifferent { id, field: "role" });
            }
            if existing.name != name {
                return Err(IdentityRefusal::ExistsWithDifferent { id, field: "display_name" });
            }
            let first = existing.keys.first();
            if first.is_none_or(|k| k.key_id != key_id || k.key_sha256 != key_sha256) {
                return Err(IdentityRefusal::ExistsWithDifferent { id, field: "key" });
            }
            return self.participant_result(&id, false);
        }
        if bootstrap {
            if self.identity.participants.values().any(|p| p.role == Role::Operator) {
                return Err(IdentityRefusal::BootstrapOver);
            }
            if role != Role::Operator {
                return Err(IdentityRefusal::BootstrapNeedsOperator);
            }
        }
        if self.identity.key_owner.contains_key(&key_id) {
            return Err(IdentityRefusal::KeyIdTaken(key_id));
        }
        if self.identity.key_hashes.contains(&key_sha256) {
            return Err(IdentityRefusal::KeyReused);
        }
        if self.identity.participants.len() >= PARTICIPANTS_MAX {
            return Err(IdentityRefusal::LimitReached("the ledger holds its most participants"));
        }
        self.apply(Op::RegisterParticipant { id: id.clone(), name, role, timestamp_ns }, out);
        self.apply(Op::AddApiKey { participant: id.clone(), key_id, key_sha256, timestamp_ns }, out);
        self.participant_result(&id, true)
    }

    /// Adds a key (a retry finds it), revoking the others if asked.
    fn issue_key(
        &mut self,
        participant: String,
        key_id: String,
        key_sha256: Digest,
        revoke_others: bool,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        let Some(p) = self.identity.participants.get(&participant) else {
            return Err(IdentityRefusal::NotFound(participant));
        };
        if !key_id_valid(&key_id) {
            return Err(IdentityRefusal::Invalid {
                field: "key_id",
                reason: format!("1 to {KEY_ID_LEN_MAX} of [a-z0-9]"),
            });
        }
        let others: Vec<String> = p
            .keys
            .iter()
            .filter(|k| k.revoked_at_ns.is_none() && k.key_id != key_id)
            .map(|k| k.key_id.clone())
            .collect();
        if let Some(existing) = p.keys.iter().find(|k| k.key_id == key_id) {
            if existing.key_sha256 != key_sha256 {
                return Err(IdentityRefusal::KeyIdTaken(key_id));
            }
            // A retry: the key exists; finish revoking the others if asked.
            if !revoke_others || others.is_empty() {
                return self.participant_result(&participant, false);
            }
        } else {
            if self.identity.key_owner.contains_key(&key_id) {
                return Err(IdentityRefusal::KeyIdTaken(key_id));
            }
            if self.identity.key_hashes.contains(&key_sha256) {
                return Err(IdentityRefusal::KeyReused);
            }
            if p.keys.len() >= KEYS_PER_PARTICIPANT_MAX {
                return Err(IdentityRefusal::LimitReached("the participant holds its most keys"));
            }
            self.apply(
                Op::AddApiKey { participant: participant.clone(), key_id, key_sha256, timestamp_ns },
                out,
            );
        }
        if revoke_others {
            for key_id in others {
                self.apply(Op::RevokeApiKey { participant: participant.clone(), key_id, timestamp_ns }, out);
            }
        }
        self.participant_result(&participant, true)
    }

    /// Revokes one key (revoking a revoked key changes nothing).
    fn revoke_key(
        &mut self,
        participant: String,
        key_id: String,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        let Some(p) = self.identity.participants.get(&participant) else {
            return Err(IdentityRefusal::NotFound(participant));
        };
        let Some(key) = p.keys.iter().find(|k| k.key_id == key_id) else {
            return Err(IdentityRefusal::KeyNotFound { participant, key_id });
        };
        if key.revoked_at_ns.is_some() {
            return self.participant_result(&participant, false);
        }
        self.apply(Op::RevokeApiKey { participant: participant.clone(), key_id, timestamp_ns }, out);
        self.participant_result(&participant, true)
    }

    /// Binds a client certificate (by hash) to a participant; one owner per certificate.
    fn bind_certificate(
        &mut self,
        participant: String,
        cert_sha256: Digest,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        let Some(p) = self.identity.participants.get(&participant) else {
            return Err(IdentityRefusal::NotFound(participant));
        };
        match self.identity.cert_owner.get(&cert_sha256) {
            Some(owner) if *owner == participant => return self.participant_result(&participant, false),
            Some(_) => return Err(IdentityRefusal::CertificateTaken),
            None => {}
        }
        if p.certificates.len() >= CERTIFICATES_PER_PARTICIPANT_MAX {
            return Err(IdentityRefusal::LimitReached("the participant holds its most certificates"));
        }
        self.apply(Op::BindCertificate { participant: participant.clone(), cert_sha256, timestamp_ns }, out);
        self.participant_result(&participant, true)
    }

    /// Unbinds a client certificate (unbinding an unbound one changes nothing).
    fn unbind_certificate(
        &mut self,
        participant: String,
        cert_sha256: Digest,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> IdentityResult {
        if !self.identity.participants.contains_key(&participant) {
            return Err(IdentityRefusal::NotFound(participant));
        }
        if self.identity.cert_owner.get(&cert_sha256) != Some(&participant) {
            return self.participant_result(&participant, false);
        }
        self.apply(
            Op::UnbindCertificate { participant: participant.clone(), cert_sha256, timestamp_ns },
            out,
        );
        self.participant_result(&participant, true)
    }

    /// The participant as a response, `changed` or not.
    fn participant_result(&self, id: &str, changed: bool) -> IdentityResult {
        self.identity
            .participants
            .get(id)
            .cloned()
            .map(|participant| ParticipantChange { participant, changed })
            .ok_or_else(|| IdentityRefusal::NotFound(id.to_owned()))
    }

    /// Applies an identity op (live or replay). Panics on an op that does not fit the state:
    /// that is a corrupt journal (live ops were validated first).
    pub(super) fn apply_identity(&mut self, op: &Op) {
        let state = &mut self.identity;
        fn known<'a>(state: &'a mut IdentityState, id: &str) -> &'a mut Participant {
            state.participants.get_mut(id).unwrap_or_else(|| panic!("journal: unknown participant {id}"))
        }
        match op {
            Op::RegisterParticipant { id, name, role, timestamp_ns } => {
                assert!(!state.participants.contains_key(id), "journal: participant {id} registered twice");
                state.participants.insert(
                    id.clone(),
                    Participant {
                        id: id.clone(),
                        name: name.clone(),
                        role: *role,
                        created_at_ns: *timestamp_ns,
                        keys: Vec::new(),
                        certificates: Vec::new(),
                    },
                );
            }
            Op::AddApiKey { participant, key_id, key_sha256, timestamp_ns } => {
                assert!(!state.key_owner.contains_key(key_id), "journal: key id {key_id} used twice");
                state.key_owner.insert(key_id.clone(), participant.clone());
                state.key_hashes.insert(*key_sha256);
                known(state, participant).keys.push(ApiKey {
                    key_id: key_id.clone(),
                    key_sha256: *key_sha256,
                    created_at_ns: *timestamp_ns,
                    revoked_at_ns: None,
                });
            }
            Op::RevokeApiKey { participant, key_id, timestamp_ns } => {
                let p = known(state, participant);
                let key = p.keys.iter_mut().find(|k| &k.key_id == key_id);
                let key = key.unwrap_or_else(|| panic!("journal: unknown key {key_id}"));
                key.revoked_at_ns = Some(*timestamp_ns);
            }
            Op::BindCertificate { participant, cert_sha256, timestamp_ns } => {
                state.cert_owner.insert(*cert_sha256, participant.clone());
                known(state, participant)
                    .certificates
                    .push(Certificate { sha256: *cert_sha256, bound_at_ns: *timestamp_ns });
            }
            Op::UnbindCertificate { participant, cert_sha256, .. } => {
                state.cert_owner.remove(cert_sha256);
                known(state, participant).certificates.retain(|c| &c.sha256 != cert_sha256);
            }
            _ => unreachable!("not an identity op"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use puente_money::CurrencyTable;

    fn engine() -> Engine {
        Engine::new(CurrencyTable::default())
    }

    fn create(id: &str, role: Role, key_id: &str, hash: u8, bootstrap: bool) -> IdentityRequest {
        IdentityRequest::Create {
            id: id.into(),
            name: format!("{id} inc"),
            role,
            key_id: key_id.into(),
            key_sha256: [hash; 32],
            bootstrap,
        }
    }

    #[test]
    fn bootstrap_once_then_keys_authenticate_until_revoked() {
        let mut e = engine();
        let mut out = Output::default();
        assert_eq!(
            e.identity_command(create("ops", Role::Participant, "k0", 9, true), 1, &mut out),
            Err(IdentityRefusal::BootstrapNeedsOperator)
        );
        assert!(e.identity_command(create("ops", Role::Operator, "k1", 1, true), 1, &mut out).is_ok());
        // A retry of the bootstrap returns the same participant, unchanged.
        let retry = e.identity_command(create("ops", Role::Operator, "k1", 1, true), 2, &mut out);
        assert!(matches!(retry, Ok(ParticipantChange { changed: false, .. })));
        assert_eq!(
            e.identity_command(create("other", Role::Operator, "k2", 2, true), 3, &mut out),
            Err(IdentityRefusal::BootstrapOver)
        );
        assert!(e.identity_command(create("fa", Role::Participant, "k3", 3, false), 4, &mut out).is_ok());
        assert_eq!(
            e.identity_command(create("fa", Role::Operator, "k3", 3, false), 5, &mut out),
            Err(IdentityRefusal::ExistsWithDifferent { id: "fa".into(), field: "role" })
        );
        let credentials = e.identity().credentials();
        assert_eq!(credentials.by_key(&[3; 32]).map(|c| c.participant.as_str()), Some("fa"));
        assert_eq!(credentials.by_key(&[1; 32]).map(|c| c.role), Some(Role::Operator));
        assert_eq!(credentials.operators(), 1);

        // Rotation: a new key, the old one revoked at once.
        let rotate = IdentityRequest::IssueKey {
            participant: "fa".into(),
            key_id: "k4".into(),
            key_sha256: [4; 32],
            revoke_others: true,
        };
        assert!(e.identity_command(rotate.clone(), 6, &mut out).is_ok());
        assert!(matches!(
            e.identity_command(rotate, 7, &mut out),
            Ok(ParticipantChange { changed: false, .. })
        ));
        let credentials = e.identity().credentials();
        assert!(credentials.by_key(&[3; 32]).is_none());
        assert!(credentials.by_key(&[4; 32]).is_some());
        // A key id is unique across the ledger.
        let taken = IdentityRequest::IssueKey {
            participant: "ops".into(),
            key_id: "k4".into(),
            key_sha256: [5; 32],
            revoke_others: false,
        };
        assert_eq!(e.identity_command(taken, 8, &mut out), Err(IdentityRefusal::KeyIdTaken("k4".into())));

        // Replay of the ops rebuilds the same registry.
        let mut replayed = engine();
        let mut sink = Output::default();
        for op in out.ops.clone() {
            replayed.apply(op, &mut sink);
        }
        assert_eq!(replayed.identity().participants, e.identity().participants);
    }

    #[test]
    fn certificates_map_to_one_participant() {
        let mut e = engine();
        let mut out = Output::default();
        e.identity_command(create("ops", Role::Operator, "k1", 1, true), 1, &mut out).unwrap();
        e.identity_command(create("fa", Role::Participant, "k2", 2, false), 2, &mut out).unwrap();
        let bind = |p: &str| IdentityRequest::BindCertificate { participant: p.into(), cert_sha256: [7; 32] };
        e.identity_command(bind("fa"), 3, &mut out).unwrap();
        assert_eq!(e.identity_command(bind("ops"), 4, &mut out), Err(IdentityRefusal::CertificateTaken));
        assert_eq!(
            e.identity().credentials().by_certificate(&[7; 32]).map(|c| c.participant.clone()),
            Some("fa".into())
        );
        let unbind = IdentityRequest::UnbindCertificate { participant: "fa".into(), cert_sha256: [7; 32] };
        e.identity_command(unbind, 5, &mut out).unwrap();
        assert!(e.identity().credentials().by_certificate(&[7; 32]).is_none());
    }
}

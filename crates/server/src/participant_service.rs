//! `puente.v1.ParticipantService`: participants, roles, API keys, client certificates.
//! Who may call each method is decided by the role table (`access::access`), enforced by the auth layer.

use crate::grpc::participant_service_server::ParticipantService;
use puente_ledger::Ledger;
use puente_ledger::identity::{
    Digest, IdentityRequest, ListParticipants, Participant, ParticipantChange, Role,
};
use puente_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::convert::timestamp;
use crate::error::{ApiError, Violation, check};

pub struct ParticipantApi {
    ledger: Ledger,
}

impl ParticipantApi {
    pub fn new(ledger: Ledger) -> ParticipantApi {
        ParticipantApi { ledger }
    }

    async fn run(&self, request: IdentityRequest) -> Result<(Participant, bool), ApiError> {
        let ParticipantChange { participant, changed } = self.ledger.call(request).await??;
        Ok((participant, changed))
    }
}

fn role_out(role: Role) -> pb::Role {
    match role {
        Role::Operator => pb::Role::Operator,
        Role::Participant => pb::Role::Participant,
    }
}

pub fn participant_out(p: &Participant) -> pb::Participant {
    pb::Participant {
        id: p.id.clone(),
        display_name: p.name.clone(),
        role: role_out(p.role) as i32,
        create_time: timestamp(p.created_at_ns),
        keys: p
            .keys
            .iter()
            .map(|k| pb::ApiKeyInfo {
                key_id: k.key_id.clone(),
                create_time: timestamp(k.created_at_ns),
                revoke_time: k.revoked_at_ns.and_then(timestamp),
            })
            .collect(),
        certificate_sha256: p.certificates.iter().map(|c| hex::encode(c.sha256)).collect(),
    }
}

fn digest(text: &str, field: &str, violations: &mut Vec<Violation>) -> Digest {
    let mut out = [0u8; 32];
    if text.len() != 64 || hex::decode_to_slice(text, &mut out).is_err() {
        violations.push(Violation::new(field, "64 hex digits (a SHA-256)"));
    }
    out
}

fn new_key(key: &Option<pb::NewApiKey>, field: &str, violations: &mut Vec<Violation>) -> (String, Digest) {
    match key {
        Some(key) => {
            (key.key_id.clone(), digest(&key.key_sha256, &format!("{field}.key_sha256"), violations))
        }
        None => {
            violations.push(Violation::new(field, "required: the new key's id and SHA-256"));
            (String::new(), [0; 32])
        }
    }
}

#[tonic::async_trait]
impl ParticipantService for ParticipantApi {
    async fn bootstrap_operator(
        &self,
        request: Request<pb::BootstrapOperatorRequest>,
    ) -> Result<Response<pb::BootstrapOperatorResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let (key_id, key_sha256) = new_key(&r.key, "key", &mut violations);
        check(violations)?;
        let (participant, created) = self
            .run(IdentityRequest::Create {
                id: r.participant_id,
                name: r.display_name,
                role: Role::Operator,
                key_id,
                key_sha256,
                bootstrap: true,
            })
            .await?;
        tracing::warn!(participant = %participant.id, created, "operator bootstrapped");
        Ok(Response::new(pb::BootstrapOperatorResponse {
            participant: Some(participant_out(&participant)),
            created,
        }))
    }

    async fn create_participant(
        &self,
        request: Request<pb::CreateParticipantRequest>,
    ) -> Result<Response<pb::CreateParticipantResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let (key_id, key_sha256) = new_key(&r.key, "key", &mut violations);
        let role = match pb::Role::try_from(r.role) {
            Ok(pb::Role::Operator) => Role::Operator,
            Ok(pb::Role::Participant) => Role::Participant,
            _ => {
                violations.push(Violation::new("role", "ROLE_OPERATOR or ROLE_PARTICIPANT"));
                Role::Participant
            }
        };
        check(violations)?;
        let (participant, created) = self
            .run(IdentityRequest::Create {
                id: r.participant_id,
                name: r.display_name,
                role,
                key_id,
                key_sha256,
                bootstrap: false,
            })
            .await?;
        tracing::info!(participant = %participant.id, role = role.code(), created, "participant created");
        Ok(Response::new(pb::CreateParticipantResponse {
            participant: Some(participant_out(&participant)),
            created,
        }))
    }

    async fn get_participant(
        &self,
        request: Request<pb::GetParticipantRequest>,
    ) -> Result<Response<pb::GetParticipantResponse>, Status> {
        let (participant, _) = self.run(IdentityRequest::Get(request.into_inner().participant_id)).await?;
        Ok(Response::new(pb::GetParticipantResponse { participant: Some(participant_out(&participant)) }))
    }

    async fn list_participants(
        &self,
        _: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        let participants = self.ledger.call(ListParticipants).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListParticipantsResponse {
            participants: participants.iter().map(participant_out).collect(),
        }))
    }

    async fn issue_api_key(
        &self,
        request: Request<pb::IssueApiKeyRequest>,
    ) -> Result<Response<pb::IssueApiKeyResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let (key_id, key_sha256) = new_key(&r.key, "key", &mut violations);
        check(violations)?;
        let (participant, changed) = self
            .run(IdentityRequest::IssueKey {
                participant: r.participant_id,
                key_id: key_id.clone(),
                key_sha256,
                revoke_others: r.revoke_other_keys,
            })
            .await?;
        tracing::info!(participant = %participant.id, key_id = %key_id, changed, revoke_others = r.revoke_other_keys, "API key issued");
        Ok(Response::new(pb::IssueApiKeyResponse { participant: Some(participant_out(&participant)) }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let r = request.into_inner();
        let (participant, changed) = self
            .run(IdentityRequest::RevokeKey { participant: r.participant_id, key_id: r.key_id.clone() })
            .await?;
        tracing::info!(participant = %participant.id, key_id = %r.key_id, changed, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse { participant: Some(participant_out(&participant)) }))
    }

    async fn bind_certificate(
        &self,
        request: Request<pb::BindCertificateRequest>,
    ) -> Result<Response<pb::BindCertificateResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let cert_sha256 = digest(&r.certificate_sha256, "certificate_sha256", &mut violations);
        check(violations)?;
        let (participant, _) =
            self.run(IdentityRequest::BindCertificate { participant: r.participant_id, cert_sha256 }).await?;
        Ok(Response::new(pb::BindCertificateResponse { participant: Some(participant_out(&participant)) }))
    }

    async fn unbind_certificate(
        &self,
        request: Request<pb::UnbindCertificateRequest>,
    ) -> Result<Response<pb::UnbindCertificateResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let cert_sha256 = digest(&r.certificate_sha256, "certificate_sha256", &mut violations);
        check(violations)?;
        let (participant, _) = self
            .run(IdentityRequest::UnbindCertificate { participant: r.participant_id, cert_sha256 })
            .await?;
        Ok(Response::new(pb::UnbindCertificateResponse { participant: Some(participant_out(&participant)) }))
    }

    async fn get_caller(
        &self,
        request: Request<pb::GetCallerRequest>,
    ) -> Result<Response<pb::GetCallerResponse>, Status> {
        let caller = auth::caller(&request)?;
        Ok(Response::new(pb::GetCallerResponse {
            participant_id: caller.participant,
            role: role_out(caller.role) as i32,
            key_id: caller.key_id.unwrap_or_default(),
        }))
    }
}

//! `puente participants ...` and `puente whoami`: who may call, and with which credentials.
//!
//! Keys are made here, on the operator's machine; the server receives only their SHA-256.
//! A new key is printed once (or written to `--key-file` with mode 0600) and never again.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use puente_client::{Client, NewApiKey, pb};
use serde_json::{Value, json};

use super::{CliError, Output, time_text};

#[derive(Subcommand, Debug)]
pub enum ParticipantsCommand {
    /// Register the first operator of a new ledger (no key needed; from the server's own
    /// machine, only while no operator exists). Prints the operator's key once.
    Bootstrap {
        /// Participant id of the operator.
        #[arg(default_value = "operator")]
        id: String,
        /// The first operator's name.
        #[arg(long, default_value = "Puente operator")]
        name: String,
        /// Write the key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Register a participant with its first API key (operators). Prints the key once.
    Create {
        /// Participant id: lower-case letters, digits, ".", "_" or "-" (at most 64 bytes).
        id: String,
        /// Display name [default: none].
        #[arg(long, default_value = "", hide_default_value = true)]
        name: String,
        /// participant (sees and moves only its own accounts) or operator.
        #[arg(long, default_value = "participant")]
        role: String,
        /// Write the key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Show a participant with its keys (ids only) and certificates.
    Get {
        /// Participant id.
        id: String,
    },
    /// List participants.
    List,
    /// Issue a new key. The old keys are revoked in the same write unless --keep-old-keys
    /// (then revoke them with `revoke-key` once every client uses the new one).
    RotateKey {
        /// Participant id.
        id: String,
        /// Keep the older keys working (default: revoke them once the new key is issued).
        #[arg(long)]
        keep_old_keys: bool,
        /// Write the new key to this file (mode 0600) instead of standard output.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Revoke one key at once.
    RevokeKey {
        /// Participant id.
        id: String,
        /// Id of the key to revoke (as `participants get` lists it).
        key_id: String,
    },
    /// Let a client certificate (PEM) authenticate as this participant under mutual TLS.
    BindCert {
        /// Participant id.
        id: String,
        /// Client certificate (PEM) that authenticates as this participant under mutual TLS.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Stop a client certificate from authenticating.
    UnbindCert {
        /// Participant id.
        id: String,
        /// The bound client certificate (PEM) to unbind.
        #[arg(long)]
        cert: PathBuf,
    },
}

pub async fn run(client: &mut Client, command: ParticipantsCommand, out: &Output) -> Result<(), CliError> {
    match command {
        ParticipantsCommand::Bootstrap { id, name, key_file } => {
            let file = SecretFile::create(key_file.as_deref())?;
            let (participant, key) = client.bootstrap_operator(&id, &name).await?;
            show_new_key(&participant, &key, file, out)
        }
        ParticipantsCommand::Create { id, name, role, key_file } => {
            let role = parse_role(&role)?;
            let file = SecretFile::create(key_file.as_deref())?;
            let (participant, key) = client.create_participant(&id, &name, role).await?;
            show_new_key(&participant, &key, file, out)
        }
        ParticipantsCommand::Get { id } => {
            let response = client
                .participants()
                .get_participant(pb::GetParticipantRequest { participant_id: id })
                .await
                .map_err(status)?;
            let p = response.into_inner().participant.unwrap_or_default();
            out.print(participant_json(&p), || participant_table(std::slice::from_ref(&p)));
            Ok(())
        }
        ParticipantsCommand::List => {
            let response = client
                .participants()
                .list_participants(pb::ListParticipantsRequest {})
                .await
                .map_err(status)?;
            let all = response.into_inner().participants;
            out.print(
                json!({ "participants": all.iter().map(participant_json).collect::<Vec<_>>() }),
                || participant_table(&all),
            );
            Ok(())
        }
        ParticipantsCommand::RotateKey { id, keep_old_keys, key_file } => {
            let file = SecretFile::create(key_file.as_deref())?;
            let (participant, key) = client.rotate_key(&id, !keep_old_keys).await?;
            show_new_key(&participant, &key, file, out)
        }
        ParticipantsCommand::RevokeKey { id, key_id } => {
            let p = client.revoke_key(&id, &key_id).await?;
            out.print(participant_json(&p), || format!("revoked key {key_id} of {id}\n"));
            Ok(())
        }
        ParticipantsCommand::BindCert { id, cert } => bind_certificate(client, id, &cert, true, out).await,
        ParticipantsCommand::UnbindCert { id, cert } => bind_certificate(client, id, &cert, false, out).await,
    }
}

/// The role `--role` names.
fn parse_role(role: &str) -> Result<pb::Role, CliError> {
    Ok(match role {
        "participant" => pb::Role::Participant,
        "operator" => pb::Role::Operator,
        other => {
            return Err(CliError::Usage(format!("--role must be participant or operator, not {other:?}")));
        }
    })
}

/// `puente participants bind-cert` (`bind`) and `unbind-cert`: the certificate in `cert`
/// authenticates `id` from now on, or no longer does.
async fn bind_certificate(
    client: &mut Client,
    id: String,
    cert: &Path,
    bind: bool,
    out: &Output,
) -> Result<(), CliError> {
    let sha = certificate_sha256(cert)?;
    let (participant_id, certificate_sha256) = (id.clone(), sha.clone());
    let mut participants = client.participants();
    let participant = if bind {
        let request = pb::BindCertificateRequest { participant_id, certificate_sha256 };
        participants.bind_certificate(request).await.map_err(status)?.into_inner().participant
    } else {
        let request = pb::UnbindCertificateRequest { participant_id, certificate_sha256 };
        participants.unbind_certificate(request).await.map_err(status)?.into_inner().participant
    };
    let p = participant.unwrap_or_default();
    let now = if bind { "now authenticates" } else { "no longer authenticates" };
    out.print(participant_json(&p), || format!("certificate {sha} {now} {id}\n"));
    Ok(())
}

pub async fn whoami(client: &mut Client, out: &Output) -> Result<(), CliError> {
    let me = client.whoami().await?;
    let role = role_name(me.role);
    out.print(json!({ "participant_id": me.participant_id, "role": role, "key_id": me.key_id }), || {
        format!(
            "{} ({role}, key {})\n",
            me.participant_id,
            if me.key_id.is_empty() { "-" } else { &me.key_id }
        )
    });
    Ok(())
}

fn status(error: tonic::Status) -> CliError {
    CliError::from(puente_client::ClientError::from(error))
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Operator) => "operator",
        Ok(pb::Role::Participant) => "participant",
        _ => "unspecified",
    }
}

/// Prints (or writes) a new key exactly once.
fn show_new_key(
    participant: &pb::Participant,
    key: &NewApiKey,
    file: Option<SecretFile>,
    out: &Output,
) -> Result<(), CliError> {
    let key_file = file.as_ref().map(|f| f.path.clone());
    let key_file = key_file.as_deref();
    if let Some(file) = file {
        file.write(&key.key)?;
    }
    let shown = if key_file.is_some() { Value::Null } else { Value::String(key.key.clone()) };
    let mut value = participant_json(participant);
    value["new_key_id"] = json!(key.key_id);
    value["api_key"] = shown;
    out.print(value, || match key_file {
        Some(path) => format!(
            "{} ({}): key {} written to {} (mode 0600)\n",
            participant.id,
            role_name(participant.role),
            key.key_id,
            path.display()
        ),
        None => format!(
            "{} ({}): new API key {}\n\n    {}\n\nThis is the only time the key is shown: store it in a secret manager now.\n\
             Put it in a file (mode 0600) named by PUENTE_API_KEY_FILE, or in PUENTE_API_KEY; the server keeps only its SHA-256.\n",
            participant.id,
            role_name(participant.role),
            key.key_id,
            key.key
        ),
    });
    Ok(())
}

/// A key file made *before* the server is asked for anything (so a bad path never loses a
/// key the server already registered): created empty with mode 0600 (never readable by others,
/// even for a moment), filled once the key exists, removed if the call fails.
struct SecretFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl SecretFile {
    fn create(path: Option<&Path>) -> Result<Option<SecretFile>, CliError> {
        let Some(path) = path else { return Ok(None) };
        // A missing parent (e.g. ~/.puente) is made private to the user.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(parent).map_err(|e| {
                CliError::Usage(format!("--key-file: cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            CliError::Usage(format!("--key-file {}: {e} (it must not exist yet)", path.display()))
        })?;
        Ok(Some(SecretFile { path: path.to_owned(), file: Some(file) }))
    }

    fn write(mut self, secret: &str) -> Result<(), CliError> {
        let Some(mut file) = self.file.take() else { return Ok(()) };
        writeln!(file, "{secret}")
            .and_then(|_| file.sync_all())
            .map_err(|e| CliError::Usage(format!("--key-file {}: {e}", self.path.display())))
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        // Still unwritten: the server call failed; leave no empty key file behind.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// SHA-256 (hex) of the first certificate in a PEM file, over its DER bytes.
fn certificate_sha256(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--cert {}: {e}", path.display())))?;
    let der = pem_first_certificate(&text)
        .ok_or_else(|| CliError::Usage(format!("--cert {}: no PEM CERTIFICATE block", path.display())))?;
    Ok(hex::encode(ring::digest::digest(&ring::digest::SHA256, &der)))
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM text.
pub fn pem_first_certificate(text: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(text.as_bytes()).ok().map(|der| der.to_vec())
}

fn participant_json(p: &pb::Participant) -> Value {
    json!({
        "id": p.id, "display_name": p.display_name, "role": role_name(p.role),
        "create_time": time_text(&p.create_time),
        "keys": p.keys.iter().map(|k| json!({
            "key_id": k.key_id, "create_time": time_text(&k.create_time),
            "revoke_time": time_text(&k.revoke_time), "live": k.revoke_time.is_none(),
        })).collect::<Vec<_>>(),
        "certificate_sha256": p.certificate_sha256,
    })
}

fn participant_table(all: &[pb::Participant]) -> String {
    let mut text = format!("{:<24} {:<12} {:<24} {:<6} {}\n", "ID", "ROLE", "NAME", "CERTS", "LIVE KEYS");
    for p in all {
        let live: Vec<&str> =
            p.keys.iter().filter(|k| k.revoke_time.is_none()).map(|k| k.key_id.as_str()).collect();
        text.push_str(&format!(
            "{:<24} {:<12} {:<24} {:<6} {}\n",
            p.id,
            role_name(p.role),
            p.display_name,
            p.certificate_sha256.len(),
            live.join(",")
        ));
    }
    text
}

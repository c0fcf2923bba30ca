//! A client of several nodes (`puente serve --journal-url`: one leader, hot standbys) that
//! follows the leader and retries through a leader change.
//!
//! A write sent to a standby is refused with UNAVAILABLE, reason NOT_LEADER and the leader's
//! address; a node that stopped answers nothing; an old leader that lost an append's outcome
//! answers UNAVAILABLE. In each case the write is sent again, to the named leader or the next
//! endpoint, until [`FAILOVER_WAIT_MS`] has passed. That is safe because every write carries
//! its ids: a retry of a write that did commit returns its first outcome (flagged as replayed)
//! and moves nothing twice. Reads go to whichever node answers.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Client, ClientError, ConnectOptions, pb};

/// How long a call keeps retrying through a leader change before it gives up.
pub const FAILOVER_WAIT_MS: u64 = 30_000;
/// First and longest pause between retries.
const RETRY_PAUSE_MS_MIN: u64 = 25;
const RETRY_PAUSE_MS_MAX: u64 = 500;
/// Most endpoints a cluster client accepts.
pub const ENDPOINTS_MAX: usize = 16;

/// A client of a cluster: give it every node's address.
#[derive(Debug)]
pub struct ClusterClient {
    endpoints: Vec<String>,
    options: ConnectOptions,
    /// The node in use and its connection.
    current: Option<(String, ClientHandle)>,
    /// Where to go next: the leader a standby named, else the next endpoint.
    next: usize,
    hint: Option<String>,
    failover_wait: Duration,
}

#[derive(Clone)]
struct ClientHandle(Client);

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl ClusterClient {
    /// A client of the nodes at `endpoints` ("host:port", at most [`ENDPOINTS_MAX`]); connects
    /// on first use.
    pub fn new(endpoints: &[&str], options: ConnectOptions) -> Result<ClusterClient, ClientError> {
        if endpoints.is_empty() || endpoints.len() > ENDPOINTS_MAX {
            return Err(ClientError::Status {
                code: tonic::Code::InvalidArgument,
                message: format!("1 to {ENDPOINTS_MAX} endpoints"),
                reason: None,
                violations: Vec::new(),
                leader_address: None,
            });
        }
        Ok(ClusterClient {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            options,
            current: None,
            next: 0,
            hint: None,
            failover_wait: Duration::from_millis(FAILOVER_WAIT_MS),
        })
    }

    /// How long a call retries through a leader change [default: [`FAILOVER_WAIT_MS`]].
    pub fn failover_wait(mut self, wait: Duration) -> ClusterClient {
        self.failover_wait = wait;
        self
    }

    /// The node the last call went to.
    pub fn current_endpoint(&self) -> Option<&str> {
        self.current.as_ref().map(|(addr, _)| addr.as_str())
    }

    /// Creates accounts on the leader (see [`Client::create_accounts`]), retrying through a
    /// leader change.
    pub async fn create_accounts(
        &mut self,
        accounts: Vec<pb::Account>,
    ) -> Result<Vec<pb::CreateAccountResult>, ClientError> {
        self.call(|mut client| {
            let accounts = accounts.clone();
            async move { client.create_accounts(accounts).await }
        })
        .await
    }

    /// Posts transfers on the leader (see [`Client::create_transfers`]), retrying through a
    /// leader change: results of transfers that had committed come back with `replayed`.
    pub async fn create_transfers(
        &mut self,
        transfers: Vec<pb::Transfer>,
    ) -> Result<Vec<pb::CreateTransferResult>, ClientError> {
        self.call(|mut client| {
            let transfers = transfers.clone();
            async move { client.create_transfers(transfers).await }
        })
        .await
    }

    /// An account, from whichever node answers.
    pub async fn get_account(&mut self, id: &str) -> Result<pb::Account, ClientError> {
        self.call(|mut client| {
            let id = id.to_owned();
            async move { client.get_account(&id).await }
        })
        .await
    }

    /// A transfer, from whichever node answers.
    pub async fn get_transfer(&mut self, id: &str) -> Result<pb::Transfer, ClientError> {
        self.call(|mut client| {
            let id = id.to_owned();
            async move { client.get_transfer(&id).await }
        })
        .await
    }

    /// Runs `call` against the current node, moving on (to the named leader, else the next
    /// endpoint) while the cluster is changing leader, until the failover wait has passed.
    pub async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.failover_wait;
        let mut pause = Duration::from_millis(RETRY_PAUSE_MS_MIN);
        loop {
            let outcome = match self.connected().await {
                Ok(client) => call(client).await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !self.move_on(&error) || Instant::now() + pause > deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(RETRY_PAUSE_MS_MAX));
        }
    }

    async fn connected(&mut self) -> Result<Client, ClientError> {
        if let Some((_, client)) = &self.current {
            return Ok(client.0.clone());
        }
        let addr = match self.hint.take() {
            Some(leader) => leader,
            None => {
                let addr = self.endpoints[self.next % self.endpoints.len()].clone();
                self.next = self.next.wrapping_add(1);
                addr
            }
        };
        let client = Client::connect_with(&addr, &self.options).await?;
        self.current = Some((addr, ClientHandle(client.clone())));
        Ok(client)
    }

    /// After a failed call: should it be sent again (elsewhere)? A standby's refusal names the
    /// leader; a node that does not answer, or lost an outcome, means the next endpoint.
    fn move_on(&mut self, error: &ClientError) -> bool {
        let retry = match error {
            ClientError::Connect { .. } => true,
            ClientError::Status { code, reason, leader_address, .. } => {
                if reason.as_deref() == Some(crate::NOT_LEADER_REASON) {
                    self.hint = leader_address.clone();
                    true
                } else {
                    // UNAVAILABLE: the node stopped or lost an outcome; UNKNOWN/CANCELLED: the
                    // connection broke mid-call (tonic's transport errors).
                    matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
                }
            }
            ClientError::InvalidKey(_) | ClientError::KeyFile { .. } | ClientError::Refused { .. } => false,
        };
        if retry {
            self.current = None;
        }
        retry
    }
}

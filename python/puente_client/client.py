"""`PuenteClient`: one connection to a Puente server, with typed wrappers for every service.
The wrappers live with their service (`ledger.py`, `fx.py`, `settlement.py`, `holders.py`);
this module holds the connection, the credentials, participant administration and the health
check."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

import grpc

from ._stubs import (
    fx_pb_grpc,
    holders_pb_grpc,
    participants_pb,
    participants_pb_grpc,
    pb_grpc,
    settlement_pb_grpc,
)
from .auth import NewApiKey, _BearerAuth, api_key_from_env, new_api_key
from .errors import PuenteError
from .fx import _FxMethods
from .holders import _HolderMethods
from .ledger import _LedgerMethods
from .settlement import _SettlementMethods

__all__ = ["ENDPOINTS_MAX", "FAILOVER_WAIT_SECONDS", "MESSAGE_BYTES_MAX", "PuenteClient"]

#: Largest request or response message the server accepts or sends: 64 MiB.
MESSAGE_BYTES_MAX = 64 * 1024 * 1024
#: How long a call to a cluster keeps retrying through a leader change.
FAILOVER_WAIT_SECONDS = 30.0
#: Most endpoints a client accepts.
ENDPOINTS_MAX = 16

_Response = TypeVar("_Response")


class PuenteClient(_LedgerMethods, _FxMethods, _SettlementMethods, _HolderMethods):
    """A connection to a Puente server (one HTTP/2 channel). Use as a context manager or call
    `close()`. Every method takes an optional `timeout` in seconds (default: `timeout` given
    here, 30 s).

    Several nodes (`puente serve --journal-url`: one leader, hot standbys): give every address,
    `PuenteClient(["host-a:50051", "host-b:50051"])`. Calls follow the leader and are retried
    through a leader change for up to `failover_wait` seconds.

    Credentials: the API key is sent as `authorization: Bearer <key>` on every call. It is,
    in this order: `api_key` if given (`api_key=""`: no key at all); else the contents of the
    file named by the `PUENTE_API_KEY_FILE` environment variable; else `PUENTE_API_KEY`
    (`api_key_from_env`, the same order as the `puente` CLI). For TLS give `root_certificates`
    (PEM bytes of the CA); for mutual TLS also `private_key` and `certificate_chain`."""

    def __init__(
        self,
        addr: str | Sequence[str],
        *,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        failover_wait: float = FAILOVER_WAIT_SECONDS,
    ) -> None:
        endpoints = [addr] if isinstance(addr, str) else list(addr)
        if not 1 <= len(endpoints) <= ENDPOINTS_MAX:
            raise ValueError(f"1 to {ENDPOINTS_MAX} endpoints")
        #: Every node's address (several: a cluster, see `_call` and README "Running two nodes").
        self.endpoints = [e.split("://", 1)[1] if "://" in e else e for e in endpoints]
        self.timeout = timeout
        self.failover_wait = failover_wait
        self._owns_channel = channel is None
        self._next_endpoint = 1
        self._credentials = (
            (root_certificates, private_key, certificate_chain)
            if root_certificates is not None or certificate_chain is not None
            else None
        )
        self._key = api_key if api_key is not None else api_key_from_env()
        if channel is None:
            channel = self._open(self.endpoints[0])
        self._use(self.endpoints[0], channel)

    def _open(self, target: str) -> grpc.Channel:
        options = [
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ]
        if self._credentials is not None:
            root_certificates, private_key, certificate_chain = self._credentials
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            channel = grpc.secure_channel(target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        if self._key:
            channel = grpc.intercept_channel(channel, _BearerAuth(self._key))
        return channel

    def _use(self, target: str, channel: grpc.Channel) -> None:
        #: The node in use.
        self.addr = target
        self.channel = channel
        #: The generated stub, for anything the wrapper does not cover.
        self.stub = pb_grpc.LedgerServiceStub(self.channel)
        #: The generated FX stub.
        self.fx_stub = fx_pb_grpc.FxServiceStub(self.channel)
        #: The generated participant-administration stub.
        self.participants_stub = participants_pb_grpc.ParticipantServiceStub(self.channel)
        #: The generated settlement stub.
        self.settlement_stub = settlement_pb_grpc.SettlementServiceStub(self.channel)
        #: The generated account-holder stub.
        self.holders_stub = holders_pb_grpc.HolderServiceStub(self.channel)

    def _call(self, method: Callable[..., _Response], request: Any, timeout: float | None) -> _Response:
        """One call; with several endpoints, sent again while the cluster changes leader: to
        the leader a standby names (NOT_LEADER), else to the next node, until `failover_wait`
        seconds have passed. Safe for writes: they carry ids, and the retry of a write that
        did commit returns its first outcome (`replayed`)."""
        if len(self.endpoints) == 1 or not self._owns_channel:
            return super()._call(method, request, timeout)
        found = self._stub_method(method)
        deadline = time.monotonic() + self.failover_wait
        pause = 0.025
        while True:
            try:
                return super()._call(method, request, timeout)
            except PuenteError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE or found is None:
                    raise
                if time.monotonic() + pause > deadline:
                    raise
                leader = error.metadata.get("leader_address") if error.reason == "NOT_LEADER" else None
                if leader is None:
                    leader = self.endpoints[self._next_endpoint % len(self.endpoints)]
                    self._next_endpoint += 1
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                self.channel.close()
                self._use(leader, self._open(leader))
                stub_name, method_name = found
                method = getattr(getattr(self, stub_name), method_name)

    def _stub_method(self, method: Callable[..., Any]) -> tuple[str, str] | None:
        """Which stub attribute and RPC `method` is, to call it again on another node."""
        for stub_name in ("stub", "fx_stub", "participants_stub", "settlement_stub", "holders_stub"):
            for name, value in vars(getattr(self, stub_name)).items():
                if value is method:
                    return stub_name, name
        return None

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> "PuenteClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- participants

    def whoami(self, *, timeout: float | None = None) -> "participants_pb.GetCallerResponse":
        """Who this client's credentials belong to."""
        return self._call(self.participants_stub.GetCaller, participants_pb.GetCallerRequest(), timeout)

    def create_participant(
        self, participant_id: str, display_name: str = "", *, operator: bool = False, timeout: float | None = None
    ) -> tuple["participants_pb.Participant", NewApiKey]:
        """Registers a participant (operators only) and returns its first key: show it once."""
        key = new_api_key()
        role = participants_pb.ROLE_OPERATOR if operator else participants_pb.ROLE_PARTICIPANT
        request = participants_pb.CreateParticipantRequest(
            participant_id=participant_id, display_name=display_name, role=role, key=key.proto()
        )
        response = self._call(self.participants_stub.CreateParticipant, request, timeout)
        return response.participant, key

    # ---- health

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard gRPC health check: "SERVING", "NOT_SERVING", ... for `service` (""
        the server as a whole, or "puente.v1.LedgerService")."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

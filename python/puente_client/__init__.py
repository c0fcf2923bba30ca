"""Python client for Puente's gRPC API (`puente.v1.LedgerService`).

A thin, typed wrapper over the generated stubs::

    from decimal import Decimal
    from puente_client import PuenteClient, RefusedError

    with PuenteClient("127.0.0.1:50051") as ledger:
        bank = ledger.create_account("acme-bank", "USD")
        wallet = ledger.create_account("acme-bank", "USD", no_overdraft=True)
        ledger.transfer(bank.id, wallet.id, "USD", Decimal("100.00"))
        try:
            ledger.transfer(wallet.id, bank.id, "USD", "250.00")
        except RefusedError as refused:
            assert refused.code == "EXCEEDS_CREDITS"

Conventions (the same as the API's):

- Amounts are `decimal.Decimal`, `str` or `int`, sent as decimal text. A `float` is refused
  with `TypeError`: binary floating point cannot hold 0.10 exactly. The server rejects, never
  rounds, an amount with more decimal places than its currency has.
- Ids are `uuid.UUID` or UUID text; the id of a new account or transfer is a random UUID unless
  given. A transfer id is its idempotency key: retrying with the same id is safe.
- A request that fails as a whole raises `PuenteError` (gRPC code, `google.rpc.ErrorInfo`
  reason, `google.rpc.BadRequest` field violations). A single event that the ledger refuses
  (`EXCEEDS_CREDITS`, ...) raises `RefusedError` from the single-event helpers; the batch call
  `create_transfers` returns every result as it is.
- Results are the generated protobuf messages (`Account`, `Transfer`, ...), re-exported here.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import os
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple, Union

import grpc

try:
    from .gen.puente.v1 import fx_pb2 as fx_pb
    from .gen.puente.v1 import fx_pb2_grpc as fx_pb_grpc
    from .gen.puente.v1 import ledger_pb2 as pb
    from .gen.puente.v1 import ledger_pb2_grpc as pb_grpc
    from .gen.puente.v1 import participants_pb2 as participants_pb
    from .gen.puente.v1 import participants_pb2_grpc as participants_pb_grpc
except ImportError as error:  # pragma: no cover - a setup problem, not a runtime one
    raise ImportError(
        "puente_client's generated stubs are missing or stale: run "
        "`python python/generate_stubs.py` from the repository root "
        "(scripts/python-test does it)"
    ) from error

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_ENV",
    "api_key_from_env",
    "NewApiKey",
    "new_api_key",
    "participants_pb",
    "FX_SEGMENTS",
    "verify_quote",
    "fx_pb",
    "Account",
    "AmountLike",
    "CreateAccountResult",
    "CreateTransferResult",
    "FieldViolation",
    "GetAccountStatementResponse",
    "IdLike",
    "PuenteClient",
    "PuenteError",
    "RefusedError",
    "StatementLine",
    "Transfer",
    "TransferKind",
    "TransferState",
    "EntryKind",
    "make_post",
    "make_transfer",
    "make_void",
    "new_id",
    "pb",
    "pb_grpc",
    "to_decimal",
]

Account = pb.Account
Transfer = pb.Transfer
CreateAccountResult = pb.CreateAccountResult
CreateTransferResult = pb.CreateTransferResult
GetAccountStatementResponse = pb.GetAccountStatementResponse
StatementLine = pb.StatementLine
TransferKind = pb.TransferKind
TransferState = pb.TransferState
EntryKind = pb.EntryKind

AmountLike = Union[decimal.Decimal, str, int]
IdLike = Union[uuid.UUID, str]
TimeLike = Union[datetime.datetime, None]

#: Largest request or response message the server accepts or sends: 64 MiB.
MESSAGE_BYTES_MAX = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Errors


class FieldViolation(NamedTuple):
    """One bad field of a request: its path (`transfers[0].amount.value`) and what is wrong."""

    field: str
    description: str


def _headline(message: str, violations: list[FieldViolation]) -> str:
    """The server's message spells the violations out ("invalid request: transfers[0].amount
    .value: ..."); when it does, only what precedes them, so each is shown once."""
    if not violations or not all(v.description in message for v in violations):
        return message
    starts = []
    for v in violations:
        at = message.find(f"{v.field}: {v.description}")
        starts.append(at if at >= 0 else message.find(v.description))
    return message[: min(starts)].rstrip(" :;,")


class PuenteError(Exception):
    """A failed RPC: the gRPC status, decoded with its `google.rpc` details.

    Attributes:
        code: the `grpc.StatusCode` (e.g. `INVALID_ARGUMENT`, `NOT_FOUND`).
        message: the status message.
        reason: the `google.rpc.ErrorInfo` reason (`INVALID_FIELD`, `ACCOUNT_NOT_FOUND`, ...).
        domain: the ErrorInfo domain (`puente.v1`).
        metadata: the ErrorInfo metadata (e.g. `{"resource": "account", "id": ...}`).
        field_violations: the `google.rpc.BadRequest` violations.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        text = f"{code.name}"
        if reason:
            text += f" {reason}"
        headline = _headline(message, self.field_violations)
        if headline:
            text += f": {headline}"
        for v in self.field_violations:
            text += f"\n  {v.field}: {v.description}"
        super().__init__(text)

    @property
    def fields(self) -> list[str]:
        """The paths of the bad fields."""
        return [v.field for v in self.field_violations]

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "PuenteError":
        """Decodes the `grpc-status-details-bin` trailer of a failed call."""
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = (error.details() if hasattr(error, "details") else None) or ""
        reason = domain = None
        metadata: dict[str, str] = {}
        violations: list[FieldViolation] = []
        try:
            status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        except ValueError:  # code or message of the details disagree with the status
            status = None
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations.extend(
                        FieldViolation(v.field, v.description) for v in bad.field_violations
                    )
        return cls(
            code,
            message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=violations,
        )


class RefusedError(Exception):
    """The ledger refused one event (`EXCEEDS_CREDITS`, `EXISTS_WITH_DIFFERENT_AMOUNT`, ...).

    Attributes:
        code: the result code.
        result: the `CreateTransferResult` or `CreateAccountResult`, when there is one.
    """

    def __init__(
        self,
        code: str,
        result: CreateTransferResult | CreateAccountResult | None = None,
    ) -> None:
        self.code = code
        self.result = result
        super().__init__(code)

    @property
    def replayed(self) -> bool:
        """True when this id failed before and the first outcome was returned."""
        return bool(self.result is not None and self.result.replayed)


# --------------------------------------------------------------------------------------------
# Values


class NewApiKey(NamedTuple):
    """A new API key made on this machine: send only `sha256_hex`; show `key` once."""

    key_id: str
    key: str
    sha256_hex: str

    def __repr__(self) -> str:  # never show the secret
        return f"NewApiKey(key_id={self.key_id!r}, key=[redacted])"

    def proto(self) -> "participants_pb.NewApiKey":
        return participants_pb.NewApiKey(key_id=self.key_id, key_sha256=self.sha256_hex)


def new_api_key() -> NewApiKey:
    """64 bits of key id and 256 bits of secret from the OS's CSPRNG, in Puente's key format."""
    key_id = secrets.token_hex(8)
    key = f"puente_{key_id}_{secrets.token_hex(32)}"
    return NewApiKey(key_id, key, hashlib.sha256(key.encode()).hexdigest())


def new_id() -> str:
    """A new random id (UUID v4 text) for an account or a transfer."""
    return str(uuid.uuid4())


def _id(value: IdLike | None, name: str = "id", *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise ValueError(f"{name} is required")
        return ""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a uuid.UUID or str, not {type(value).__name__}")


def _amount(value: AmountLike | None, name: str = "amount") -> str:
    """Decimal text for the wire. Never accepts a float."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            f"{name} must be a decimal.Decimal, str or int, not {type(value).__name__} "
            "(floats cannot represent money exactly)"
        )
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be finite, not {value}")
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a decimal.Decimal, str or int, not {type(value).__name__}")


def to_decimal(text: str) -> decimal.Decimal:
    """The API's decimal text (an amount or a balance) as a `Decimal`; empty text is 0."""
    return decimal.Decimal(text) if text else decimal.Decimal(0)


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if not metadata:
        return {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("metadata keys and values must be str")
    return dict(metadata)


def _timestamp(value: TimeLike, name: str):
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"{name} must be a datetime.datetime, not {type(value).__name__}")
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    ts.FromDatetime(value.astimezone(datetime.timezone.utc))
    return ts


def make_transfer(
    debit: IdLike,
    credit: IdLike,
    currency: str,
    amount: AmountLike,
    *,
    pending: bool = False,
    timeout_ms: int = 0,
    id: IdLike | None = None,
    reference: str = "",
    linked: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Transfer:
    """A single-phase (or, with `pending=True`, a pending) transfer for `create_transfers`."""
    if timeout_ms and not pending:
        raise ValueError("timeout_ms needs pending=True")
    return pb.Transfer(
        id=_id(id) if id is not None else new_id(),
        debit_account_id=_id(debit, "debit"),
        credit_account_id=_id(credit, "credit"),
        amount=pb.Money(currency_code=currency, value=_amount(amount)),
        kind=pb.TRANSFER_KIND_PENDING if pending else pb.TRANSFER_KIND_SINGLE_PHASE,
        timeout_ms=int(timeout_ms),
        reference=reference,
        linked=linked,
        metadata=_metadata(metadata),
    )


def make_post(
    pending_id: IdLike,
    currency: str,
    amount: AmountLike | None = None,
    *,
    id: IdLike | None = None,
    linked: bool = False,
    reference: str = "",
) -> Transfer:
    """Posts a pending transfer: in full when `amount` is None, else partially."""
    return pb.Transfer(
        id=_id(id) if id is not None else new_id(),
        pending_id=_id(pending_id, "pending_id"),
        amount=pb.Money(currency_code=currency, value=_amount(amount)),
        kind=pb.TRANSFER_KIND_POST_PENDING,
        linked=linked,
        reference=reference,
    )


def make_void(
    pending_id: IdLike,
    currency: str,
    *,
    id: IdLike | None = None,
    linked: bool = False,
    reference: str = "",
) -> Transfer:
    """Voids a pending transfer, releasing its reservation."""
    return pb.Transfer(
        id=_id(id) if id is not None else new_id(),
        pending_id=_id(pending_id, "pending_id"),
        amount=pb.Money(currency_code=currency, value=""),
        kind=pb.TRANSFER_KIND_VOID_PENDING,
        linked=linked,
        reference=reference,
    )


# --------------------------------------------------------------------------------------------
# Client

#: Segment names accepted by `PuenteClient.quote`.
FX_SEGMENTS = {
    "sme": fx_pb.FX_SEGMENT_SME,
    "remittance": fx_pb.FX_SEGMENT_REMITTANCE,
    "institution": fx_pb.FX_SEGMENT_INSTITUTION,
}


def verify_quote(public_key: "bytes | Mapping[str, bytes]", quote: "fx_pb.FxQuote") -> bool:
    """Verifies a quote's Ed25519 signature over its canonical bytes, offline.

    `public_key` is one key (`PuenteClient.fx_public_key()`, the key signing new quotes) or,
    to keep verifying across a key rotation, every key by id (`PuenteClient.fx_public_keys()`):
    then the key the quote names in `signing_key_id` is used (each key if it names none).
    False for a tampered quote, another key, or a key id not in the mapping.

    A valid signature shows the server's key signed the quote; the server executes only quotes
    it issued, byte for byte."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(public_key, Mapping):
        if quote.signing_key_id:
            candidates = [public_key[quote.signing_key_id]] if quote.signing_key_id in public_key else []
        else:
            candidates = list(public_key.values())
    else:
        candidates = [public_key]
    for key in candidates:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(quote.signature, quote.canonical)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


class _BearerAuth(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <key>` to every call."""

    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key.strip()}")

    def __repr__(self) -> str:  # never show the key
        return "_BearerAuth([redacted])"

    def _details(self, details):
        metadata = [*(details.metadata or []), self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(
    NamedTuple(
        "_Details",
        [
            ("method", str),
            ("timeout", object),
            ("metadata", object),
            ("credentials", object),
            ("wait_for_ready", object),
            ("compression", object),
        ],
    ),
    grpc.ClientCallDetails,
):
    pass


#: The environment variable naming a file that holds the API key (preferred).
API_KEY_FILE_ENV = "PUENTE_API_KEY_FILE"
#: The environment variable holding the API key itself.
API_KEY_ENV = "PUENTE_API_KEY"


def api_key_from_env() -> str | None:
    """The API key from the environment, as the `puente` CLI reads it: the contents of the
    file named by `PUENTE_API_KEY_FILE` (preferred: the key itself stays out of the
    environment), else `PUENTE_API_KEY`, else None. A named file that cannot be read raises
    `OSError`; an empty one `ValueError` (never a silent call without a key)."""
    path = os.environ.get(API_KEY_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                key = file.read().strip()
        except OSError as error:
            raise OSError(error.errno, f"{API_KEY_FILE_ENV}: cannot read {path}: {error.strerror}") from error
        if not key:
            raise ValueError(f"{API_KEY_FILE_ENV}: {path} is empty")
        return key
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None


class PuenteClient:
    """A connection to a Puente server (one HTTP/2 channel). Use as a context manager or call
    `close()`. Every method takes an optional `timeout` in seconds (default: `timeout` given
    here, 30 s).

    Credentials: the API key is sent as `authorization: Bearer <key>` on every call. It is,
    in this order: `api_key` if given (`api_key=""`: no key at all); else the contents of the
    file named by the `PUENTE_API_KEY_FILE` environment variable; else `PUENTE_API_KEY`
    (`api_key_from_env`, the same order as the `puente` CLI). For TLS give `root_certificates`
    (PEM bytes of the CA); for mutual TLS also `private_key` and `certificate_chain`."""

    def __init__(
        self,
        addr: str,
        *,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        target = addr.split("://", 1)[1] if "://" in addr else addr
        self.addr = target
        self.timeout = timeout
        self._owns_channel = channel is None
        options = [
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ]
        if channel is None:
            if root_certificates is not None or certificate_chain is not None:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=root_certificates,
                    private_key=private_key,
                    certificate_chain=certificate_chain,
                )
                channel = grpc.secure_channel(target, credentials, options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
            key = api_key if api_key is not None else api_key_from_env()
            if key:
                channel = grpc.intercept_channel(channel, _BearerAuth(key))
        self.channel = channel
        #: The generated stub, for anything the wrapper does not cover.
        self.stub = pb_grpc.LedgerServiceStub(self.channel)
        #: The generated FX stub.
        self.fx_stub = fx_pb_grpc.FxServiceStub(self.channel)
        #: The generated participant-administration stub.
        self.participants_stub = participants_pb_grpc.ParticipantServiceStub(self.channel)

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> "PuenteClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise PuenteError.from_rpc_error(error) from error

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

    # ---- accounts

    def create_accounts(
        self, accounts: Iterable[Account], *, timeout: float | None = None
    ) -> list[CreateAccountResult]:
        """Opens a batch of accounts; one result per account, in order (never raises
        RefusedError)."""
        request = pb.CreateAccountsRequest(accounts=list(accounts))
        return list(self._call(self.stub.CreateAccounts, request, timeout).results)

    def create_account(
        self,
        participant: str,
        currency: str,
        *,
        no_overdraft: bool = False,
        overdraft_limit: AmountLike | None = None,
        credit_cap: bool = False,
        holder_ref: str = "",
        metadata: Mapping[str, str] | None = None,
        id: IdLike | None = None,
        timeout: float | None = None,
    ) -> Account:
        """Opens an account (idempotent per id). `no_overdraft` makes a wallet that cannot go
        below zero; `overdraft_limit` (implies `no_overdraft`) lets it go that far below.
        Raises RefusedError when the ledger refuses it (e.g. EXISTS_WITH_DIFFERENT_CURRENCY)."""
        limit = _amount(overdraft_limit, "overdraft_limit")
        account = pb.Account(
            id=_id(id) if id is not None else new_id(),
            participant=participant,
            currency_code=currency,
            debits_must_not_exceed_credits=no_overdraft or bool(limit),
            credits_must_not_exceed_debits=credit_cap,
            overdraft_limit=limit,
            holder_ref=holder_ref,
            metadata=_metadata(metadata),
        )
        results = self.create_accounts([account], timeout=timeout)
        if not results:
            raise RefusedError("NO_RESULT")
        result = results[0]
        if result.code != "OK":
            raise RefusedError(result.code, result)
        return result.account

    def get_account(self, id: IdLike, *, timeout: float | None = None) -> Account:
        """One account with its balances. Raises PuenteError NOT_FOUND (ACCOUNT_NOT_FOUND)."""
        request = pb.GetAccountRequest(id=_id(id))
        return self._call(self.stub.GetAccount, request, timeout).account

    def list_accounts(
        self,
        participant: str = "",
        *,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[Account]:
        """Every account (of one participant, or all), in id order, fetching page after page
        of `page_size` (0: the server's default of 100)."""
        token = ""
        while True:
            request = pb.ListAccountsRequest(
                participant=participant, page_size=page_size, page_token=token
            )
            page = self._call(self.stub.ListAccounts, request, timeout)
            yield from page.accounts
            token = page.next_page_token
            if not token:
                return

    # ---- transfers

    def create_transfers(
        self, transfers: Iterable[Transfer], *, timeout: float | None = None
    ) -> list[CreateTransferResult]:
        """Posts a batch (see `make_transfer`, `make_post`, `make_void`); one result per
        transfer, in order. Refused events are results, not exceptions; a malformed batch
        raises PuenteError INVALID_ARGUMENT and changes nothing."""
        request = pb.CreateTransfersRequest(transfers=list(transfers))
        return list(self._call(self.stub.CreateTransfers, request, timeout).results)

    def _one(self, transfer: Transfer, timeout: float | None) -> CreateTransferResult:
        results = self.create_transfers([transfer], timeout=timeout)
        if not results:
            raise RefusedError("NO_RESULT")
        result = results[0]
        if result.code != "OK":
            raise RefusedError(result.code, result)
        return result

    def transfer(
        self,
        debit: IdLike,
        credit: IdLike,
        currency: str,
        amount: AmountLike,
        *,
        pending: bool = False,
        timeout_ms: int = 0,
        id: IdLike | None = None,
        reference: str = "",
        linked: bool = False,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CreateTransferResult:
        """Moves `amount` from `debit` to `credit` (or reserves it with `pending=True`).
        Returns the result (`position`, `replayed`); raises RefusedError if refused."""
        transfer = make_transfer(
            debit,
            credit,
            currency,
            amount,
            pending=pending,
            timeout_ms=timeout_ms,
            id=id,
            reference=reference,
            linked=linked,
            metadata=metadata,
        )
        return self._one(transfer, timeout)

    def post(
        self,
        pending_id: IdLike,
        currency: str,
        amount: AmountLike | None = None,
        *,
        id: IdLike | None = None,
        timeout: float | None = None,
    ) -> CreateTransferResult:
        """Posts a pending transfer, in full (`amount` None) or partially."""
        return self._one(make_post(pending_id, currency, amount, id=id), timeout)

    def void(
        self,
        pending_id: IdLike,
        currency: str,
        *,
        id: IdLike | None = None,
        timeout: float | None = None,
    ) -> CreateTransferResult:
        """Voids a pending transfer."""
        return self._one(make_void(pending_id, currency, id=id), timeout)

    def get_transfer(self, id: IdLike, *, timeout: float | None = None) -> Transfer:
        """One transfer, or the remembered failure of one (state TRANSFER_STATE_FAILED)."""
        request = pb.GetTransferRequest(id=_id(id))
        return self._call(self.stub.GetTransfer, request, timeout).transfer

    def list_transfers(
        self,
        account_id: IdLike,
        *,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        descending: bool = False,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[Transfer]:
        """Every transfer of an account in [start_time, end_time), oldest first (or newest
        with `descending`), fetching page after page."""
        token = ""
        while True:
            request = pb.ListTransfersRequest(
                account_id=_id(account_id, "account_id"),
                start_time=_timestamp(start_time, "start_time"),
                end_time=_timestamp(end_time, "end_time"),
                order_by="create_time desc" if descending else "create_time",
                page_size=page_size,
                page_token=token,
            )
            page = self._call(self.stub.ListTransfers, request, timeout)
            yield from page.transfers
            token = page.next_page_token
            if not token:
                return

    def statement(
        self,
        account_id: IdLike,
        *,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> GetAccountStatementResponse:
        """The account's statement for [start_time, end_time): every page fetched and joined,
        so `lines` holds every line, `opening_posted_balance` is the first page's and
        `closing_posted_balance` the last page's."""
        token = ""
        full: GetAccountStatementResponse | None = None
        while True:
            request = pb.GetAccountStatementRequest(
                account_id=_id(account_id, "account_id"),
                start_time=_timestamp(start_time, "start_time"),
                end_time=_timestamp(end_time, "end_time"),
                page_size=page_size,
                page_token=token,
            )
            page = self._call(self.stub.GetAccountStatement, request, timeout)
            if full is None:
                full = pb.GetAccountStatementResponse()
                full.CopyFrom(page)
            else:
                full.lines.extend(page.lines)
                full.closing_posted_balance = page.closing_posted_balance
            token = page.next_page_token
            if not token:
                full.next_page_token = ""
                return full

    def stream_transfers(
        self, after_position: int = 0, *, timeout: float | None = None
    ) -> Iterator[Transfer]:
        """Every committed transfer with a position greater than `after_position`, then new
        ones as they commit; it does not end by itself. Stop by leaving the loop (the call is
        cancelled) or with `timeout` seconds for the whole stream (then PuenteError
        DEADLINE_EXCEEDED). Resume with the last position received."""
        request = pb.StreamTransfersRequest(after_position=int(after_position))
        call = self.stub.StreamTransfers(request, timeout=timeout)
        try:
            for response in call:
                yield response.transfer
        except grpc.RpcError as error:
            raise PuenteError.from_rpc_error(error) from error
        finally:
            call.cancel()

    # ---- health

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard gRPC health check: "SERVING", "NOT_SERVING", ... for `service` (""
        the server as a whole, or "puente.v1.LedgerService")."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # ---- FX

    def set_rate(
        self, base: str, quote: str, mid_rate: AmountLike, *, source: str = "operator",
        timeout: float | None = None,
    ) -> None:
        """Sets a mid-market rate (units of `quote` per 1 `base`), e.g. ("USD", "MXN", "18.91")."""
        rate = fx_pb.FxRate(
            base_currency=base, quote_currency=quote, mid_rate=_amount(mid_rate, "mid_rate"), source=source
        )
        self._call(self.fx_stub.SetRates, fx_pb.SetRatesRequest(rates=[rate]), timeout)

    def quote(
        self,
        participant: str,
        segment: str,
        sell: str,
        buy: str,
        *,
        send: AmountLike | None = None,
        receive: AmountLike | None = None,
        timeout: float | None = None,
    ) -> "fx_pb.FxQuote":
        """A signed quote with its disclosure. Fix exactly one of `send` (in `sell`, fees on
        top) and `receive` (in `buy`)."""
        if (send is None) == (receive is None):
            raise ValueError("give exactly one of send= and receive=")
        if segment not in FX_SEGMENTS:
            raise ValueError(f"segment must be one of {sorted(FX_SEGMENTS)}")
        request = fx_pb.GetQuoteRequest(
            participant=participant,
            segment=FX_SEGMENTS[segment],
            sell_currency=sell,
            buy_currency=buy,
            send_amount=_amount(send, "send") if send is not None else "",
            receive_amount=_amount(receive, "receive") if receive is not None else "",
        )
        return self._call(self.fx_stub.GetQuote, request, timeout).quote

    def get_quote(self, id: IdLike, *, timeout: float | None = None) -> "fx_pb.FxQuote":
        return self._call(self.fx_stub.GetQuoteById, fx_pb.GetQuoteByIdRequest(id=_id(id)), timeout).quote

    def execute_quote(
        self,
        quote: "fx_pb.FxQuote",
        source_account_id: IdLike,
        destination_account_id: IdLike,
        *,
        execution_id: IdLike | None = None,
        timeout: float | None = None,
    ) -> "fx_pb.ExecuteQuoteResponse":
        """Executes a quote from `source` (sell currency) to `destination` (buy currency).
        Reuse `execution_id` to retry safely; the first outcome is returned."""
        request = fx_pb.ExecuteQuoteRequest(
            canonical=quote.canonical,
            signature=quote.signature,
            source_account_id=_id(source_account_id, "source_account_id"),
            destination_account_id=_id(destination_account_id, "destination_account_id"),
            execution_id=_id(execution_id) if execution_id is not None else new_id(),
            signing_key_id=quote.signing_key_id,
        )
        return self._call(self.fx_stub.ExecuteQuote, request, timeout)

    def cancel_transfer(self, quote_id: IdLike, *, timeout: float | None = None) -> "fx_pb.CancelTransferResponse":
        """Cancels a held remittance within its window; everything is refunded."""
        request = fx_pb.CancelTransferRequest(quote_id=_id(quote_id, "quote_id"))
        return self._call(self.fx_stub.CancelTransfer, request, timeout)

    def fx_public_key(self, *, timeout: float | None = None) -> bytes:
        """The 32-byte Ed25519 key that signs new quotes."""
        return self._call(self.fx_stub.GetPublicKey, fx_pb.GetPublicKeyRequest(), timeout).public_key

    def fx_public_keys(self, *, timeout: float | None = None) -> dict[str, bytes]:
        """Every key that verifies quotes, by key id, the signing key first (older keys stay
        listed after a rotation). Pass it to `verify_quote`."""
        response = self._call(self.fx_stub.GetPublicKey, fx_pb.GetPublicKeyRequest(), timeout)
        return {key.key_id: key.public_key for key in response.keys}

    def exposure(self, *, timeout: float | None = None) -> list:
        return list(self._call(self.fx_stub.GetExposure, fx_pb.GetExposureRequest(), timeout).positions)

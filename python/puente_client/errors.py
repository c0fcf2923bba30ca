"""Errors: `PuenteError` (a failed RPC, with its `google.rpc` details decoded) and
`RefusedError` (one event the ledger refused)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import grpc

if TYPE_CHECKING:
    from ._stubs import CreateAccountResult, CreateTransferResult

__all__ = ["FieldViolation", "PuenteError", "RefusedError"]


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

"""Converters between Python values and the API's wire forms: ids, decimal amounts (never a
float), metadata and timestamps, and the transfer builders `make_transfer`, `make_post` and
`make_void`."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Mapping
from typing import TypeVar, Union

from ._stubs import Transfer, pb

__all__ = [
    "AmountLike",
    "IdLike",
    "TimeLike",
    "make_post",
    "make_transfer",
    "make_void",
    "new_id",
    "to_decimal",
]

AmountLike = Union[decimal.Decimal, str, int]
IdLike = Union[uuid.UUID, str]
TimeLike = Union[datetime.datetime, None]

_Enum = TypeVar("_Enum", bound=int)


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


def _window_id(value: int | None, name: str = "window_id") -> int:
    """A settlement window id for the wire: a positive int (0 is the API's "none")."""
    if value is None or value == 0:
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


def _choice(value: str | int, choices: Mapping[str, _Enum], name: str) -> _Enum:
    """An enum value for the wire, by its short name (`"fedwire"`, case-insensitive) or as the
    generated enum's number (`settlement_pb.SETTLEMENT_RAIL_FEDWIRE`)."""
    if isinstance(value, str):
        number = choices.get(value.lower())
        if number is None:
            raise ValueError(f"{name} must be one of {sorted(choices)}, not {value!r}")
        return number
    if isinstance(value, int) and not isinstance(value, bool):
        for number in choices.values():
            if number == value:
                return number
    raise ValueError(f"{name} must be one of {sorted(choices)}, not {value!r}")


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

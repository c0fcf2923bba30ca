"""The generated stubs (`python/generate_stubs.py`) and the message types re-exported by
`puente_client`. Every other module imports the stubs from here, so a missing or stale
generation fails once, with a message saying how to fix it."""

from __future__ import annotations

try:
    from .gen.puente.v1 import fx_pb2 as fx_pb
    from .gen.puente.v1 import fx_pb2_grpc as fx_pb_grpc
    from .gen.puente.v1 import holders_pb2 as holders_pb
    from .gen.puente.v1 import holders_pb2_grpc as holders_pb_grpc
    from .gen.puente.v1 import ledger_pb2 as pb
    from .gen.puente.v1 import ledger_pb2_grpc as pb_grpc
    from .gen.puente.v1 import participants_pb2 as participants_pb
    from .gen.puente.v1 import participants_pb2_grpc as participants_pb_grpc
    from .gen.puente.v1 import settlement_pb2 as settlement_pb
    from .gen.puente.v1 import settlement_pb2_grpc as settlement_pb_grpc
except ImportError as error:  # pragma: no cover - a setup problem, not a runtime one
    raise ImportError(
        "puente_client's generated stubs are missing or stale: run "
        "`python python/generate_stubs.py` from the repository root "
        "(scripts/python-test does it)"
    ) from error

__all__ = [
    "Account",
    "CreateAccountResult",
    "CreateTransferResult",
    "EntryKind",
    "GetAccountStatementResponse",
    "StatementLine",
    "Transfer",
    "TransferKind",
    "TransferState",
    "fx_pb",
    "fx_pb_grpc",
    "holders_pb",
    "holders_pb_grpc",
    "participants_pb",
    "participants_pb_grpc",
    "pb",
    "pb_grpc",
    "settlement_pb",
    "settlement_pb_grpc",
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

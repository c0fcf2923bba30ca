"""What every group of `PuenteClient` methods shares: the channel, the generated stubs and
`_call`, the one path by which a unary RPC's failure becomes a `PuenteError`."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import grpc

from ._stubs import fx_pb_grpc, holders_pb_grpc, participants_pb_grpc, pb_grpc, settlement_pb_grpc
from .errors import PuenteError

_Response = TypeVar("_Response")


class _Calls:
    """The state `PuenteClient.__init__` sets, declared for the method groups (mixins) that
    `PuenteClient` is made of."""

    channel: grpc.Channel
    timeout: float | None
    stub: pb_grpc.LedgerServiceStub
    fx_stub: fx_pb_grpc.FxServiceStub
    participants_stub: participants_pb_grpc.ParticipantServiceStub
    settlement_stub: settlement_pb_grpc.SettlementServiceStub
    holders_stub: holders_pb_grpc.HolderServiceStub

    def _call(self, method: Callable[..., _Response], request: Any, timeout: float | None) -> _Response:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise PuenteError.from_rpc_error(error) from error

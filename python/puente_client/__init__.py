"""Python client for Puente's gRPC API (`puente.v1.LedgerService`, `FxService`,
`SettlementService`, `HolderService`).

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
- Results are the generated protobuf messages (`Account`, `Transfer`, ...), re-exported here,
  except holders: `Holder` and `PersonalData`, whose repr never shows personal data.

`PuenteClient`'s wrappers, by service (each also takes a keyword `timeout` in seconds):

- LedgerService: `create_account(s)`, `get_account`, `list_accounts`, `create_transfers`,
  `transfer`, `post`, `void`, `get_transfer`, `list_transfers`, `statement`,
  `stream_transfers`.
- FxService: `set_rate`, `quote`, `get_quote`, `execute_quote`, `cancel_transfer`,
  `fx_public_key(s)`, `exposure`; `verify_quote` checks a quote offline.
- SettlementService: `set_participant_profile` (with `CurrencySettlement`),
  `get_participant_profile`, `list_participant_profiles`, `list_windows`, `get_window`,
  `close_window`, `run_settlement`, `get_settlement_report`, `list_settlement_payments`,
  `get_settlement_statement`, `confirm_settlement`, `reconcile_statements` (with
  `BankDocument`). Window ids are ints.
- HolderService: `create_holder` (with `PersonalData`), `get_holder`, `list_holders`,
  `get_holder_usage`, `set_kyc_policy` (with `UsTier`).
- ParticipantService and health: `whoami`, `create_participant`, `health`.

The package's modules: `errors` (PuenteError, RefusedError), `convert` (ids, amounts,
timestamps, transfer builders), `auth` (API keys, the bearer interceptor), `client`
(PuenteClient), and one per service with its wrappers and values: `ledger`, `fx`,
`settlement`, `holders`. Import everything from `puente_client` itself.
"""

from __future__ import annotations

from ._stubs import (
    Account,
    CreateAccountResult,
    CreateTransferResult,
    EntryKind,
    GetAccountStatementResponse,
    StatementLine,
    Transfer,
    TransferKind,
    TransferState,
    fx_pb,
    fx_pb_grpc,  # noqa: F401 - importable from puente_client as before the split
    holders_pb,
    participants_pb,
    participants_pb_grpc,  # noqa: F401
    pb,
    pb_grpc,
    settlement_pb,
)
from .auth import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    NewApiKey,
    _BearerAuth,  # noqa: F401 - importable from puente_client as before the split
    _Details,  # noqa: F401
    api_key_from_env,
    new_api_key,
)
from .client import MESSAGE_BYTES_MAX, PuenteClient  # noqa: F401
from .convert import (  # noqa: F401 - the private converters stay importable from here
    AmountLike,
    IdLike,
    TimeLike,
    _amount,
    _id,
    _metadata,
    _timestamp,
    make_post,
    make_transfer,
    make_void,
    new_id,
    to_decimal,
)
from .errors import FieldViolation, PuenteError, RefusedError, _headline  # noqa: F401
from .fx import FX_SEGMENTS, verify_quote
from .holders import HOLDER_KINDS, Holder, PersonalData, UsTier
from .settlement import (
    COUNTRIES,
    PAYMENT_FORMATS,
    REPORT_FORMATS,
    SETTLEMENT_RAILS,
    WINDOW_STATES,
    BankDocument,
    CurrencySettlement,
)

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
    # SettlementService
    "settlement_pb",
    "BankDocument",
    "COUNTRIES",
    "CurrencySettlement",
    "PAYMENT_FORMATS",
    "REPORT_FORMATS",
    "SETTLEMENT_RAILS",
    "WINDOW_STATES",
    # HolderService
    "holders_pb",
    "HOLDER_KINDS",
    "Holder",
    "PersonalData",
    "UsTier",
]

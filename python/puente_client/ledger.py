"""`LedgerService` wrappers of `PuenteClient`: accounts, transfers (single-phase, pending,
post, void), statements and the transfer stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import grpc

from ._base import _Calls
from ._stubs import (
    Account,
    CreateAccountResult,
    CreateTransferResult,
    GetAccountStatementResponse,
    Transfer,
    pb,
)
from .convert import (
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
)
from .errors import PuenteError, RefusedError


class _LedgerMethods(_Calls):
    """Accounts and transfers (`puente.v1.LedgerService`)."""

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

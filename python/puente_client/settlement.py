"""Settlement: the `SettlementService` wrappers of `PuenteClient` (participants' settlement
profiles, settlement windows, the settlement run, its report, payments and statements,
confirmations and the reconciliation of the banks' documents), and the values they take.

A settlement day, as an operator::

    profile = CurrencySettlement("USD", "fedwire", "021000021", settlement_account.id, "5000.00")
    puente.set_participant_profile("bank-a", "US", [profile], name="Bank A")
    ...                                            # transfers between participants' accounts
    closed = puente.close_window(currency="USD")   # CLOSED (or FAILED with a reason)
    run = puente.run_settlement(closed.window.window_id)
    report = puente.get_settlement_report(closed.window.window_id, format="json")
    pacs009 = puente.list_settlement_payments(closed.window.window_id, format="pacs009")

Window ids are ints. Enum arguments take a short name (`"fedwire"`, `"settled"`, `"json"`,
case-insensitive) or the generated enum's number (`settlement_pb.SETTLEMENT_RAIL_FEDWIRE`).
Results are the generated `settlement_pb` messages; amounts in them are decimal text
(`to_decimal`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple, Union

from ._base import _Calls
from ._stubs import settlement_pb
from .convert import AmountLike, IdLike, _amount, _choice, _Enum, _id, _window_id

__all__ = [
    "COUNTRIES",
    "PAYMENT_FORMATS",
    "REPORT_FORMATS",
    "SETTLEMENT_RAILS",
    "WINDOW_STATES",
    "BankDocument",
    "CurrencySettlement",
]

#: Countries of `set_participant_profile`.
COUNTRIES = {"us": settlement_pb.COUNTRY_US, "mx": settlement_pb.COUNTRY_MX}
#: Settlement rails of `CurrencySettlement`: FEDWIRE or ACH_DIRECTO_MEXICO for USD (bank_id an
#: ABA routing number), SPEI for MXN (bank_id an 18-digit CLABE).
SETTLEMENT_RAILS = {
    "fedwire": settlement_pb.SETTLEMENT_RAIL_FEDWIRE,
    "ach_directo_mexico": settlement_pb.SETTLEMENT_RAIL_ACH_DIRECTO_MEXICO,
    "spei": settlement_pb.SETTLEMENT_RAIL_SPEI,
}
#: Window states of `list_windows`.
WINDOW_STATES = {
    "open": settlement_pb.WINDOW_STATE_OPEN,
    "closing": settlement_pb.WINDOW_STATE_CLOSING,
    "closed": settlement_pb.WINDOW_STATE_CLOSED,
    "settling": settlement_pb.WINDOW_STATE_SETTLING,
    "settled": settlement_pb.WINDOW_STATE_SETTLED,
    "aborted": settlement_pb.WINDOW_STATE_ABORTED,
    "failed": settlement_pb.WINDOW_STATE_FAILED,
    "rejected": settlement_pb.WINDOW_STATE_REJECTED,
}
#: Documents of `get_settlement_report` and `reconcile_statements`.
REPORT_FORMATS = {
    "json": settlement_pb.REPORT_FORMAT_JSON,
    "csv": settlement_pb.REPORT_FORMAT_CSV,
    "table": settlement_pb.REPORT_FORMAT_TABLE,
}
#: Documents of `list_settlement_payments`.
PAYMENT_FORMATS = {
    "pacs009": settlement_pb.PAYMENT_FORMAT_PACS009,
    "csv": settlement_pb.PAYMENT_FORMAT_CSV,
    "json": settlement_pb.PAYMENT_FORMAT_JSON,
}


class CurrencySettlement(NamedTuple):
    """How a participant settles one currency, for `set_participant_profile`.

    Attributes:
        currency: "USD" or "MXN".
        rail: a key of `SETTLEMENT_RAILS` ("fedwire", "ach_directo_mexico", "spei").
        bank_id: ABA routing number (USD) or CLABE (MXN); the server checks the check digit.
        settlement_account_id: the participant's ledger account that settlement posts its net
            position to (same participant and currency).
        net_debit_cap: the most the participant's net debit position may reach; a transfer
            over it is refused with NET_DEBIT_CAP_EXCEEDED.
    """

    currency: str
    rail: Union[str, int]
    bank_id: str
    settlement_account_id: IdLike
    net_debit_cap: AmountLike

    def proto(self) -> "settlement_pb.CurrencySettlement":
        return settlement_pb.CurrencySettlement(
            currency_code=self.currency,
            rail=_choice(self.rail, SETTLEMENT_RAILS, "rail"),
            bank_id=self.bank_id,
            net_debit_cap=_amount(self.net_debit_cap, "net_debit_cap"),
            settlement_account_id=_id(self.settlement_account_id, "settlement_account_id"),
        )


class BankDocument(NamedTuple):
    """A settlement bank's document for `reconcile_statements`: camt.053, camt.054 or
    pacs.002 XML (UTF-8 bytes or text, at most 4 MiB), and a name (a file name, at most 255
    bytes) the reconciliation reports it by."""

    name: str
    content: Union[bytes, str]

    @classmethod
    def from_file(cls, path: "str | os.PathLike[str]") -> "BankDocument":
        """The file at `path`, named by its file name."""
        path = Path(path)
        return cls(path.name, path.read_bytes())

    def proto(self) -> "settlement_pb.BankDocument":
        content = self.content.encode() if isinstance(self.content, str) else bytes(self.content)
        return settlement_pb.BankDocument(name=self.name, content=content)


def _optional_choice(value: str | int | None, choices: Mapping[str, _Enum], name: str) -> _Enum | None:
    """`_choice`, or None (the field unset: the enum's UNSPECIFIED, "none" or "any")."""
    return None if value is None else _choice(value, choices, name)


class _SettlementMethods(_Calls):
    """Profiles, windows and settlement runs (`puente.v1.SettlementService`). Setting
    profiles, listing them, closing, running, reports, payments and reconciliation are for
    operators; participants may read their own profile, the windows, their statements, and
    confirm."""

    # ---- profiles

    def set_participant_profile(
        self,
        participant: str,
        country: str | int,
        currencies: Iterable[CurrencySettlement],
        *,
        name: str = "",
        bic: str = "",
        timeout: float | None = None,
    ) -> "settlement_pb.ParticipantProfile":
        """Sets (creates or replaces) `participant`'s settlement profile: its `country` ("US"
        or "MX"), one `CurrencySettlement` per currency it settles (at most 8), and optionally
        its legal `name` and the `bic` of its settlement bank. Returns the profile as stored.
        A bad field raises PuenteError INVALID_ARGUMENT naming it
        (`profile.currencies[0].bank_id`)."""
        profile = settlement_pb.ParticipantProfile(
            participant=participant,
            name=name,
            bic=bic,
            country=_choice(country, COUNTRIES, "country"),
            currencies=[c.proto() for c in currencies],
        )
        request = settlement_pb.SetParticipantProfileRequest(profile=profile)
        return self._call(self.settlement_stub.SetParticipantProfile, request, timeout).profile

    def get_participant_profile(
        self, participant: str, *, timeout: float | None = None
    ) -> "settlement_pb.GetParticipantProfileResponse":
        """`participant`'s profile (`.profile`) and its current net debit position per profile
        currency (`.net_debit_positions`: owed in unconfirmed windows plus pending debits).
        Raises PuenteError NOT_FOUND (PROFILE_NOT_FOUND)."""
        request = settlement_pb.GetParticipantProfileRequest(participant=participant)
        return self._call(self.settlement_stub.GetParticipantProfile, request, timeout)

    def list_participant_profiles(
        self, *, timeout: float | None = None
    ) -> "list[settlement_pb.ParticipantProfile]":
        """Every settlement profile, by participant id."""
        request = settlement_pb.ListParticipantProfilesRequest()
        return list(self._call(self.settlement_stub.ListParticipantProfiles, request, timeout).profiles)

    # ---- windows

    def list_windows(
        self,
        currency: str = "",
        *,
        state: str | int | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> "Iterator[settlement_pb.SettlementWindow]":
        """Every settlement window (of one currency, in one `state` of `WINDOW_STATES`, or
        all), oldest first and without positions, fetching page after page of `page_size` (0:
        the server's default of 100)."""
        token = ""
        while True:
            request = settlement_pb.ListWindowsRequest(
                currency_code=currency,
                state=_optional_choice(state, WINDOW_STATES, "state"),
                page_size=page_size,
                page_token=token,
            )
            page = self._call(self.settlement_stub.ListWindows, request, timeout)
            yield from page.windows
            token = page.next_page_token
            if not token:
                return

    def get_window(self, window_id: int, *, timeout: float | None = None) -> "settlement_pb.SettlementWindow":
        """One window with every participant's position. Raises PuenteError NOT_FOUND
        (WINDOW_NOT_FOUND)."""
        request = settlement_pb.GetWindowRequest(window_id=_window_id(window_id))
        return self._call(self.settlement_stub.GetWindow, request, timeout).window

    def close_window(
        self,
        window_id: int | None = None,
        *,
        currency: str = "",
        timeout: float | None = None,
    ) -> "settlement_pb.CloseWindowResponse":
        """Closes a window, by id or (`currency=`) the open window of a currency, and opens
        the next one of its currency. `.window` is CLOSED, or FAILED with a `reason` (e.g. a
        participant without a profile: set it and close the same window id again);
        `.next_window_id` is the window opened in its place. Retry with the window id: a
        window already closed is returned with `.changed` False."""
        if window_id is None and not currency:
            raise ValueError("give window_id or currency=")
        request = settlement_pb.CloseWindowRequest(
            window_id=0 if window_id is None else _window_id(window_id), currency_code=currency
        )
        return self._call(self.settlement_stub.CloseWindow, request, timeout)

    # ---- settlement

    def run_settlement(
        self, window_id: int, *, timeout: float | None = None
    ) -> "settlement_pb.RunSettlementResponse":
        """Settles a CLOSED (or ABORTED) window: every net position is posted to its
        participant's settlement account against the hub in one atomic ledger operation.
        `.window` is SETTLING (or ABORTED with a reason); `.transfers` holds one settlement
        transfer per participant with a non-zero net. A window already settling or settled is
        returned with `.changed` False and the same transfers: it never settles twice."""
        request = settlement_pb.RunSettlementRequest(window_id=_window_id(window_id))
        return self._call(self.settlement_stub.RunSettlement, request, timeout)

    def get_settlement_report(
        self,
        window_id: int,
        *,
        format: str | int | None = None,
        rate_mxn_per_usd: AmountLike | None = None,
        timeout: float | None = None,
    ) -> "settlement_pb.GetSettlementReportResponse":
        """A CLOSED (or later) window's netting and savings figures (`.report`), the journal's
        chain head when it was made (`.journal_chain_head`), and with `format` ("json", "csv"
        or "table") the report as a document (`.document`). `rate_mxn_per_usd` overrides the
        server's rate for the USD figures."""
        request = settlement_pb.GetSettlementReportRequest(
            window_id=_window_id(window_id),
            format=_optional_choice(format, REPORT_FORMATS, "format"),
            rate_mxn_per_usd=_amount(rate_mxn_per_usd, "rate_mxn_per_usd"),
        )
        return self._call(self.settlement_stub.GetSettlementReport, request, timeout)

    def list_settlement_payments(
        self,
        window_id: int,
        *,
        format: str | int | None = None,
        timeout: float | None = None,
    ) -> "settlement_pb.ListSettlementPaymentsResponse":
        """A CLOSED (or later) window's settlement payments in plan order (`.payments`: the
        fewest payments of the multilateral net positions), and with `format` ("pacs009",
        "csv" or "json") as a document (`.document`; ISO 20022 pacs.009 XML for "pacs009")."""
        request = settlement_pb.ListSettlementPaymentsRequest(
            window_id=_window_id(window_id), format=_optional_choice(format, PAYMENT_FORMATS, "format")
        )
        return self._call(self.settlement_stub.ListSettlementPayments, request, timeout)

    def get_settlement_statement(
        self, window_id: int, participant: str, *, timeout: float | None = None
    ) -> str:
        """`participant`'s ISO 20022 camt.053 statement (XML text) of its settlement account
        around the settlement of a SETTLING, REJECTED or SETTLED window."""
        request = settlement_pb.GetSettlementStatementRequest(
            window_id=_window_id(window_id), participant=participant
        )
        return self._call(self.settlement_stub.GetSettlementStatement, request, timeout).document

    def confirm_settlement(
        self, window_id: int, participant: str, *, timeout: float | None = None
    ) -> "settlement_pb.ConfirmSettlementResponse":
        """Records that `participant`'s settlement of a SETTLING (or REJECTED) window
        completed; the last confirmation makes the window SETTLED. `.changed` is False when it
        had already confirmed."""
        request = settlement_pb.ConfirmSettlementRequest(
            window_id=_window_id(window_id), participant=participant
        )
        return self._call(self.settlement_stub.ConfirmSettlement, request, timeout)

    def reconcile_statements(
        self,
        documents: "Iterable[BankDocument | str | os.PathLike[str]]",
        *,
        dry_run: bool = False,
        format: str | int | None = None,
        timeout: float | None = None,
    ) -> "settlement_pb.ReconcileStatementsResponse":
        """Reconciles the settlement banks' documents (at most 64: `BankDocument`s, or paths
        of files) against the settlement payments of the windows awaiting confirmation, and
        confirms every participant all of whose payments matched (not with `dry_run`). A
        rejected payment makes its window REJECTED. `.windows` and `.exceptions` tell what was
        found; with `format` ("json", "csv" or "table") also `.document`. A document that
        fails its XSD raises PuenteError INVALID_ARGUMENT and changes nothing."""
        request = settlement_pb.ReconcileStatementsRequest(
            documents=[
                (d if isinstance(d, BankDocument) else BankDocument.from_file(d)).proto() for d in documents
            ],
            dry_run=dry_run,
            format=_optional_choice(format, REPORT_FORMATS, "format"),
        )
        return self._call(self.settlement_stub.ReconcileStatements, request, timeout)

"""Settlement through the Python client against the real server (a small version of
tests/e2e/settlement.rs and reconcile.rs): settlement profiles, the Net Debit Cap, a settlement
day (close → report → run → payments → statements → confirm → SETTLED), a window that fails
to close without a profile, and the reconciliation of the banks' documents.

Windows are network-wide and the server is shared with the other tests, whose transfers land
in the open USD window too. So each day first closes the open USD window (whatever it holds;
it may fail for participants without profiles) and then makes its own transfers: the window
opened in its place holds only this test's obligations.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from puente_client import (
    BankDocument,
    CurrencySettlement,
    PuenteClient,
    PuenteError,
    RefusedError,
    settlement_pb,
    to_decimal,
)

#: Valid ABA routing numbers (check digit), one per bank.
ROUTING = ["021000021", "011000015", "026009593"]


def participant(client: PuenteClient, name: str) -> str:
    """A new participant, registered (operators open accounts only for registered ones)."""
    who = f"{name}-{uuid.uuid4().hex[:8]}"
    client.create_participant(who, who)
    return who


@dataclass
class Bank:
    """A participant with an operating account and a settlement account, in USD."""

    name: str
    ops: str
    settlement: str


def bank(client: PuenteClient, name: str, routing: str | None, cap: str = "1000.00") -> Bank:
    """A bank with a USD settlement profile on Fedwire (none when `routing` is None)."""
    who = participant(client, name)
    ops = client.create_account(who, "USD").id
    settle = client.create_account(who, "USD", holder_ref="settlement").id
    if routing is not None:
        client.set_participant_profile(
            who, "US", [CurrencySettlement("USD", "fedwire", routing, settle, cap)], name=name.title()
        )
    return Bank(who, ops, settle)


def fresh_usd_window(client: PuenteClient) -> None:
    """Closes the open USD window, so that the next one holds only what follows."""
    for window in list(client.list_windows("USD", state="open")):
        closed = client.close_window(window.window_id)
        assert closed.window.state in (settlement_pb.WINDOW_STATE_CLOSED, settlement_pb.WINDOW_STATE_FAILED)


def open_usd_window(client: PuenteClient) -> settlement_pb.SettlementWindow:
    windows = list(client.list_windows("USD", state="open"))
    assert len(windows) == 1, windows
    return windows[0]


def day(client: PuenteClient) -> tuple[list[Bank], int]:
    """Three banks and four transfers between them in a fresh USD window; returns the banks
    (a, b, c) and the window id. Nets: a -280.00, b +180.00, c +100.00; gross 500.00."""
    fresh_usd_window(client)
    a, b, c = (bank(client, n, r) for n, r in zip(("bank-a", "bank-b", "bank-c"), ROUTING))
    client.transfer(a.ops, b.ops, "USD", "300.00")
    client.transfer(b.ops, c.ops, "USD", Decimal("120.00"))
    client.transfer(c.ops, a.ops, "USD", 50)
    client.transfer(a.ops, c.ops, "USD", "30.00")
    return [a, b, c], open_usd_window(client).window_id


def nets(window: settlement_pb.SettlementWindow) -> dict[str, Decimal]:
    return {p.participant: to_decimal(p.net.value) for p in window.positions}


def test_participant_profiles(client: PuenteClient) -> None:
    who = participant(client, "bank-p")
    settle = client.create_account(who, "USD").id

    # A bad routing number is refused with the field's path; nothing is stored.
    with pytest.raises(PuenteError) as error:
        client.set_participant_profile(
            who, "US", [CurrencySettlement("USD", "fedwire", "021000022", settle, "1.00")]
        )
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.reason == "INVALID_FIELD"
    assert error.value.fields == ["profile.currencies[0].bank_id"]
    with pytest.raises(PuenteError) as error:
        client.get_participant_profile(who)
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.NOT_FOUND, "PROFILE_NOT_FOUND")
    # Checked here, before any call: floats never carry money, and names must be known.
    with pytest.raises(TypeError):
        CurrencySettlement("USD", "fedwire", ROUTING[0], settle, 100.0).proto()
    with pytest.raises(ValueError, match="rail"):
        CurrencySettlement("USD", "swift", ROUTING[0], settle, "1.00").proto()
    with pytest.raises(ValueError, match="country"):
        client.set_participant_profile(who, "CA", [])

    stored = client.set_participant_profile(
        who,
        "US",
        [
            CurrencySettlement(
                "USD", settlement_pb.SETTLEMENT_RAIL_ACH_DIRECTO_MEXICO, ROUTING[0], settle, "250"
            )
        ],
        name="Bank P",
        bic="BOFAUS3N",
    )
    assert (stored.participant, stored.name, stored.bic) == (who, "Bank P", "BOFAUS3N")
    assert stored.country == settlement_pb.COUNTRY_US
    [usd] = stored.currencies
    assert (usd.currency_code, usd.rail, usd.bank_id) == (
        "USD",
        settlement_pb.SETTLEMENT_RAIL_ACH_DIRECTO_MEXICO,
        ROUTING[0],
    )
    assert (usd.net_debit_cap, usd.settlement_account_id) == ("250.00", settle)
    assert stored.HasField("update_time")

    got = client.get_participant_profile(who)
    assert got.profile == stored
    assert [(m.currency_code, to_decimal(m.value)) for m in got.net_debit_positions] == [("USD", Decimal(0))]
    listed = {p.participant: p for p in client.list_participant_profiles()}
    assert listed[who] == stored

    # Setting it again replaces it.
    again = client.set_participant_profile(
        who, "us", [CurrencySettlement("USD", "FEDWIRE", ROUTING[1], settle, "75.50")]
    )
    assert (again.name, again.currencies[0].bank_id, again.currencies[0].net_debit_cap) == (
        "",
        ROUTING[1],
        "75.50",
    )
    assert client.get_participant_profile(who).profile == again


def test_a_settlement_day(client: PuenteClient) -> None:
    (a, b, c), window_id = day(client)
    # What each owes so far (the open window counts): a owes 280.00, b is owed 180.00.
    assert client.get_participant_profile(a.name).net_debit_positions[0].value == "280.00"
    assert to_decimal(client.get_participant_profile(b.name).net_debit_positions[0].value) == Decimal(
        "-180.00"
    )

    listed = open_usd_window(client)
    assert (listed.window_id, listed.obligation_count, listed.gross_value.value) == (window_id, 4, "500.00")
    assert not listed.positions  # lists carry no positions
    window = client.get_window(window_id)
    assert window.state == settlement_pb.WINDOW_STATE_OPEN
    expected = {a.name: Decimal("-280.00"), b.name: Decimal("180.00"), c.name: Decimal("100.00")}
    assert nets(window) == expected

    # Close by currency; a retry by id changes nothing and names the same next window.
    closed = client.close_window(currency="USD")
    assert (closed.window.window_id, closed.window.state, closed.changed) == (
        window_id,
        settlement_pb.WINDOW_STATE_CLOSED,
        True,
    )
    assert closed.next_window_id > window_id
    retry = client.close_window(window_id)
    assert (retry.window.state, retry.changed, retry.next_window_id) == (
        settlement_pb.WINDOW_STATE_CLOSED,
        False,
        closed.next_window_id,
    )
    assert open_usd_window(client).window_id == closed.next_window_id

    # The report before settlement: gross 500.00; bilateral a-b 300 + b-c 120 + c-a 20 = 440.00;
    # multilateral 280.00 in two payments (at most n - 1).
    response = client.get_settlement_report(window_id, format="json")
    report = response.report
    assert (report.window_id, report.currency_code, report.state) == (
        window_id,
        "USD",
        settlement_pb.WINDOW_STATE_CLOSED,
    )
    assert (report.gross_count, report.gross_value.value) == (4, "500.00")
    assert report.bilateral_net_value.value == "440.00"
    assert report.multilateral_net_value.value == "280.00"
    assert report.payments_count == 2
    assert report.netting_efficiency_bps == 4400  # (500 - 280) / 500
    assert {p.participant for p in report.participants} == set(expected)
    document = json.loads(response.document)
    assert document["window_id"] == window_id
    head = response.journal_chain_head
    assert head.seq > 0 and len(head.sha256) == 64
    assert document["journal_chain_head"] == {"seq": head.seq, "sha256": head.sha256}
    table = client.get_settlement_report(window_id, format="table").document
    assert "netting efficiency" in table

    # Run (twice: settled exactly once). Every settlement account holds its net.
    run = client.run_settlement(window_id)
    assert (run.window.state, run.changed) == (settlement_pb.WINDOW_STATE_SETTLING, True)
    posted = {t.participant: (t.settlement_account_id, to_decimal(t.net.value)) for t in run.transfers}
    assert posted == {x.name: (x.settlement, expected[x.name]) for x in (a, b, c)}
    for x in (a, b, c):
        assert to_decimal(client.get_account(x.settlement).posted_balance) == expected[x.name]
    rerun = client.run_settlement(window_id)
    assert not rerun.changed
    assert [t.transfer_id for t in rerun.transfers] == [t.transfer_id for t in run.transfers]
    assert to_decimal(client.get_account(a.settlement).posted_balance) == Decimal("-280.00")

    # a pays b 180.00 and c 100.00; as pacs.009 XML and as JSON.
    payments = client.list_settlement_payments(window_id, format="pacs009")
    assert sorted((p.payer, p.payee, p.amount.value) for p in payments.payments) == sorted(
        [(a.name, b.name, "180.00"), (a.name, c.name, "100.00")]
    )
    assert [p.index for p in payments.payments] == [1, 2]
    assert all(
        p.payer_bank_id == ROUTING[0] and p.rail == settlement_pb.SETTLEMENT_RAIL_FEDWIRE
        for p in payments.payments
    )
    assert "urn:iso:std:iso:20022:tech:xsd:pacs.009.001.09" in payments.document
    for p in payments.payments:
        assert p.end_to_end_id == f"PUENTE-W{window_id}-{p.index}" and p.end_to_end_id in payments.document
    as_json = json.loads(client.list_settlement_payments(window_id, format="json").document)
    assert len(as_json) == 2
    assert not client.list_settlement_payments(window_id).document  # no format: no document

    # Each participant's camt.053 of its settlement account.
    statement = client.get_settlement_statement(window_id, b.name)
    assert "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08" in statement
    assert "180.00" in statement

    # Confirmations: the last one settles the window; a retry changes nothing.
    assert client.confirm_settlement(window_id, a.name).window.state == settlement_pb.WINDOW_STATE_SETTLING
    assert client.confirm_settlement(window_id, b.name).changed
    last = client.confirm_settlement(window_id, c.name)
    assert (last.window.state, last.changed) == (settlement_pb.WINDOW_STATE_SETTLED, True)
    assert not client.confirm_settlement(window_id, a.name).changed
    settled = client.get_window(window_id)
    assert settled.state == settlement_pb.WINDOW_STATE_SETTLED
    assert all(p.confirmed for p in settled.positions) and settled.HasField("complete_time")
    assert window_id in {w.window_id for w in client.list_windows(state="settled")}
    assert window_id in {
        w.window_id for w in client.list_windows("USD", state=settlement_pb.WINDOW_STATE_SETTLED, page_size=1)
    }
    # Nothing is owed any more.
    assert to_decimal(client.get_participant_profile(a.name).net_debit_positions[0].value) == 0

    # Errors come back as PuenteError with the reason.
    with pytest.raises(PuenteError) as error:
        client.get_window(window_id + 1_000_000)
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.NOT_FOUND, "WINDOW_NOT_FOUND")
    assert error.value.metadata["window_id"] == str(window_id + 1_000_000)
    with pytest.raises(PuenteError) as error:
        client.run_settlement(closed.next_window_id)  # still open
    assert (error.value.code, error.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "WINDOW_STATE_INVALID",
    )
    with pytest.raises(PuenteError) as error:
        client.confirm_settlement(window_id, "no-such-bank")
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.NOT_FOUND, "PARTICIPANT_NOT_IN_WINDOW")
    with pytest.raises(ValueError, match="window_id"):
        client.get_window(0)
    with pytest.raises(ValueError, match="give window_id or currency"):
        client.close_window()


def test_net_debit_cap_and_a_window_that_fails_to_close(client: PuenteClient) -> None:
    fresh_usd_window(client)
    a = bank(client, "bank-a", ROUTING[0], cap="100.00")
    b = bank(client, "bank-b", None)  # no profile: no cap, but the window cannot close
    client.transfer(a.ops, b.ops, "USD", "60.00")
    with pytest.raises(RefusedError) as refused:
        client.transfer(a.ops, b.ops, "USD", "40.01")
    assert refused.value.code == "NET_DEBIT_CAP_EXCEEDED"
    client.transfer(a.ops, b.ops, "USD", "40.00")  # exactly the cap
    assert client.get_participant_profile(a.name).net_debit_positions[0].value == "100.00"

    closed = client.close_window(currency="USD")
    window = closed.window
    assert (window.state, closed.changed) == (settlement_pb.WINDOW_STATE_FAILED, True)
    assert b.name in window.reason and a.name not in window.reason
    with pytest.raises(PuenteError) as error:
        client.run_settlement(window.window_id)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # With b's profile, closing the same window again closes it.
    client.set_participant_profile(
        b.name, "US", [CurrencySettlement("USD", "fedwire", ROUTING[1], b.settlement, "1000.00")]
    )
    again = client.close_window(window.window_id)
    assert (again.window.state, again.changed, again.window.reason) == (
        settlement_pb.WINDOW_STATE_CLOSED,
        True,
        "",
    )
    assert nets(again.window) == {a.name: Decimal("-100.00"), b.name: Decimal("100.00")}


def _simulate_bank(server, tmp_path: Path, window_id: int, out_dir: Path) -> list[Path]:
    """`puente settlement simulate-bank`: what the settlement bank sends back for a window."""
    key_file = tmp_path / "operator.key"
    if not key_file.exists():
        key_file.write_text(server.operator_key + "\n")
        key_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUENTE_API_KEY")}
    run = subprocess.run(
        [
            str(server.binary),
            "--server",
            server.addr,
            "settlement",
            "simulate-bank",
            str(window_id),
            "--out-dir",
            str(out_dir),
        ],
        capture_output=True,
        timeout=60,
        env={**env, "PUENTE_API_KEY_FILE": str(key_file)},
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return sorted(out_dir.glob("*.xml"))


def test_reconciling_the_banks_documents_settles_the_window(
    client: PuenteClient, server, tmp_path: Path
) -> None:
    (a, b, c), window_id = day(client)
    client.close_window(window_id)
    client.run_settlement(window_id)
    files = _simulate_bank(server, tmp_path, window_id, tmp_path / "bank")
    assert {f.name.split("-")[0] for f in files} == {"camt053", "camt054", "pacs002"}, files

    # A document that fails its schema refuses the whole request; nothing changes.
    pacs002 = next(f for f in files if f.name.startswith("pacs002"))
    text = pacs002.read_text()
    broken = text.replace(text[text.index("<MsgId>") : text.index("</MsgId>") + len("</MsgId>")], "", 1)
    with pytest.raises(PuenteError) as error:
        client.reconcile_statements([*files, BankDocument("broken-pacs002.xml", broken)])
    if error.value.reason == "XSD_VALIDATOR_UNAVAILABLE":
        pytest.fail("the server needs xmllint (Debian: libxml2-utils; scripts/test-deps installs it)")
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DOCUMENT_INVALID")
    assert "broken-pacs002.xml" in error.value.message
    assert client.get_window(window_id).state == settlement_pb.WINDOW_STATE_SETTLING

    # A dry run decides but confirms nothing.
    dry = client.reconcile_statements(files, dry_run=True)
    [planned] = dry.windows
    assert planned.window.window_id == window_id
    assert set(planned.matched_participants) == {a.name, b.name, c.name}
    assert not planned.confirmed_participants and not dry.exceptions
    assert all(p.match == settlement_pb.PAYMENT_MATCH_MATCHED for p in planned.payments)
    assert client.get_window(window_id).state == settlement_pb.WINDOW_STATE_SETTLING

    # For real: everyone whose payments matched is confirmed, and the window is SETTLED.
    documents = [BankDocument.from_file(f) for f in files]
    done = client.reconcile_statements(documents, format="json")
    [reconciled] = done.windows
    assert reconciled.window.state == settlement_pb.WINDOW_STATE_SETTLED
    assert set(reconciled.confirmed_participants) == {a.name, b.name, c.name}
    assert not done.exceptions and json.loads(done.document)
    assert client.get_window(window_id).state == settlement_pb.WINDOW_STATE_SETTLED
    # The same documents again: nothing left to confirm.
    again = client.reconcile_statements(documents)
    assert all(not w.confirmed_participants for w in again.windows)

"""End-to-end tests of puente_client against a real server (see conftest.py).

The tests share one server; each opens its own accounts under its own participant names, so
they do not depend on each other or on their order.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from puente_client import (
    EntryKind,
    PuenteClient,
    PuenteError,
    RefusedError,
    TransferState,
    make_transfer,
    new_id,
    pb,
    to_decimal,
)


def participant(client: PuenteClient, name: str) -> str:
    """A new participant, registered (operators open accounts only for registered ones)."""
    who = f"{name}-{uuid.uuid4().hex[:8]}"
    client.create_participant(who, who)
    return who


def balances(client: PuenteClient, account_id: str) -> tuple[Decimal, Decimal]:
    account = client.get_account(account_id)
    return to_decimal(account.posted_balance), to_decimal(account.available_balance)


class Book:
    """Two participants, each with a USD and an MXN wallet (no overdraft), and a settlement
    bank account per currency (unrestricted: funds the wallets)."""

    def __init__(self, client: PuenteClient) -> None:
        self.alice, self.bob = participant(client, "alice"), participant(client, "bob")
        bank = participant(client, "bank")
        self.bank = {ccy: client.create_account(bank, ccy).id for ccy in ("USD", "MXN")}
        self.wallets = {
            (who, ccy): client.create_account(who, ccy, no_overdraft=True, holder_ref=f"{who}-{ccy}")
            for who in (self.alice, self.bob)
            for ccy in ("USD", "MXN")
        }

    def wallet(self, who: str, ccy: str) -> str:
        return self.wallets[(who, ccy)].id


@pytest.fixture
def book(client: PuenteClient) -> Book:
    return Book(client)


def test_open_usd_and_mxn_accounts(client: PuenteClient, book: Book) -> None:
    for (who, ccy), account in book.wallets.items():
        assert account.participant == who
        assert account.currency_code == ccy
        assert account.debits_must_not_exceed_credits
        assert to_decimal(account.posted_balance) == 0
        got = client.get_account(uuid.UUID(account.id))  # a uuid.UUID works as an id too
        assert got.id == account.id and got.holder_ref == f"{who}-{ccy}"
    mine = {a.id for a in client.list_accounts(book.alice)}
    assert mine == {book.wallet(book.alice, "USD"), book.wallet(book.alice, "MXN")}

    # Opening again with the same content is an idempotent retry; a different currency is not.
    usd = book.wallets[(book.alice, "USD")]
    again = client.create_account(
        book.alice, "USD", no_overdraft=True, holder_ref=usd.holder_ref, id=usd.id
    )
    assert again.id == usd.id
    with pytest.raises(RefusedError) as refused:
        client.create_account(book.alice, "MXN", no_overdraft=True, holder_ref=usd.holder_ref, id=usd.id)
    assert refused.value.code == "EXISTS_WITH_DIFFERENT_CURRENCY"

    with pytest.raises(PuenteError) as missing:
        client.get_account(new_id())
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.reason == "ACCOUNT_NOT_FOUND"
    assert missing.value.domain == "puente.v1"


def test_fund_and_transfer(client: PuenteClient, book: Book) -> None:
    a_usd, b_usd = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    a_mxn, b_mxn = book.wallet(book.alice, "MXN"), book.wallet(book.bob, "MXN")
    client.transfer(book.bank["USD"], a_usd, "USD", Decimal("100.00"))
    client.transfer(book.bank["MXN"], a_mxn, "MXN", "1750.50")
    result = client.transfer(a_usd, b_usd, "USD", "30.25", reference="invoice 7")
    assert result.code == "OK" and not result.replayed and result.position > 0
    client.transfer(a_mxn, b_mxn, "MXN", 500)  # an int is exact too

    assert balances(client, a_usd) == (Decimal("69.75"), Decimal("69.75"))
    assert balances(client, b_usd) == (Decimal("30.25"), Decimal("30.25"))
    assert balances(client, a_mxn) == (Decimal("1250.50"), Decimal("1250.50"))
    assert balances(client, b_mxn) == (Decimal("500.00"), Decimal("500.00"))
    assert balances(client, book.bank["USD"])[0] <= Decimal("-100.00")

    # Currencies never mix.
    with pytest.raises(RefusedError) as refused:
        client.transfer(a_usd, b_mxn, "USD", "1.00")
    assert refused.value.code in {"ACCOUNTS_MUST_HAVE_SAME_CURRENCY", "TRANSFER_CURRENCY_MISMATCH"}


def test_idempotent_retry_returns_the_first_outcome(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    client.transfer(book.bank["USD"], a, "USD", "10.00")
    tid = uuid.uuid4()
    first = client.transfer(a, b, "USD", "4.00", id=tid)
    retry = client.transfer(a, b, "USD", "4.00", id=str(tid))
    assert not first.replayed
    assert retry.replayed
    assert retry.position == first.position
    assert retry.create_time == first.create_time
    assert balances(client, a)[0] == Decimal("6.00")  # moved once

    # The same id with another amount is refused, and nothing moves.
    with pytest.raises(RefusedError) as refused:
        client.transfer(a, b, "USD", "5.00", id=tid)
    assert refused.value.code == "EXISTS_WITH_DIFFERENT_AMOUNT"
    assert refused.value.result is not None and refused.value.result.position == 0
    assert balances(client, a)[0] == Decimal("6.00")
    assert client.get_transfer(tid).state == TransferState.TRANSFER_STATE_POSTED


def test_amount_with_too_many_decimals_is_invalid_argument(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    with pytest.raises(PuenteError) as error:
        client.transfer(a, b, "USD", "1.001")
    e = error.value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.reason == "INVALID_FIELD"
    assert e.domain == "puente.v1"
    assert "transfers[0].amount.value" in e.fields
    assert any("decimal places" in v.description for v in e.field_violations)
    # The text names each bad field once (the status message already lists them).
    assert str(e).count("has 3 decimal places") == 1, str(e)
    assert str(e).startswith("INVALID_ARGUMENT INVALID_FIELD: invalid request\n  transfers[0].amount.value: ")
    # A Decimal with an exponent is sent as plain decimal text, and is just as invalid.
    with pytest.raises(PuenteError) as error:
        client.transfer(a, b, "USD", Decimal("1.001"))
    assert error.value.fields == ["transfers[0].amount.value"]

    # A batch with one bad event is rejected whole: the good one does not move either.
    client.transfer(book.bank["USD"], a, "USD", "5.00")
    good = make_transfer(a, b, "USD", "1.00")
    bad = make_transfer(a, b, "USD", "1.001")
    with pytest.raises(PuenteError) as error:
        client.create_transfers([good, bad])
    assert error.value.fields == ["transfers[1].amount.value"]
    assert balances(client, a)[0] == Decimal("5.00")


def test_overdraft_refused(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    client.transfer(book.bank["USD"], a, "USD", "10.00")
    with pytest.raises(RefusedError) as refused:
        client.transfer(a, b, "USD", "10.01")
    assert refused.value.code == "EXCEEDS_CREDITS"
    assert balances(client, a) == (Decimal("10.00"), Decimal("10.00"))
    client.transfer(a, b, "USD", "10.00")  # exactly the balance is fine
    assert balances(client, a)[0] == 0

    # An overdraft limit lets a wallet go that far below zero, and no further.
    limited = client.create_account(book.alice, "USD", overdraft_limit=Decimal("5.00"))
    assert limited.debits_must_not_exceed_credits
    assert to_decimal(limited.overdraft_limit) == Decimal("5.00")
    client.transfer(limited.id, b, "USD", "4.00")
    with pytest.raises(RefusedError) as refused:
        client.transfer(limited.id, b, "USD", "1.01")
    assert refused.value.code == "EXCEEDS_CREDITS"
    assert balances(client, limited.id)[0] == Decimal("-4.00")


def test_pending_partial_post_and_void_after_post(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "MXN"), book.wallet(book.bob, "MXN")
    client.transfer(book.bank["MXN"], a, "MXN", "100.00")
    pending_id = new_id()
    reserved = client.transfer(a, b, "MXN", "60.00", pending=True, id=pending_id)
    assert reserved.code == "OK"
    assert balances(client, a) == (Decimal("100.00"), Decimal("40.00"))
    assert client.get_transfer(pending_id).state == TransferState.TRANSFER_STATE_PENDING
    # The reservation counts against the wallet.
    with pytest.raises(RefusedError) as refused:
        client.transfer(a, b, "MXN", "40.01")
    assert refused.value.code == "EXCEEDS_CREDITS"

    post_id = new_id()
    posted = client.post(pending_id, "MXN", "25.00", id=post_id)
    assert posted.code == "OK" and posted.position > reserved.position
    # A partial post moves its amount and releases the rest of the reservation.
    assert balances(client, a) == (Decimal("75.00"), Decimal("75.00"))
    assert balances(client, b)[0] == Decimal("25.00")
    assert client.get_transfer(pending_id).state == TransferState.TRANSFER_STATE_PENDING_POSTED
    post = client.get_transfer(post_id)
    assert post.kind == pb.TRANSFER_KIND_POST_PENDING
    assert post.effective_amount.value == "25.00"

    with pytest.raises(RefusedError) as refused:
        client.void(pending_id, "MXN")
    assert refused.value.code == "PENDING_TRANSFER_ALREADY_POSTED"
    assert balances(client, a) == (Decimal("75.00"), Decimal("75.00"))

    # A second reservation, voided: everything comes back.
    other = new_id()
    client.transfer(a, b, "MXN", "70.00", pending=True, id=other)
    assert balances(client, a) == (Decimal("75.00"), Decimal("5.00"))
    client.void(other, "MXN")
    assert balances(client, a) == (Decimal("75.00"), Decimal("75.00"))
    assert client.get_transfer(other).state == TransferState.TRANSFER_STATE_PENDING_VOIDED
    with pytest.raises(RefusedError) as refused:
        client.post(other, "MXN")
    assert refused.value.code == "PENDING_TRANSFER_ALREADY_VOIDED"


def test_failed_linked_chain_changes_nothing(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    client.transfer(book.bank["USD"], a, "USD", "10.00")
    before = {x: balances(client, x) for x in (a, b, book.bank["USD"])}
    chain = [
        make_transfer(a, b, "USD", "3.00", linked=True),
        make_transfer(book.bank["USD"], b, "USD", "1.00", linked=True),
        make_transfer(a, b, "USD", "50.00"),  # exceeds alice's credits: the chain fails
    ]
    results = client.create_transfers(chain)
    assert [r.index for r in results] == [0, 1, 2]
    assert [r.code for r in results] == ["LINKED_EVENT_FAILED", "LINKED_EVENT_FAILED", "EXCEEDS_CREDITS"]
    assert all(r.position == 0 for r in results)
    assert {x: balances(client, x) for x in before} == before

    # The same chain within the balance commits as one.
    chain = [
        make_transfer(a, b, "USD", "3.00", linked=True),
        make_transfer(a, b, "USD", "7.00"),
    ]
    results = client.create_transfers(chain)
    assert [r.code for r in results] == ["OK", "OK"]
    assert results[0].position < results[1].position
    assert balances(client, a)[0] == 0


def test_statement_running_balances(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    client.transfer(book.bank["USD"], a, "USD", "100.00")
    client.transfer(a, b, "USD", "30.00")
    client.transfer(b, a, "USD", "5.50")
    pending = new_id()
    client.transfer(a, b, "USD", "10.00", pending=True, id=pending)
    client.void(pending, "USD")

    statement = client.statement(a)
    assert statement.account.id == a
    assert statement.opening_posted_balance == "0.00"
    assert statement.closing_posted_balance == "75.50"
    lines = [
        (EntryKind.Name(line.kind), line.debit, line.amount.value, line.posted_balance, line.available_balance)
        for line in statement.lines
    ]
    assert lines == [
        ("ENTRY_KIND_POSTED", False, "100.00", "100.00", "100.00"),
        ("ENTRY_KIND_POSTED", True, "30.00", "70.00", "70.00"),
        ("ENTRY_KIND_POSTED", False, "5.50", "75.50", "75.50"),
        ("ENTRY_KIND_PENDING", True, "10.00", "75.50", "65.50"),
        ("ENTRY_KIND_VOID_PENDING", True, "10.00", "75.50", "75.50"),
    ]
    positions = [line.position for line in statement.lines]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    # Fetched two lines a page, the client joins the pages into the same statement.
    paged = client.statement(a, page_size=2)
    assert list(paged.lines) == list(statement.lines)
    assert paged.opening_posted_balance == "0.00" and paged.closing_posted_balance == "75.50"


def test_stream_transfers_in_position_order(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    ids = [new_id() for _ in range(4)]
    first = client.transfer(book.bank["USD"], a, "USD", "20.00", id=ids[0])
    client.transfer(a, b, "USD", "1.00", id=ids[1])
    client.transfer(a, b, "USD", "2.00", id=ids[2])

    stream = client.stream_transfers(first.position - 1, timeout=20)
    seen: list[pb.Transfer] = []
    try:
        for transfer in stream:
            seen.append(transfer)
            if transfer.id == ids[2]:
                # Caught up: what commits now arrives live on the same stream.
                client.transfer(b, a, "USD", "0.50", id=ids[3])
            if transfer.id == ids[3]:
                break
    finally:
        stream.close()  # cancels the call
    positions = [t.position for t in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert seen[0].id == ids[0] and seen[0].position == first.position
    mine = [t for t in seen if t.id in ids]
    assert [t.id for t in mine] == ids
    assert [t.amount.value for t in mine] == ["20.00", "1.00", "2.00", "0.50"]
    assert all(t.state == TransferState.TRANSFER_STATE_POSTED for t in mine)


def test_list_pagination(client: PuenteClient) -> None:
    who = participant(client, "paged")
    opened = sorted(client.create_account(who, "USD").id for _ in range(5))
    listed = [a.id for a in client.list_accounts(who, page_size=2)]
    assert listed == opened  # every page, in id order, nothing twice

    page = client.stub.ListAccounts(pb.ListAccountsRequest(participant=who, page_size=2))
    assert len(page.accounts) == 2 and page.next_page_token

    bank = client.create_account(who, "USD")
    ids = [client.transfer(bank.id, opened[0], "USD", f"{n}.00").position for n in range(1, 6)]
    asc = [t.position for t in client.list_transfers(opened[0], page_size=2)]
    desc = [t.position for t in client.list_transfers(opened[0], page_size=2, descending=True)]
    assert asc == ids
    assert desc == ids[::-1]

    with pytest.raises(PuenteError) as error:
        list(client.list_accounts(who, page_size=5000))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.fields == ["page_size"]


def test_float_amounts_are_refused_client_side(client: PuenteClient, book: Book) -> None:
    a, b = book.wallet(book.alice, "USD"), book.wallet(book.bob, "USD")
    client.transfer(book.bank["USD"], a, "USD", "5.00")
    with pytest.raises(TypeError, match="float"):
        client.transfer(a, b, "USD", 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        client.post(new_id(), "USD", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        client.create_account(book.alice, "USD", overdraft_limit=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.get_account(12345)  # type: ignore[arg-type]
    assert balances(client, a)[0] == Decimal("5.00")  # nothing was sent


def test_server_reflection_without_local_protos(server) -> None:
    # A fresh descriptor pool backed only by the server's reflection service: nothing of the
    # generated stubs is used.
    with grpc.insecure_channel(server.addr) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"puente.v1.LedgerService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        ledger = pool.FindServiceByName("puente.v1.LedgerService")
        assert {m.name for m in ledger.methods} >= {
            "CreateAccounts",
            "GetAccount",
            "ListAccounts",
            "CreateTransfers",
            "GetTransfer",
            "ListTransfers",
            "GetAccountStatement",
            "StreamTransfers",
        }
        transfer = pool.FindMessageTypeByName("puente.v1.Transfer")
        assert transfer.fields_by_name["amount"].message_type.full_name == "puente.v1.Money"
        health = pool.FindServiceByName("grpc.health.v1.Health")
        assert "Check" in {m.name for m in health.methods}


def test_health_check_is_serving(client: PuenteClient) -> None:
    assert client.health() == "SERVING"
    assert client.health("puente.v1.LedgerService") == "SERVING"
    with pytest.raises(PuenteError) as error:
        client.health("no.such.Service")
    assert error.value.code == grpc.StatusCode.NOT_FOUND

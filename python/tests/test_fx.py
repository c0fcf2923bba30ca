"""FX through the Python client against the real server: quote with disclosure, offline
signature check, execute, retry, reuse, tamper, cancel."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from puente_client import PuenteClient, PuenteError, fx_pb, new_id, to_decimal, verify_quote


def participant(client: PuenteClient, name: str) -> str:
    """A new participant, registered (operators open accounts only for registered ones)."""
    who = f"{name}-{uuid.uuid4().hex[:8]}"
    client.create_participant(who, who)
    return who


def test_quote_execute_cancel(client: PuenteClient) -> None:
    client.set_rate("USD", "MXN", Decimal("18.9125"))
    app, bank = participant(client, "remit"), participant(client, "mxbank")
    funding = client.create_account(app, "USD")
    sender = client.create_account(app, "USD", no_overdraft=True)
    recipient = client.create_account(bank, "MXN")
    client.transfer(funding.id, sender.id, "USD", "500.00")

    with pytest.raises(TypeError):
        client.quote(app, "sme", "USD", "MXN", send=200.0)  # floats never carry money

    quote = client.quote(app, "sme", "USD", "MXN", send="200.00")
    assert quote.total_debit.value == "205.00"
    disclosure = quote.disclosure
    assert disclosure.amount_received == quote.receive_amount
    assert "Total" in disclosure.text_en and "Total" in disclosure.text_es

    key = client.fx_public_key()
    assert verify_quote(key, quote)
    keys = client.fx_public_keys()
    assert quote.signing_key_id and list(keys)[0] == quote.signing_key_id
    assert keys[quote.signing_key_id] == key
    assert verify_quote(keys, quote)
    assert not verify_quote({"other": key}, quote)  # the key the quote names is not there
    tampered = fx_pb.FxQuote()
    tampered.CopyFrom(quote)
    tampered.canonical = quote.canonical[:-1] + bytes([quote.canonical[-1] ^ 1])
    assert not verify_quote(key, tampered) and not verify_quote(keys, tampered)
    with pytest.raises(PuenteError) as error:
        client.execute_quote(tampered, sender.id, recipient.id)
    assert error.value.reason == "QUOTE_SIGNATURE_INVALID"

    execution = new_id()
    done = client.execute_quote(quote, sender.id, recipient.id, execution_id=execution)
    assert done.state == fx_pb.FX_EXECUTION_STATE_POSTED
    # The Regulation E receipt: paid now, funds available at once (not held), both languages.
    assert done.receipt.funds_available_time == done.receipt.payment_time
    assert "Date funds available" in done.receipt.text_en
    assert "Fecha de disponibilidad de los fondos" in done.receipt.text_es
    again = client.execute_quote(quote, sender.id, recipient.id, execution_id=execution)
    assert again.replayed and list(again.transfer_ids) == list(done.transfer_ids)
    with pytest.raises(PuenteError) as error:
        client.execute_quote(quote, sender.id, recipient.id)
    assert error.value.reason == "QUOTE_ALREADY_USED"
    assert to_decimal(client.get_account(sender.id).posted_balance) == Decimal("295.00")
    assert client.get_account(recipient.id).posted_balance == quote.receive_amount.value

    # A remittance is held through the cancellation window; cancelling refunds fees too.
    remittance = client.quote(app, "remittance", "USD", "MXN", receive="1000.00")
    assert remittance.disclosure.cancellation_window_ms == 30 * 60 * 1000
    held = client.execute_quote(remittance, sender.id, recipient.id)
    assert held.state == fx_pb.FX_EXECUTION_STATE_HELD
    assert held.receipt.funds_available_time == held.cancel_deadline
    refund = client.cancel_transfer(remittance.id)
    assert refund.refunded == remittance.total_debit
    account = client.get_account(sender.id)
    assert to_decimal(account.available_balance) == Decimal("295.00")
    currencies = {p.currency_code for p in client.exposure()}
    assert {"USD", "MXN"} <= currencies

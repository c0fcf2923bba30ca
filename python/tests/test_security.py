"""Credentials and tenant isolation, from Python: keys are made here (only their SHA-256 goes
to the server), a participant sees only its own accounts, and a call without a key fails."""

from __future__ import annotations

import uuid

import grpc
import pytest

from puente_client import PuenteClient, PuenteError, new_api_key


def test_a_call_without_a_key_is_unauthenticated(server) -> None:
    with PuenteClient(server.addr, api_key="") as anonymous:
        with pytest.raises(PuenteError) as error:
            list(anonymous.list_accounts())
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert error.value.reason == "UNAUTHENTICATED"
        # Health stays open (load balancers and orchestrators probe it without a key).
        assert anonymous.health() == "SERVING"


def test_a_participant_sees_and_moves_only_its_own_accounts(client: PuenteClient, server) -> None:
    name = f"py-{uuid.uuid4().hex[:8]}"
    participant, key = client.create_participant(name, "Python fintech")
    assert participant.id == name and len(participant.keys) == 1
    assert key.key not in repr(key) and key.key_id in key.key
    client.create_participant("py-operator-owned", "Owned by the operator")
    operator_account = client.create_account("py-operator-owned", "USD")
    with PuenteClient(server.addr, api_key=key.key) as fintech:
        me = fintech.whoami()
        assert (me.participant_id, me.key_id) == (name, key.key_id)
        own = fintech.create_account(name, "USD", no_overdraft=True)
        assert [a.id for a in fintech.list_accounts()] == [own.id]
        with pytest.raises(PuenteError) as error:
            fintech.get_account(operator_account.id)
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        # Administering participants is for operators.
        with pytest.raises(PuenteError) as error:
            fintech.create_participant(f"{name}-x")
        assert error.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_a_wrong_key_is_unauthenticated(server) -> None:
    with PuenteClient(server.addr, api_key=new_api_key().key) as stranger:
        with pytest.raises(PuenteError) as error:
            stranger.whoami()
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED

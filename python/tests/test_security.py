"""Credentials and tenant isolation, from Python: keys are made here (only their SHA-256 goes
to the server), a participant sees only its own accounts, and a call without a key fails."""

from __future__ import annotations

import uuid

import grpc
import pytest

from puente_client import PuenteClient, PuenteError, api_key_from_env, new_api_key


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


def test_the_key_comes_from_the_environment_like_the_cli(server, tmp_path, monkeypatch) -> None:
    """No api_key: the file named by PUENTE_API_KEY_FILE, else PUENTE_API_KEY; api_key wins."""
    key_file = tmp_path / "operator.key"
    key_file.write_text(server.operator_key + "\n")
    wrong = new_api_key().key
    # Both set: the file wins (as in the CLI and the Rust client).
    monkeypatch.setenv("PUENTE_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("PUENTE_API_KEY", wrong)
    with PuenteClient(server.addr) as operator:
        assert operator.whoami().participant_id == "operator"
    # An explicit api_key beats the environment; "" means no key at all.
    with PuenteClient(server.addr, api_key="") as anonymous:
        with pytest.raises(PuenteError) as error:
            anonymous.whoami()
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    # Only PUENTE_API_KEY.
    monkeypatch.delenv("PUENTE_API_KEY_FILE")
    monkeypatch.setenv("PUENTE_API_KEY", server.operator_key)
    with PuenteClient(server.addr) as operator:
        assert operator.whoami().participant_id == "operator"
    # A named file that is missing or empty is an error, not a call without a key.
    monkeypatch.setenv("PUENTE_API_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(OSError, match="PUENTE_API_KEY_FILE"):
        PuenteClient(server.addr)
    (tmp_path / "empty.key").write_text("\n")
    monkeypatch.setenv("PUENTE_API_KEY_FILE", str(tmp_path / "empty.key"))
    with pytest.raises(ValueError, match="empty"):
        api_key_from_env()
    monkeypatch.delenv("PUENTE_API_KEY_FILE")
    monkeypatch.delenv("PUENTE_API_KEY")
    assert api_key_from_env() is None

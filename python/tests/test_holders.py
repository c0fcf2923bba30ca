"""Account holders through the Python client against the real server (a small version of
tests/e2e/security.rs): registration with personal data, reading it back, lists without it,
the KYC policy and tiers that limit monthly credits, and personal data that never shows in a
repr, an error, the server's log or its data directory.

The KYC policy is server-wide: every test here sets the same one, so order does not matter.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator

import grpc
import pytest

from puente_client import (
    Holder,
    PersonalData,
    PuenteClient,
    PuenteError,
    RefusedError,
    UsTier,
    holders_pb,
)

ANA = PersonalData(
    full_name="Ana Sofía Pérez Quintana",
    address="Calle Zaragoza 118, Monterrey",
    clabe="032180000118359719",
    rfc="GODE561231GR8",
)
JOE = PersonalData(full_name="Joe Doe", routing_number="011000015", account_number="000123456789")


def secrets_of(data: PersonalData) -> list[str]:
    return [value for value in vars(data).values() if value]


def set_policy(client: PuenteClient) -> None:
    policy = client.set_kyc_policy("8.70", [UsTier("US_BASIC", "2000.00", "5000.00")])
    assert policy.udi_rate == "8.70"
    assert [(t.name, t.monthly_credit_limit, t.balance_limit) for t in policy.us_tiers] == [
        ("US_BASIC", "2000.00", "5000.00")
    ]


def participant(client: PuenteClient, server, name: str) -> tuple[str, PuenteClient]:
    """A new participant and a client with its own key (close it after use)."""
    who = f"{name}-{uuid.uuid4().hex[:8]}"
    _, key = client.create_participant(who, who)
    return who, PuenteClient(server.addr, timeout=30, api_key=key.key)


@pytest.fixture
def fintech(client: PuenteClient, server) -> Iterator[tuple[str, PuenteClient]]:
    who, own = participant(client, server, "fintech")
    with own:
        yield who, own


def test_personal_data_never_shows_in_a_repr() -> None:
    for shown in (
        repr(ANA),
        str(ANA),
        f"{ANA}",
        repr(Holder("p", "ana", "individual", "MX", "MX_NIVEL_1", ANA)),
    ):
        for secret in secrets_of(ANA):
            assert secret not in shown, shown
    assert (
        repr(ANA)
        == "PersonalData(full_name=[redacted], address=[redacted], clabe=[redacted], rfc=[redacted])"
    )
    assert repr(PersonalData()) == "PersonalData()"
    assert ANA.proto().clabe == ANA.clabe and PersonalData.from_proto(ANA.proto()) == ANA
    with pytest.raises(TypeError):
        PersonalData(full_name=None)  # type: ignore[arg-type]


def test_create_get_and_list_holders(client: PuenteClient, server, fintech: tuple[str, PuenteClient]) -> None:
    set_policy(client)
    name, own = fintech

    # Validation by check digit, format and kind; the value never comes back in the error.
    bad = PersonalData(full_name=ANA.full_name, clabe="032180000118359718")
    with pytest.raises(PuenteError) as error:
        own.create_holder("ana", kind="individual", country="MX", kyc_tier="MX_NIVEL_1", personal_data=bad)
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert any(field.endswith("clabe") for field in error.value.fields), error.value.fields
    assert "032180000118359718" not in str(error.value) and ANA.full_name not in str(error.value)
    business_rfc = PersonalData(full_name=ANA.full_name, rfc="ABC010101AB1")
    with pytest.raises(PuenteError) as error:
        own.create_holder(
            "ana", kind="individual", country="MX", kyc_tier="MX_NIVEL_1", personal_data=business_rfc
        )
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT  # an individual with a business RFC
    with pytest.raises(PuenteError) as error:
        own.create_holder("ana", kind="individual", country="MX", kyc_tier="MX_NIVEL_9", personal_data=ANA)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="kind"):
        own.create_holder("ana", kind="robot", country="MX", kyc_tier="MX_NIVEL_1")

    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    holder, created = own.create_holder(
        "ana", kind="individual", country="MX", kyc_tier="MX_NIVEL_1", personal_data=ANA
    )
    assert created
    assert (holder.participant, holder.holder_id, holder.kind, holder.country, holder.kyc_tier) == (
        name,
        "ana",
        "individual",
        "MX",
        "MX_NIVEL_1",
    )
    assert holder.personal_data == ANA
    assert holder.create_time is not None and holder.create_time > before
    assert not any(secret in repr(holder) for secret in secrets_of(ANA))

    # Read back by its participant, and by an operator naming the participant.
    assert own.get_holder("ana") == holder
    assert client.get_holder("ana", participant=name) == holder
    with pytest.raises(PuenteError) as error:
        client.get_holder("ana")  # operators must name the participant
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(PuenteError) as error:
        own.get_holder("nobody")
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.NOT_FOUND, "HOLDER_NOT_FOUND")

    # Lists carry no personal data.
    assert list(own.list_holders()) == [
        Holder(name, "ana", "individual", "MX", "MX_NIVEL_1", None, holder.create_time)
    ]
    assert [h.holder_id for h in client.list_holders(name)] == ["ana"]

    # A retry is idempotent (the first registration stands); different fields are refused.
    again, created = own.create_holder(
        "ana", kind="individual", country="MX", kyc_tier="MX_NIVEL_1", personal_data=ANA
    )
    assert not created and again == holder
    with pytest.raises(PuenteError) as error:
        own.create_holder("ana", kind="individual", country="MX", kyc_tier="MX_NIVEL_2", personal_data=ANA)
    assert (error.value.code, error.value.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "HOLDER_EXISTS_WITH_DIFFERENT_FIELDS",
    )

    # Another participant's holder does not exist for it; the policy is for operators.
    other_name, other = participant(client, server, "other")
    with other:
        with pytest.raises(PuenteError) as error:
            other.get_holder("ana")
        assert (error.value.code, error.value.reason) == (grpc.StatusCode.NOT_FOUND, "HOLDER_NOT_FOUND")
        # Naming the other participant: to this one, that participant does not exist.
        for call in (
            lambda: other.get_holder("ana", participant=name),
            lambda: other.get_holder_usage("ana", participant=name),
        ):
            with pytest.raises(PuenteError) as error:
                call()
            assert error.value.code == grpc.StatusCode.NOT_FOUND
            assert not any(secret in str(error.value) for secret in secrets_of(ANA))
        assert list(other.list_holders(name)) == []
        with pytest.raises(PuenteError) as error:
            other.set_kyc_policy("1")
        assert error.value.code == grpc.StatusCode.PERMISSION_DENIED

    # Neither the server's log nor its data directory holds the personal data in clear.
    log = server.log.read_bytes()
    stored = b"".join(p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file())
    assert name.encode() in stored  # the holder's record is there, its participant in clear
    for secret in secrets_of(ANA):
        assert secret.encode() not in log, f"{secret} in the server log"
        assert secret.encode() not in stored, f"{secret} stored in clear"


def test_kyc_tiers_limit_monthly_credits(client: PuenteClient) -> None:
    set_policy(client)
    name = f"fintech-{uuid.uuid4().hex[:8]}"
    client.create_participant(name, name)
    treasury = f"treasury-{uuid.uuid4().hex[:8]}"
    client.create_participant(treasury, treasury)

    # Registered by an operator for the participant.
    ana, created = client.create_holder(
        "ana", participant=name, kind="individual", country="MX", kyc_tier="MX_NIVEL_1", personal_data=ANA
    )
    assert created and ana.participant == name
    joe, _ = client.create_holder(
        "joe", participant=name, kind="individual", country="US", kyc_tier="US_BASIC", personal_data=JOE
    )
    acme, _ = client.create_holder(
        "acme",
        participant=name,
        kind=holders_pb.HOLDER_KIND_BUSINESS,
        country="MX",
        kyc_tier="MX_NIVEL_4",
        personal_data=PersonalData(full_name="Acme SA de CV", rfc="ABC010101AB1"),
    )
    assert (joe.personal_data, acme.kind) == (JOE, "business")
    assert [h.holder_id for h in client.list_holders(name, page_size=1)] == ["acme", "ana", "joe"]

    # Nivel 1: 750 UDIs a month at 8.70 = MXN 6,525.00; its accounts are those whose
    # holder_ref is "ana".
    mxn = client.create_account(name, "MXN", no_overdraft=True, holder_ref="ana").id
    usd = client.create_account(name, "USD", no_overdraft=True, holder_ref="ana").id
    source_mxn = client.create_account(treasury, "MXN").id
    source_usd = client.create_account(treasury, "USD").id
    client.transfer(source_mxn, mxn, "MXN", "6500.00")
    with pytest.raises(RefusedError) as refused:
        client.transfer(source_mxn, mxn, "MXN", "25.01")
    assert refused.value.code == "KYC_LIMIT_EXCEEDED"
    client.transfer(source_mxn, mxn, "MXN", "25.00")
    with pytest.raises(RefusedError) as refused:
        client.transfer(source_usd, usd, "USD", "1.00")  # the tier covers MXN only
    assert refused.value.code == "KYC_CURRENCY_NOT_COVERED"

    usage = client.get_holder_usage("ana", participant=name)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert (usage.kyc_tier, usage.currency_code, usage.month) == (
        "MX_NIVEL_1",
        "MXN",
        now.year * 100 + now.month,
    )
    assert (usage.credited, usage.monthly_credit_limit, usage.balance_limit) == (
        "6525.00",
        "6525.00",
        "8700.00",
    )
    assert usage.refused_credits_from_others == 1  # the treasury's 25.01

    joe_usage = client.get_holder_usage("joe", participant=name)
    assert (joe_usage.currency_code, joe_usage.credited) == ("USD", "0.00")
    assert (joe_usage.monthly_credit_limit, joe_usage.balance_limit) == ("2000.00", "5000.00")
    with pytest.raises(PuenteError) as error:
        client.get_holder_usage("nobody", participant=name)
    assert (error.value.code, error.value.reason) == (grpc.StatusCode.NOT_FOUND, "HOLDER_NOT_FOUND")

"""Account holders: the `HolderService` wrappers of `PuenteClient` (a participant's customers,
their KYC tier and personal data, their monthly usage, the KYC policy).

Personal data never shows in a repr, a str or a log line: `PersonalData` prints only which
fields are set, and `Holder` (the result of `create_holder`, `get_holder`, `list_holders`)
holds it as a `PersonalData`, never as the generated message (whose repr prints every field).
Read a field by name (`holder.personal_data.full_name`) where it is needed::

    puente.set_kyc_policy("8.70", [UsTier("US_BASIC", monthly_credit_limit="2000.00")])
    ana = PersonalData(full_name="Ana Pérez", clabe="032180000118359719")
    holder, created = puente.create_holder("ana", kind="individual", country="MX",
                                           kyc_tier="MX_NIVEL_1", personal_data=ana)
    print(holder)          # Holder(..., personal_data=PersonalData(full_name=[redacted], ...))
    account = puente.create_account("fintech-a", "MXN", holder_ref="ana")  # tier limits apply
    print(puente.get_holder_usage("ana").credited)
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Optional, Union

from ._base import _Calls
from ._stubs import holders_pb
from .convert import AmountLike, _amount, _choice, _id

__all__ = ["HOLDER_KINDS", "Holder", "PersonalData", "UsTier"]

#: Holder kinds of `create_holder`.
HOLDER_KINDS = {"individual": holders_pb.HOLDER_KIND_INDIVIDUAL, "business": holders_pb.HOLDER_KIND_BUSINESS}


@dataclasses.dataclass(frozen=True, repr=False)
class PersonalData:
    """A holder's personal data. Every field is optional; the server validates those given
    (CLABE and ABA routing number by check digit, RFC by format: 13 characters for an
    individual, 12 for a business) and never echoes a value in an error. Stored encrypted.

    The repr and str name the fields that are set, never their values."""

    full_name: str = ""
    address: str = ""
    #: Mexican interbank account number (18 digits).
    clabe: str = ""
    #: US bank account number (4 to 17 digits).
    account_number: str = ""
    #: US ABA routing number (9 digits).
    routing_number: str = ""
    #: Mexican RFC.
    rfc: str = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not isinstance(getattr(self, field.name), str):
                raise TypeError(f"personal data {field.name} must be a str")

    def __repr__(self) -> str:  # never show personal data
        set_fields = [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]
        return f"PersonalData({', '.join(f'{name}=[redacted]' for name in set_fields)})"

    __str__ = __repr__

    def proto(self) -> "holders_pb.HolderPersonalData":
        return holders_pb.HolderPersonalData(**dataclasses.asdict(self))

    @classmethod
    def from_proto(cls, message: "holders_pb.HolderPersonalData") -> "PersonalData":
        return cls(**{f.name: getattr(message, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Holder:
    """An account holder: a participant's customer. An account belongs to it when the
    account's `holder_ref` is its `holder_id` (same participant); its `kyc_tier` limits what
    those accounts may receive (refused with KYC_LIMIT_EXCEEDED).

    Attributes:
        participant: the participant whose customer it is.
        holder_id: its id, chosen by the participant.
        kind: "individual" or "business" (a key of `HOLDER_KINDS`).
        country: "MX" or "US".
        kyc_tier: MX_NIVEL_1 .. MX_NIVEL_4, or US_<NAME> of a configured US tier.
        personal_data: from `create_holder` and `get_holder`; None from `list_holders`.
        create_time: when it was registered (UTC).
    """

    participant: str
    holder_id: str
    kind: str
    country: str
    kyc_tier: str
    personal_data: Optional[PersonalData] = None
    create_time: Optional[datetime.datetime] = None

    @classmethod
    def from_proto(cls, message: "holders_pb.Holder") -> "Holder":
        kinds = {number: name for name, number in HOLDER_KINDS.items()}
        return cls(
            participant=message.participant,
            holder_id=message.holder_id,
            kind=kinds.get(message.kind, holders_pb.HolderKind.Name(message.kind).lower()),
            country=message.country,
            kyc_tier=message.kyc_tier,
            personal_data=(
                PersonalData.from_proto(message.personal_data) if message.HasField("personal_data") else None
            ),
            create_time=(
                message.create_time.ToDatetime(tzinfo=datetime.timezone.utc)
                if message.HasField("create_time")
                else None
            ),
        )


class UsTier(NamedTuple):
    """A US KYC tier for `set_kyc_policy`: its name (US_<NAME>) and its limits in USD (None:
    no limit)."""

    name: str
    monthly_credit_limit: Optional[AmountLike] = None
    balance_limit: Optional[AmountLike] = None

    def proto(self) -> "holders_pb.UsTier":
        return holders_pb.UsTier(
            name=self.name,
            monthly_credit_limit=_amount(self.monthly_credit_limit, "monthly_credit_limit"),
            balance_limit=_amount(self.balance_limit, "balance_limit"),
        )


class _HolderMethods(_Calls):
    """Holders and the KYC policy (`puente.v1.HolderService`). The server refuses these calls
    with FAILED_PRECONDITION (PII_KEY_NOT_CONFIGURED) when it has no personal-data key.
    `participant` is the caller's own when empty; operators must name one (any)."""

    def create_holder(
        self,
        holder_id: str,
        *,
        kind: Union[str, int],
        country: str,
        kyc_tier: str,
        personal_data: Optional[PersonalData] = None,
        participant: str = "",
        timeout: float | None = None,
    ) -> tuple[Holder, bool]:
        """Registers a holder; returns it (with its personal data) and whether it was created
        now (False for a retry: the first registration stands). The tier needs a KYC policy
        (else FAILED_PRECONDITION KYC_POLICY_NOT_SET); the same id with different fields
        raises PuenteError ALREADY_EXISTS."""
        if personal_data is not None and not isinstance(personal_data, PersonalData):
            raise TypeError("personal_data must be a PersonalData")
        holder = holders_pb.Holder(
            participant=participant,
            holder_id=_id(holder_id, "holder_id"),
            kind=_choice(kind, HOLDER_KINDS, "kind"),
            country=country,
            kyc_tier=kyc_tier,
            personal_data=personal_data.proto() if personal_data is not None else None,
        )
        response = self._call(
            self.holders_stub.CreateHolder, holders_pb.CreateHolderRequest(holder=holder), timeout
        )
        return Holder.from_proto(response.holder), response.created

    def get_holder(self, holder_id: str, *, participant: str = "", timeout: float | None = None) -> Holder:
        """A holder with its personal data. Raises PuenteError NOT_FOUND (HOLDER_NOT_FOUND); a
        participant naming another participant gets NOT_FOUND as well."""
        request = holders_pb.GetHolderRequest(participant=participant, holder_id=_id(holder_id, "holder_id"))
        return Holder.from_proto(self._call(self.holders_stub.GetHolder, request, timeout).holder)

    def list_holders(
        self, participant: str = "", *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[Holder]:
        """Every holder (of one participant, or for operators all), without personal data,
        fetching page after page of `page_size` (0: the server's default of 100)."""
        token = ""
        while True:
            request = holders_pb.ListHoldersRequest(
                participant=participant, page_size=page_size, page_token=token
            )
            page = self._call(self.holders_stub.ListHolders, request, timeout)
            yield from (Holder.from_proto(h) for h in page.holders)
            token = page.next_page_token
            if not token:
                return

    def get_holder_usage(
        self, holder_id: str, *, participant: str = "", timeout: float | None = None
    ) -> "holders_pb.GetHolderUsageResponse":
        """This month's credits to the holder's accounts against its tier's limits: `.credited`,
        `.monthly_credit_limit` and `.balance_limit` (decimal text, empty: no limit) in
        `.currency_code`, `.month` (YYYYMM, UTC), and `.refused_credits_from_others`."""
        request = holders_pb.GetHolderUsageRequest(
            participant=participant, holder_id=_id(holder_id, "holder_id")
        )
        return self._call(self.holders_stub.GetHolderUsage, request, timeout)

    def set_kyc_policy(
        self,
        udi_rate: AmountLike,
        us_tiers: Iterable[UsTier] = (),
        *,
        timeout: float | None = None,
    ) -> "holders_pb.SetKycPolicyResponse":
        """Sets the KYC policy (operators only): MXN per UDI (at most 6 decimal places), which
        turns the Mexican levels' UDI limits into MXN, and the US tiers (at most 32). Returns
        the policy as stored."""
        request = holders_pb.SetKycPolicyRequest(
            udi_rate=_amount(udi_rate, "udi_rate"), us_tiers=[tier.proto() for tier in us_tiers]
        )
        return self._call(self.holders_stub.SetKycPolicy, request, timeout)

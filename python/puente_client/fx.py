"""FX: segment names, offline verification of a quote's Ed25519 signature (`verify_quote`),
and the `FxService` wrappers of `PuenteClient` (rates, quotes, execution, cancellation,
signing keys, exposure)."""

from __future__ import annotations

from collections.abc import Mapping

from ._base import _Calls
from ._stubs import fx_pb
from .convert import AmountLike, IdLike, _amount, _id, new_id

__all__ = ["FX_SEGMENTS", "verify_quote"]

#: Segment names accepted by `PuenteClient.quote`.
FX_SEGMENTS = {
    "sme": fx_pb.FX_SEGMENT_SME,
    "remittance": fx_pb.FX_SEGMENT_REMITTANCE,
    "institution": fx_pb.FX_SEGMENT_INSTITUTION,
}


def verify_quote(public_key: "bytes | Mapping[str, bytes]", quote: "fx_pb.FxQuote") -> bool:
    """Verifies a quote's Ed25519 signature over its canonical bytes, offline.

    `public_key` is one key (`PuenteClient.fx_public_key()`, the key signing new quotes) or,
    to keep verifying across a key rotation, every key by id (`PuenteClient.fx_public_keys()`):
    then the key the quote names in `signing_key_id` is used (each key if it names none).
    False for a tampered quote, another key, or a key id not in the mapping.

    A valid signature shows the server's key signed the quote; the server executes only quotes
    it issued, byte for byte."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(public_key, Mapping):
        if quote.signing_key_id:
            candidates = [public_key[quote.signing_key_id]] if quote.signing_key_id in public_key else []
        else:
            candidates = list(public_key.values())
    else:
        candidates = [public_key]
    for key in candidates:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(quote.signature, quote.canonical)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


class _FxMethods(_Calls):
    """Rates, quotes and their execution (`puente.v1.FxService`)."""

    def set_rate(
        self, base: str, quote: str, mid_rate: AmountLike, *, source: str = "operator",
        timeout: float | None = None,
    ) -> None:
        """Sets a mid-market rate (units of `quote` per 1 `base`), e.g. ("USD", "MXN", "18.91")."""
        rate = fx_pb.FxRate(
            base_currency=base, quote_currency=quote, mid_rate=_amount(mid_rate, "mid_rate"), source=source
        )
        self._call(self.fx_stub.SetRates, fx_pb.SetRatesRequest(rates=[rate]), timeout)

    def quote(
        self,
        participant: str,
        segment: str,
        sell: str,
        buy: str,
        *,
        send: AmountLike | None = None,
        receive: AmountLike | None = None,
        timeout: float | None = None,
    ) -> "fx_pb.FxQuote":
        """A signed quote with its disclosure. Fix exactly one of `send` (in `sell`, fees on
        top) and `receive` (in `buy`)."""
        if (send is None) == (receive is None):
            raise ValueError("give exactly one of send= and receive=")
        if segment not in FX_SEGMENTS:
            raise ValueError(f"segment must be one of {sorted(FX_SEGMENTS)}")
        request = fx_pb.GetQuoteRequest(
            participant=participant,
            segment=FX_SEGMENTS[segment],
            sell_currency=sell,
            buy_currency=buy,
            send_amount=_amount(send, "send") if send is not None else "",
            receive_amount=_amount(receive, "receive") if receive is not None else "",
        )
        return self._call(self.fx_stub.GetQuote, request, timeout).quote

    def get_quote(self, id: IdLike, *, timeout: float | None = None) -> "fx_pb.FxQuote":
        return self._call(self.fx_stub.GetQuoteById, fx_pb.GetQuoteByIdRequest(id=_id(id)), timeout).quote

    def execute_quote(
        self,
        quote: "fx_pb.FxQuote",
        source_account_id: IdLike,
        destination_account_id: IdLike,
        *,
        execution_id: IdLike | None = None,
        timeout: float | None = None,
    ) -> "fx_pb.ExecuteQuoteResponse":
        """Executes a quote from `source` (sell currency) to `destination` (buy currency).
        Reuse `execution_id` to retry safely; the first outcome is returned."""
        request = fx_pb.ExecuteQuoteRequest(
            canonical=quote.canonical,
            signature=quote.signature,
            source_account_id=_id(source_account_id, "source_account_id"),
            destination_account_id=_id(destination_account_id, "destination_account_id"),
            execution_id=_id(execution_id) if execution_id is not None else new_id(),
            signing_key_id=quote.signing_key_id,
        )
        return self._call(self.fx_stub.ExecuteQuote, request, timeout)

    def cancel_transfer(self, quote_id: IdLike, *, timeout: float | None = None) -> "fx_pb.CancelTransferResponse":
        """Cancels a held remittance within its window; everything is refunded."""
        request = fx_pb.CancelTransferRequest(quote_id=_id(quote_id, "quote_id"))
        return self._call(self.fx_stub.CancelTransfer, request, timeout)

    def fx_public_key(self, *, timeout: float | None = None) -> bytes:
        """The 32-byte Ed25519 key that signs new quotes."""
        return self._call(self.fx_stub.GetPublicKey, fx_pb.GetPublicKeyRequest(), timeout).public_key

    def fx_public_keys(self, *, timeout: float | None = None) -> dict[str, bytes]:
        """Every key that verifies quotes, by key id, the signing key first (older keys stay
        listed after a rotation). Pass it to `verify_quote`."""
        response = self._call(self.fx_stub.GetPublicKey, fx_pb.GetPublicKeyRequest(), timeout)
        return {key.key_id: key.public_key for key in response.keys}

    def exposure(self, *, timeout: float | None = None) -> list:
        return list(self._call(self.fx_stub.GetExposure, fx_pb.GetExposureRequest(), timeout).positions)

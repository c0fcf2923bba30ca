"""Credentials: API keys made on this machine (`new_api_key`), the key from the environment
as the `puente` CLI reads it (`api_key_from_env`), and the interceptor that sends it as
`authorization: Bearer <key>`. Neither a key nor an interceptor ever shows the secret in its
repr."""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import NamedTuple

import grpc

from ._stubs import participants_pb

__all__ = ["API_KEY_ENV", "API_KEY_FILE_ENV", "NewApiKey", "api_key_from_env", "new_api_key"]


class NewApiKey(NamedTuple):
    """A new API key made on this machine: send only `sha256_hex`; show `key` once."""

    key_id: str
    key: str
    sha256_hex: str

    def __repr__(self) -> str:  # never show the secret
        return f"NewApiKey(key_id={self.key_id!r}, key=[redacted])"

    def proto(self) -> "participants_pb.NewApiKey":
        return participants_pb.NewApiKey(key_id=self.key_id, key_sha256=self.sha256_hex)


def new_api_key() -> NewApiKey:
    """64 bits of key id and 256 bits of secret from the OS's CSPRNG, in Puente's key format."""
    key_id = secrets.token_hex(8)
    key = f"puente_{key_id}_{secrets.token_hex(32)}"
    return NewApiKey(key_id, key, hashlib.sha256(key.encode()).hexdigest())


class _BearerAuth(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <key>` to every call."""

    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key.strip()}")

    def __repr__(self) -> str:  # never show the key
        return "_BearerAuth([redacted])"

    def _details(self, details):
        metadata = [*(details.metadata or []), self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(
    NamedTuple(
        "_Details",
        [
            ("method", str),
            ("timeout", object),
            ("metadata", object),
            ("credentials", object),
            ("wait_for_ready", object),
            ("compression", object),
        ],
    ),
    grpc.ClientCallDetails,
):
    pass


#: The environment variable naming a file that holds the API key (preferred).
API_KEY_FILE_ENV = "PUENTE_API_KEY_FILE"
#: The environment variable holding the API key itself.
API_KEY_ENV = "PUENTE_API_KEY"


def api_key_from_env() -> str | None:
    """The API key from the environment, as the `puente` CLI reads it: the contents of the
    file named by `PUENTE_API_KEY_FILE` (preferred: the key itself stays out of the
    environment), else `PUENTE_API_KEY`, else None. A named file that cannot be read raises
    `OSError`; an empty one `ValueError` (never a silent call without a key)."""
    path = os.environ.get(API_KEY_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                key = file.read().strip()
        except OSError as error:
            raise OSError(error.errno, f"{API_KEY_FILE_ENV}: cannot read {path}: {error.strerror}") from error
        if not key:
            raise ValueError(f"{API_KEY_FILE_ENV}: {path} is empty")
        return key
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None

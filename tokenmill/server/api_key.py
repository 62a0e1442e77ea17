"""The API key check, one for every protocol: HTTP's `Authorization` header and gRPC's metadata."""

from __future__ import annotations

import hmac

MISSING_KEY_MESSAGE = "a valid API key is required: send 'Authorization: Bearer <key>'"


def authorized(authorization: str | None, api_key: str | None) -> bool:
    """Whether `authorization` (`Bearer <key>`) carries `api_key`; anything does when no key is set.
    The comparison takes the same time whatever the key, so timing tells nothing about it."""
    if not api_key:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())

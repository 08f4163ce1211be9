"""Signed, expiring tokens for links in mail (survey answers, unsubscribe).

itsdangerous' URLSafeTimedSerializer with one salt per purpose, so a token made for one purpose
never validates for another. Keys come from the env var named by ``[shop] signing_keys_env`` as
a comma-separated list, newest first: tokens are signed with the first and accepted under any,
which is how a key is rotated without breaking links already in inboxes.
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from csops import timeutil
from csops.config import Config
from csops.errors import CsopsError

PURPOSES = ("survey", "unsubscribe")


class TokenError(CsopsError):
    """A token that is tampered, expired, for another purpose, or signed with an unknown key."""

    code = "bad_token"

    def __init__(self, message: str, *, expired: bool = False, payload: Any = None) -> None:
        super().__init__(message)
        self.expired = expired
        # The payload of an authentic but expired token (e.g. to pick the page's language).
        self.payload = payload


class _ClockSigner(TimestampSigner):
    """Signs and checks ages with csops' clock, so ``CSOPS_NOW`` also drives token expiry."""

    def get_timestamp(self) -> int:
        return int(timeutil.now().timestamp())


def signing_keys(config: Config) -> list[str]:
    raw = config.secret(config.shop.signing_keys_env, key="shop.signing_keys_env")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return keys


def _serializer(config: Config, purpose: str) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    # itsdangerous wants oldest → newest and signs with the last; our env var lists newest first.
    keys = list(reversed(signing_keys(config)))
    return URLSafeTimedSerializer(keys, salt=f"csops.{purpose}", signer=_ClockSigner)


def make_token(config: Config, purpose: str, payload: dict[str, Any]) -> str:
    return _serializer(config, purpose).dumps(payload)


def read_token(config: Config, purpose: str, token: str, max_age_s: int | None) -> dict[str, Any]:
    """The payload of a valid token; TokenError otherwise (never says which key or why)."""
    serializer = _serializer(config, purpose)
    try:
        return serializer.loads(token, max_age=max_age_s)
    except SignatureExpired as exc:
        try:
            payload = serializer.load_payload(exc.payload) if exc.payload else None
        except BadSignature:
            payload = None
        raise TokenError("this link has expired", expired=True, payload=payload) from None
    except BadSignature:
        raise TokenError("this link is not valid") from None


def unsubscribe_url(config: Config, address: str, channel: str = "email") -> str:
    """The one-click unsubscribe link for an address (RFC 8058 target and body link)."""
    token = make_token(config, "unsubscribe", {"a": address.lower(), "c": channel})
    return f"{config.shop.base_url.rstrip('/')}/u/{token}"

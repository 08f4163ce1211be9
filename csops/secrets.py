"""Keep secret values out of everything we write: output, logs, the runs table, error text.

Secrets live only in environment variables. Anything that leaves the process passes through
:func:`redact`, which replaces the value of every secret-looking variable with ``***`` — a net
under the rule that no code formats a secret in the first place.
"""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|AUTH|HMAC|_KEYS?$|_KEY_)", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@[A-Za-z0-9.-]+)")


def secret_values() -> list[str]:
    """Values of environment variables whose names look like secrets (longest first)."""
    values: set[str] = set()
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_NAME.search(name):
            values.add(value)
            values.update(v for v in value.split(",") if len(v) >= 6)
            # "Bearer abc…": a server may echo the credential without its scheme word.
            values.update(v for v in value.split() if len(v) >= 6 and v != value)
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text


def mask_email(address: str | None) -> str:
    """``jane@example.com`` → ``j***@example.com``: personal data stays out of default logs."""
    if not address:
        return ""
    return _EMAIL.sub(r"\1***\2", address)

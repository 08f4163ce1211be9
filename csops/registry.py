"""Names users type (``--from shopify-csv``, ``type = "smtp"``) → the code that implements them.

Entries are import paths, imported only when used, so ``csops --help`` stays fast. Third parties
add their own through entry points (groups ``csops.importers``, ``csops.channels``, …).
"""

from __future__ import annotations

import importlib
from typing import Any

from csops.errors import UsageError

REGISTRIES: dict[str, dict[str, str]] = {
    "importers": {
        "shopify-csv": "csops.importers.shopify_csv:SOURCE",
        "shopify-api": "csops.importers.shopify_api:SOURCE",
        "woocommerce-api": "csops.importers.woocommerce_api:SOURCE",
        "taobao-csv": "csops.importers.taobao_csv:SOURCE",
        "amazon-tsv": "csops.importers.amazon_tsv:SOURCE",
        "csv": "csops.importers.mapped_csv:SOURCE",
    },
    "conversation_sources": {
        "csv": "csops.importers.conversations_csv:SOURCE",
        "zendesk-csv": "csops.importers.zendesk_csv:SOURCE",
    },
    "channels": {
        "outbox-dir": "csops.messaging.channels.outbox_dir:OutboxDirChannel",
        "smtp": "csops.messaging.channels.smtp:SmtpChannel",
        "webhook": "csops.messaging.channels.webhook:WebhookChannel",
    },
    "return_formats": {
        "csv": "csops.returns.formats:GENERIC_CSV",
        "taobao-refunds": "csops.returns.formats:TAOBAO_REFUNDS",
    },
}


def _entry_points(kind: str) -> Any:
    """Third-party entries; importlib.metadata (20 ms to import) loads only when asked."""
    from importlib.metadata import entry_points

    return entry_points(group=f"csops.{kind}")


def known(kind: str, name: str) -> bool:
    """Whether ``name`` is registered in ``kind``: built-ins answer without the entry-point scan
    (every command checks its config's channel types on start)."""
    return name in REGISTRIES.get(kind, {}) or name in names(kind)


def names(kind: str) -> list[str]:
    found = dict(REGISTRIES.get(kind, {}))
    for ep in _entry_points(kind):
        found.setdefault(ep.name, ep.value)
    return sorted(found)


def load(kind: str, name: str) -> Any:
    """The object registered as ``name`` in ``kind``; a clear usage error for unknown names."""
    table = REGISTRIES.get(kind, {})
    target = table.get(name)
    if target is None:
        for ep in _entry_points(kind):
            if ep.name == name:
                return ep.load()
        raise UsageError(
            f"unknown {kind.rstrip('s').replace('_', ' ')} {name!r}",
            expected="one of " + ", ".join(names(kind)),
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(f"{name!r} is not built yet in this version of csops") from None
        raise
    return getattr(module, attr)

"""The embedded default channel: one ``.eml`` file per message in a folder.

Readable by any mail client, handy for a demo or a shop that hands the folder to another
mailer. Each file is written under ``tmp/`` and renamed into place, and named by its
Message-ID, so after a crash the file's existence alone decides the outcome: this channel
never leaves a message ``unknown``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from csops import timeutil
from csops.messaging.channels.base import (
    BaseChannel,
    HeaderInjection,
    Kind,
    Outcome,
    OutMessage,
    mime_bytes,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def file_name(message_id: str) -> str:
    return _UNSAFE.sub("_", message_id.strip("<>")) + ".eml"


class OutboxDirChannel(BaseChannel):
    """Write RFC 5322 files to ``path`` (default ``[paths] outbox_dir``)."""

    def __init__(self, name: str, settings, config) -> None:
        self.name = name
        self.config = config
        self.folder = config.resolve(settings.path or config.paths.outbox_dir)
        self.tmp = self.folder / "tmp"
        self.from_address = settings.from_address or config.shop.email
        self.from_name = settings.from_name or config.shop.name
        self.fsync = config.database.synchronous == "FULL"

    def open(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def cleanup(self) -> None:
        if self.tmp.is_dir():
            for leftover in self.tmp.iterdir():
                leftover.unlink(missing_ok=True)

    def path_for(self, msg: OutMessage) -> Path:
        return self.folder / file_name(msg.message_id)

    def send(self, msg: OutMessage, mark_handed_over: Callable[[], None]) -> Outcome:
        try:
            data = mime_bytes(
                msg,
                from_address=self.from_address,
                from_name=self.from_name,
                date=timeutil.now(),
            )
        except HeaderInjection as exc:
            return Outcome("permanent", "header_injection", str(exc))
        final = self.path_for(msg)
        if final.exists():  # written by a run that died before committing
            return Outcome("sent", "exists", "already in the outbox folder")
        tmp = self.tmp / f"{final.name}.{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            return Outcome("transient", "io_error", exc.strerror or str(exc))
        return Outcome("sent", "written", str(final))

    def recover(self, msg: OutMessage, handed_over: bool) -> Kind | None:
        return "sent" if self.path_for(msg).exists() else "transient"

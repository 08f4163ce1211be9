"""The file a command reads, whether named, ``-`` (stdin) or a pipe given by name.

Every job that reads a file (``import orders``, ``import conversations``, ``returns process``)
gets it here as a seekable binary file: stdin and pipes are copied to an unnamed temporary file
first (gone when closed or killed), so that the input can be checked as a whole before any
write, read from its end (a workbook) or read twice (``--strict``, a batch's digest).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import IO

from csops.errors import InputError, UsageError

STDIN_LABEL = "<stdin>"


def spooled(stream: IO[bytes], label: str) -> IO[bytes]:
    """A copy of ``stream`` in an unnamed temporary file, rewound. It needs as much room in
    ``TMPDIR`` as the input: no room is an input error (exit 2), not a traceback."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned, closed by the caller
    try:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
    except OSError as exc:
        spool.close()
        raise InputError(
            f"cannot copy the input to a temporary file in {tempfile.gettempdir()}: "
            f"{exc.strerror or exc}",
            file=label,
            expected="room in TMPDIR for a copy of the input (or give the file's path)",
        ) from None
    except BaseException:
        spool.close()
        raise
    return spool


def _stdin() -> IO[bytes]:
    """Standard input: itself when it is a file at its start (``csops … - < export.csv``),
    else a copy of what it carries."""
    if sys.stdin is None:  # started with stdin closed (``<&-``)
        raise UsageError("PATH is - but standard input is closed")
    fd = sys.stdin.fileno()
    with suppress(OSError):
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.lseek(fd, 0, os.SEEK_CUR) == 0:
            return os.fdopen(os.dup(fd), "rb")
    return spooled(sys.stdin.buffer, STDIN_LABEL)


def open_input(path: str, stdin: IO[bytes] | None = None) -> tuple[IO[bytes], str]:
    """``path`` as a seekable binary file (the caller closes it) and its label for messages;
    ``-`` is standard input, or ``stdin`` when the caller hands a stream in."""
    if path == "-":
        if stdin is not None:
            return spooled(stdin, STDIN_LABEL), STDIN_LABEL
        return _stdin(), STDIN_LABEL
    try:
        fh = Path(path).open("rb")  # noqa: SIM115 - returned, closed by the caller
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a file", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=path) from None
    if not fh.seekable():  # a pipe given by name (<(…), a FIFO): read it like stdin
        with fh:
            return spooled(fh, path), path
    return fh, path

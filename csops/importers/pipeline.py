"""Two cores for one file import: a forked reader process parses while this one writes.

The reader is forked after the header was read and checked. It reads, groups and hashes rows
and sends each batch's keys and raw hashes here; this process answers (on a second pipe) which
of them it does not hold with that raw hash, and the reader parses only those and sends them
as plain tuples: the parsed orders in compact form, how many were unchanged, the rejects. The
answer for a batch is looked up while the reader groups the next one, so a re-import of an
unchanged file keeps both processes busy. This process hashes the parsed values, matches
customers and writes the batch in one short transaction exactly as the sequential path does,
re-reading the keys under the write lock, so the counts and rows are the same; the answer only
decides what is worth parsing (the import lock keeps every other writer of orders away
meanwhile).

Memory stays bounded: the reader blocks once a few batches wait in the pipe, and holds at most
two batches of its own. If this process is killed (kill -9), the reader's next send or receive
fails and it exits without having written anything; if the reader dies, the run fails with
what was committed so far, as after a kill.
"""

from __future__ import annotations

import marshal
import os
import pickle
import signal
import struct
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from csops.errors import CsopsError
from csops.importers.base import FieldError, GroupReject, PendingOrder
from csops.importers.store import OrderStore

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no fork either
    fcntl = None  # type: ignore[assignment]


class _Pipe:
    """Length-prefixed messages over one end of an ``os.pipe`` (blocking: a full pipe makes
    the sender wait, which bounds memory to about one batch in flight).

    A message of plain values (keys, parsed orders: tuples, lists, str, int, None) goes as
    ``marshal`` — both ends are the same interpreter, forked — which writes and reads such
    data about twice as fast as pickle (0.2 s against 0.4–0.5 s to write, 0.5 s against
    1.1–1.3 s to read, for the parsed orders of 200,000 rows); one holding objects (rejects,
    an error) goes as a pickle.
    """

    def __init__(self, fd: int, mode: str) -> None:
        self.file = os.fdopen(fd, mode)

    def send(self, obj: Any) -> None:
        try:
            data, kind = marshal.dumps(obj), 0
        except ValueError:  # an object marshal does not know: a reject, an exception class
            data, kind = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), 1
        self.file.write(struct.pack("<QB", len(data), kind))
        self.file.write(data)
        self.file.flush()

    def recv(self) -> Any:
        head = self.file.read(9)
        if len(head) < 9:
            raise EOFError
        size, kind = struct.unpack("<QB", head)
        data = self.file.read(size)
        if len(data) < size:
            raise EOFError
        return pickle.loads(data) if kind else marshal.loads(data)

    def close(self) -> None:
        self.file.close()


class ReaderFailed(RuntimeError):
    """The reader process failed with an unexpected exception (a bug, not bad input)."""


class ReaderGone(CsopsError):
    """The reader process vanished (killed, out of memory): exit 1, what was committed stays."""

    code = "reader_gone"


# Bytes the pipe holds before the reader blocks: several batches (a pickled batch of 500 orders
# is ~150 KB), so that neither process waits for the other whenever one batch happens to take
# longer than the next. Linux's default (64 KB) holds less than one; 1 MB is the most an
# unprivileged process may ask for by default (/proc/sys/fs/pipe-max-size).
PIPE_BYTES = 1 << 20


def _widen(fd: int) -> None:
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is not None:
        with suppress(OSError):  # a lower pipe-max-size: the default size still works
            fcntl.fcntl(fd, setsize, PIPE_BYTES)


def available() -> bool:
    """Forking is safe only from a single-threaded process (locks held by another thread
    would stay locked in the child forever)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _read(
    items: Iterator[PendingOrder | GroupReject],
    batch_size: int,
    bytes_read: Callable[[], int],
    out: _Pipe,
    answers: _Pipe,
) -> None:
    """The reader's loop: per batch of orders (or of rejects), first its keys and raw hashes,
    then — once the writer has said which of them it does not hold as they are, and while it
    looks up the next batch's — the parsed orders it asked for; then "end"."""
    reads: list[GroupReject] = []
    batch: list[PendingOrder] = []
    asked: tuple[list[PendingOrder], list[GroupReject], int] | None = None

    def settle(batch: list[PendingOrder], rejects: list[GroupReject], at: int) -> None:
        wanted: list[int] = answers.recv()
        writes: list[tuple[Any, str | None, str]] = []
        for i in wanted:  # rejects met while reading stay first, as on the sequential path
            p = batch[i]
            try:
                data = p.parse_compact()
            except FieldError as exc:
                rejects.append(p.reject(exc))
                continue
            writes.append((data, None, p.raw_hash))  # the writer hashes it
        out.send(("batch", at, len(batch) - len(wanted), writes, rejects))

    def submit() -> None:
        nonlocal asked
        out.send(("keys", [(p.platform, p.external_id, p.raw_hash) for p in batch]))
        if asked is not None:
            settle(*asked)
        asked = (batch, reads, bytes_read())

    try:
        for item in items:
            if isinstance(item, GroupReject):
                reads.append(item)
                if len(reads) < batch_size:
                    continue
            else:
                batch.append(item)
                if len(batch) < batch_size:
                    continue
            submit()
            reads, batch = [], []
        if reads or batch:
            submit()
    except CsopsError:  # the file is refused midway: whole batches before it still land,
        if asked is not None:  # as on the sequential path
            settle(*asked)
        raise
    if asked is not None:
        settle(*asked)
    out.send(("end", bytes_read()))


def run(
    items: Iterator[PendingOrder | GroupReject],
    store: OrderStore,
    *,
    bytes_read: Callable[[], int],
    on_reject: Callable[[GroupReject], None],
    on_progress: Callable[[int], None] | None,
    before_fork: Callable[[], None] = lambda: None,
) -> None:
    """Read ``items`` in a forked process and write what it sends through ``store``."""
    r, w = os.pipe()
    answer_r, answer_w = os.pipe()  # the writer's answers: which orders of a batch to parse
    _widen(w)
    before_fork()
    pid = os.fork()
    if pid == 0:  # the reader: never returns
        code = 0
        try:
            os.close(r)
            os.close(answer_w)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            out = _Pipe(w, "wb")
            try:
                _read(items, store.batch_size, bytes_read, out, _Pipe(answer_r, "rb"))
            except CsopsError as exc:
                out.send(("error", type(exc), exc.message, dict(vars(exc))))
            except (BrokenPipeError, EOFError, KeyboardInterrupt):  # the writer is gone
                code = 1
            except BaseException:
                out.send(("crash", traceback.format_exc()))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.close(answer_r)
    inp = _Pipe(r, "rb")
    answers = _Pipe(answer_w, "wb")
    done = 0
    finished = False
    try:
        while True:
            try:
                msg = inp.recv()
            except EOFError:
                raise ReaderGone(
                    "the import's reader process ended without finishing (killed?); the orders "
                    "committed so far stay: run the import again"
                ) from None
            kind = msg[0]
            if kind == "error":
                _, cls, message, attrs = msg
                exc = cls.__new__(cls)
                Exception.__init__(exc, message)
                exc.__dict__.update(attrs)
                raise exc
            if kind == "crash":
                raise ReaderFailed(f"the reader process failed:\n{msg[1]}")
            if kind == "keys":
                try:
                    answers.send(store.to_parse(msg[1]))
                except BrokenPipeError:
                    continue  # the reader died: its end of the other pipe says so next
                continue
            if on_progress is not None and msg[1] > done:
                on_progress(msg[1] - done)
            done = msg[1]
            if kind == "end":
                finished = True
                break
            _, _, unchanged, writes, rejects = msg
            for rej in rejects:
                on_reject(rej)
            store.write_prepared(writes, unchanged)
        store.flush()
    finally:
        inp.close()
        with suppress(BrokenPipeError):
            answers.close()
        if not finished:
            with suppress(ProcessLookupError):  # the reader only reads: nothing to lose
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

"""``import orders``: run one source into the store, keep every rejected row, report counts.

File sources stream: rows are decoded, grouped and parsed one order at a time and written in
batches, so memory stays flat however large the file. Rejected rows go to a rejects CSV (their
original cells plus ``_line``, ``_field``, ``_reason``) and to the ``rejects`` table; the good
rows still land and the run ends ``partial`` (exit 3). ``strict`` first checks the whole file
and imports nothing if any row is bad.
"""

from __future__ import annotations

import gc
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from csops import db as dbmod
from csops import registry
from csops.csvio import SafeCsvWriter
from csops.errors import InputError, UsageError
from csops.importers import pipeline, xlsx
from csops.importers.base import (
    CsvFormat,
    GroupReject,
    ParseEnv,
    read_orders,
    refuse_undecodable,
)
from csops.importers.settings import ImportSettings
from csops.importers.store import OrderStore, PendingReject
from csops.inputs import open_input
from csops.result import Reject, Result
from csops.timeutil import iso

Progress = Callable[[int], None]
MAX_REPORTED = 100


class CountingReader(io.RawIOBase):
    """A binary stream that tells a progress callback how many bytes were read."""

    def __init__(self, inner: IO[bytes], on_progress: Progress | None) -> None:
        self.inner = inner
        self.on_progress = on_progress
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.on_progress and n:
            self.on_progress(n)
        return n


class RejectsFile:
    """The rejects CSV, opened only when the first reject arrives (formula-safe writer)."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self.header = header
        self._fh: IO[str] | None = None
        self._writer: SafeCsvWriter | None = None

    def write(self, line: int, raw: Any, fld: str | None, reason: str) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8-sig", newline="")
            cols = [*self.header, "_line", "_field", "_reason", "_raw"]
            self._writer = SafeCsvWriter(self._fh, cols)
        row: dict[str, Any]
        if isinstance(raw, dict):
            row = dict(raw)
        else:
            values = list(raw or [])
            row = (
                dict(zip(self.header, values, strict=False))
                if len(values) == len(self.header)
                else {"_raw": "\t".join(values)[:100000]}
            )
        row.update({"_line": line, "_field": fld or "", "_reason": reason})
        self._writer.write(row)

    def flush(self) -> None:
        if self._fh:
            self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()


class BulkLoad:
    """Sets the secondary indexes of orders and items aside when a file is a bulk load.

    Checked after each committed batch: once the orders this file is projected to insert
    (inserted so far, scaled by the share of the file read) reach ``min_orders`` and a third of
    the orders stored before the run, the non-unique indexes are dropped (recorded in
    ``deferred_indexes``) and :meth:`finish` rebuilds them by sorting, far cheaper than updating
    them row by row. Unique indexes (the upsert's keys) stay. A run killed meanwhile is healed
    by the next connection once the process is gone (:func:`csops.db.restore_deferred_indexes`).
    """

    TABLES = ("orders", "order_items")
    # WAL frames between checkpoints during a bulk load (SQLite's default is 1,000). A batch
    # rewrites the same tail pages of every table and index; checkpointing ten times less often
    # copies each of them to the database ten times less often (0.6 s -> 0.13 s of commits for
    # 200,000 rows, measured), for a WAL of at most ~40 MB meanwhile.
    CHECKPOINT_PAGES = 10_000

    def __init__(
        self, ctx: Any, store: OrderStore, counted: CountingReader, size: int | None, minimum: int
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.bytes_read = lambda: counted.count
        self.size = size
        self.minimum = minimum
        self.deferred: list[str] = []
        self.checkpoint_pages: int | None = None  # the connection's own, while raised
        row = ctx.conn.execute("SELECT COALESCE(MAX(id), 0) FROM orders").fetchone()
        self.stored_before = row[0]  # ids are dense: max(id) ~ how many orders are stored

    def after_flush(self) -> None:
        if self.deferred or not self.minimum:
            return
        inserted = self.store.counts["inserted"]
        read = self.bytes_read()
        projected = inserted * self.size / read if self.size and read else inserted
        if projected >= self.minimum and projected * 3 >= self.stored_before:
            self.deferred = dbmod.defer_indexes(
                self.ctx.conn, self.TABLES, self.ctx.run_id, iso(self.ctx.now)
            )
            self.ctx.log.info("bulk load: %d indexes set aside until the end", len(self.deferred))
            conn = self.ctx.conn
            self.checkpoint_pages = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            if self.checkpoint_pages > 0:
                conn.execute(f"PRAGMA wal_autocheckpoint = {self.CHECKPOINT_PAGES}")

    def finish(self) -> None:
        if self.deferred:
            dbmod.restore_deferred_indexes(self.ctx.conn, run_id=self.ctx.run_id)
            self.deferred = []
        if self.checkpoint_pages is not None:
            self.ctx.conn.execute(f"PRAGMA wal_autocheckpoint = {self.checkpoint_pages}")
            self.checkpoint_pages = None


@contextmanager
def _relaxed_gc() -> Iterator[None]:
    """Run the cyclic garbage collector less often during a file import.

    An import allocates millions of short-lived tuples and lists and creates no reference
    cycles; at the default rhythm (a pass every 700 allocations, full passes over the growing
    caches) the collector costs 15-20% of the CPU and frees nothing. It still runs, so memory
    stays bounded if a cycle ever appears.
    """
    old = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def resolve_format(source: Any, settings: ImportSettings, mapping: str | None) -> CsvFormat:
    if isinstance(source, CsvFormat):
        if mapping:
            raise UsageError("--mapping only applies to --from csv")
        return source
    if hasattr(source, "for_mapping"):
        return source.for_mapping(settings, mapping)
    raise UsageError("this source reads no file", expected="no PATH argument")


def import_orders(
    ctx: Any,
    source_name: str,
    path: str | None,
    *,
    since: str | None = None,
    rejects_path: str | None = None,
    strict: bool = False,
    encoding: str | None = None,
    mapping: str | None = None,
    on_progress: Progress | None = None,
    on_size: Callable[[int | None], None] | None = None,
) -> Result:
    """Import orders from ``source_name`` (a registry name) and return the counts."""
    settings: ImportSettings = ctx.config.section("import")
    source = registry.load("importers", source_name)
    result = Result(f"import orders --from {source_name}", columns=None)
    if hasattr(source, "sync"):
        if path:
            raise UsageError(f"--from {source_name} reads an API, not a file: drop {path!r}")
        return _run_api(ctx, source, source_name, settings, since, result)
    if since:
        raise UsageError("--since applies to API sources only")
    if not path:
        raise UsageError(f"--from {source_name} needs a PATH (or - for stdin)")
    fmt = resolve_format(source, settings, mapping)
    env = ParseEnv(
        tz=ZoneInfo(settings.timezone or fmt.timezone or ctx.config.shop.timezone),
        currency=ctx.config.shop.currency,
        field_size_limit=settings.field_size_limit,
    )
    stream, label = open_input(path)
    try:
        size = os.fstat(stream.fileno()).st_size
        if xlsx.sniff(stream.peek(8)[:8], label):  # type: ignore[attr-defined]
            converted = xlsx.as_csv(stream, label)  # a workbook: its first sheet as a CSV
            stream.close()
            stream, size = converted, converted.seek(0, os.SEEK_END)
            converted.seek(0)
            encoding = "utf-8"
        if on_size:
            on_size(size)
        # undecodable bytes anywhere refuse the input before any write
        refuse_undecodable(stream, encoding or fmt.encoding, label)
        return _import_stream(
            ctx,
            fmt,
            env,
            stream,
            label,
            size,
            source_name,
            settings,
            encoding,
            strict,
            on_progress,
            rejects_path,
            result,
        )
    finally:
        stream.close()


def _import_stream(
    ctx: Any,
    fmt: CsvFormat,
    env: ParseEnv,
    stream: IO[bytes],
    label: str,
    size: int | None,
    source_name: str,
    settings: ImportSettings,
    encoding: str | None,
    strict: bool,
    on_progress: Progress | None,
    rejects_path: str | None,
    result: Result,
) -> Result:
    def run(source: IO[bytes], progress: Progress | None, **kw: Any) -> Result:
        return _run_file(
            ctx,
            fmt,
            env,
            source,
            label,
            source_name,
            settings,
            encoding,
            progress,
            rejects_path,
            **kw,
        )

    if strict and not ctx.dry_run:
        check = run(stream, None, dry_run=True)
        if check.rejects:
            first = check.rejects[0]
            raise InputError(
                f"{check.counts.get('rejected', 0)} row(s) rejected, nothing imported "
                f"(--strict); first: {first}",
                file=label,
                code="strict_rejects",
            )
        stream.seek(0)
    return run(stream, on_progress, dry_run=ctx.dry_run, result=result, size=size)


def _run_file(
    ctx: Any,
    fmt: CsvFormat,
    env: ParseEnv,
    stream: IO[bytes],
    label: str,
    source_name: str,
    settings: ImportSettings,
    encoding: str | None,
    on_progress: Progress | None,
    rejects_path: str | None,
    *,
    dry_run: bool,
    result: Result | None = None,
    size: int | None = None,
) -> Result:
    result = result or Result(f"import orders --from {source_name}")
    now = iso(ctx.now)
    if not dry_run:  # we hold the import lock: indexes still set aside are a dead run's
        dbmod.restore_deferred_indexes(ctx.conn, force=True)
    store = OrderStore(
        ctx.conn,
        source=source_name,
        run_id=ctx.run_id,
        now=now,
        dry_run=dry_run,
        batch_size=settings.batch_size,
    )
    counted = CountingReader(stream, on_progress)
    header, items = read_orders(
        io.BufferedReader(counted, 1 << 16), fmt, env, file=label, encoding=encoding
    )
    if rejects_path:
        target = Path(rejects_path)
    else:
        stamp = ctx.now.strftime("%Y%m%dT%H%M%S")
        target = ctx.config.resolve(ctx.config.paths.rejects_dir) / (
            f"import-{source_name}-{stamp}-{ctx.run_id}.csv"
        )
    rejects = RejectsFile(target, header)
    rejected = [0]

    def on_reject(item: GroupReject) -> None:
        rejected[0] += _reject(item, label, store, rejects, result, write=not dry_run)

    store.on_reject = on_reject
    bulk = BulkLoad(ctx, store, counted, size, settings.bulk_load_min_orders)
    if not dry_run:
        store.after_flush = bulk.after_flush
    with _relaxed_gc():
        _feed(ctx, items, store, bulk, counted, on_reject, on_progress, rejects, size, settings)
    rejected_rows = rejected[0]
    result.counts.update(store.counts)
    result.counts["rejected"] = rejected_rows
    row: dict[str, Any] = {"source": source_name, "file": label, **result.counts}
    if rejected_rows and not dry_run:
        row["rejects_file"] = str(target)
        result.messages.append(f"rejected rows written to {target}")
    result.rows = [row]
    return result


def _feed(
    ctx: Any,
    items: Any,
    store: OrderStore,
    bulk: BulkLoad,
    counted: CountingReader,
    on_reject: Callable[[GroupReject], None],
    on_progress: Progress | None,
    rejects: RejectsFile,
    size: int | None,
    settings: ImportSettings,
) -> None:
    """Write every order and reject of ``items``: through a reader process or in this one."""
    minimum = settings.reader_process_min_bytes
    forked = (
        not store.dry_run
        and pipeline.available()
        and minimum >= 0
        and (size is None or size >= minimum)
    )
    try:
        if forked:
            reader_bytes = [0]
            bulk.bytes_read = lambda: reader_bytes[0]

            def progress(n: int) -> None:
                reader_bytes[0] += n
                if on_progress:
                    on_progress(n)

            counted.on_progress = None  # the reader reports its progress with each batch
            pipeline.run(
                items,
                store,
                bytes_read=lambda: counted.count,
                on_reject=on_reject,
                on_progress=progress,
                before_fork=rejects.flush,
            )
        else:
            for item in items:
                if isinstance(item, GroupReject):
                    on_reject(item)
                else:
                    store.add(item)
            store.flush()
    finally:
        try:
            bulk.finish()
        finally:
            rejects.close()


def _reject(
    item: GroupReject,
    label: str,
    store: OrderStore,
    rejects: RejectsFile,
    result: Result,
    *,
    write: bool,
) -> int:
    reason = item.message if not item.expected else f"{item.message} (expected {item.expected})"
    if len(result.rejects) < MAX_REPORTED:
        result.rejects.append(
            Reject(
                item.message, file=label, line=item.line, field=item.field, expected=item.expected
            )
        )
    rows = item.rows or [(item.line, [])]
    for line, raw in rows:
        if write:
            rejects.write(
                line,
                raw,
                item.field,
                reason
                if line == item.line
                else f"another row of the same order was rejected (line {item.line})",
            )
            store.add_reject(
                PendingReject(
                    file=label,
                    line=line,
                    field=item.field,
                    expected=item.expected,
                    message=item.message,
                    raw=json.dumps(raw, ensure_ascii=False)[:10000] if raw else None,
                )
            )
    return len(rows)


def _run_api(
    ctx: Any,
    source: Any,
    source_name: str,
    settings: ImportSettings,
    since: str | None,
    result: Result,
) -> Result:
    store = OrderStore(
        ctx.conn,
        source=source_name,
        run_id=ctx.run_id,
        now=iso(ctx.now),
        dry_run=ctx.dry_run,
        batch_size=settings.batch_size,
    )
    outcome = source.sync(ctx, store, settings, since)
    result.counts.update(store.counts)
    result.counts["rejected"] = len(outcome.rejects)
    result.counts["pages"] = outcome.pages
    result.rejects.extend(outcome.rejects[:MAX_REPORTED])
    result.messages.extend(outcome.messages)
    if outcome.partial:
        result.status = "partial"
    result.rows = [{"source": source_name, **result.counts, "watermark": outcome.watermark}]
    return result

"""``csops db backup``."""

from __future__ import annotations

from pathlib import Path

import click

from csops.cli.options import app


@click.group(name="db")
def db() -> None:
    """Database maintenance."""


@db.command(name="backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(path: Path) -> None:
    """Write a consistent, integrity-checked copy of the database to PATH.

    The copy is made with VACUUM INTO under a temporary name and renamed only once it passes
    PRAGMA integrity_check, so a file under PATH is always a whole snapshot — safe while other
    jobs write.
    """
    from csops import db as dbmod
    from csops.runs import open_db

    conn = open_db(app().config())
    try:
        final = dbmod.backup(conn, path)
    finally:
        conn.close()
    click.echo(f"backup written: {final}", err=True)

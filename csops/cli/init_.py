"""``csops init [DIR]``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite config and templates already there.")
def init(directory: Path, force: bool) -> None:
    """Write a workspace: config/csops.toml, templates/, data/csops.db and output folders.

    Existing files are kept unless --force is given, so running it twice is harmless.

    \b
    Example:
      csops init ~/shop && cd ~/shop && csops doctor
    """
    from csops.workspace import init_workspace

    report = init_workspace(directory, force=force)
    click.echo(
        f"workspace {report.root}: {len(report.written)} files written, "
        f"{len(report.kept)} kept; database {report.database}",
        err=True,
    )
    click.echo(f"next: cd {report.root} && csops doctor", err=True)

"""The README is the reference: every command in the tree has help and appears in it."""

from __future__ import annotations

import click

from csops.cli import cli
from tests.conftest import REPO


def leaf_commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(cli)
    found: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, [*path, name])
        else:
            found.append((" ".join(path), cmd))

    walk(cli, ["csops"])
    return found


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    leaves = leaf_commands()
    assert len(leaves) >= 25
    for path, cmd in leaves:
        assert (cmd.help or "").strip(), f"{path} has no help"
        group, _, verb = path.rpartition(" ")
        # "csops outbox list" may be written as "csops outbox list" or as "… / `retry ID`"
        assert path in readme or (group in readme and f"`{verb}" in readme), path


def test_readme_gives_the_two_quick_start_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci

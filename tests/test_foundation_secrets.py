"""AT-29: canary secrets in secret-looking env vars never reach output, logs or the database."""

from __future__ import annotations

import sqlite3

import pytest

CANARIES = {
    "CSOPS_SMTP_PASSWORD": "canary-smtp-pw-5c1e0a",
    "SHOPIFY_ACCESS_TOKEN": "canary-shpat-9b7d42",
    "WOO_CONSUMER_KEY": "canary-ck-31f0e8",
    "WOO_CONSUMER_SECRET": "canary-cs-a2c4d6",
    "CSOPS_SIGNING_KEYS": "canary-sign-new-77aa01,canary-sign-old-88bb02",
    "WEBHOOK_AUTH_HEADER": "Bearer canary-hook-6e5d4c",
    "CSOPS_HMAC_KEY": "canary-hmac-0f9e8d",
}
NEEDLES = [p.encode() for v in CANARIES.values() for p in v.split(",")]


def leaks(data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [n.decode() for n in NEEDLES if n in raw]


def test_no_command_output_log_or_file_carries_a_canary(workspace):
    env = {**CANARIES, "CSOPS_NOW": "2024-04-20T02:00:00Z"}
    # A path that happens to contain a secret value: the error line must still not show it.
    blocker = workspace.root / "exports" / "canary-hmac-0f9e8d"
    blocker.write_text("not a folder")
    commands = [
        ("-v", "--log-format", "json", "doctor", "--json"),
        ("-v", "doctor"),
        ("-v", "--log-format", "json", "customers", "optout", "jane@example.com"),
        ("--log-format", "json", "retention", "purge", "--json"),
        ("-v", "--log-format", "json", "retention", "purge", "--dry-run"),
        ("-v", "schedule", "list", "--json"),
        ("schedule", "crontab"),
        ("-v", "runs", "--json"),
        ("-v", "--db", str(blocker / "x.db"), "runs"),  # an error with a traceback under -v
        ("--db", str(blocker / "x.db"), "runs"),
        ("-v", "--log-format", "json", "db", "backup", str(workspace.root / "b.db")),
    ]
    outputs = []
    for args in commands:
        proc = workspace.run(*args, env=env)
        assert proc.code in (0, 1, 2), (args, proc.stderr)
        assert not leaks(proc.stdout) and not leaks(proc.stderr), (args, proc.stderr)
        outputs.append(proc)
    crashed = outputs[8]
    assert crashed.code == 2 and "Traceback" in crashed.stderr and "***" in crashed.stderr
    assert outputs[9].code == 2 and "Traceback" not in outputs[9].stderr

    # An internal error (not a CsopsError): a traceback under -v, redacted, exit 1.
    conn = sqlite3.connect(workspace.db_path)
    conn.execute("DROP TABLE scheduler_heartbeat")
    conn.close()
    crash = workspace.run("-v", "schedule", "status", env=env)
    assert crash.code == 1 and "Traceback" in crash.stderr and not leaks(crash.stderr)
    quiet = workspace.run("schedule", "status", env=env)
    assert quiet.code == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().startswith("Error: internal error")

    for path in workspace.root.rglob("*"):
        if path.is_file():
            assert not leaks(path.read_bytes()), path


def test_runs_args_are_redacted_when_a_secret_is_typed_on_the_command_line(workspace):
    env = {**CANARIES, "CSOPS_NOW": "2024-04-20T02:00:00Z"}
    workspace.run("retention", "purge", "--dry-run", "--wait", "1", env=env)
    proc = workspace.run(
        "customers", "optout", "jane@example.com", "--reason", "canary-ck-31f0e8", env=env
    )
    assert proc.code == 0
    args = [r["args"] for r in workspace.query("SELECT args FROM runs")]
    assert all(not leaks(a) for a in args) and any("***" in a for a in args)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("shop", "password"),
        ("database", "token"),
        ("retention", "api_key"),
        ("schedule.jobs.sync", "secret"),
    ],
)
def test_a_secret_value_written_in_the_config_is_refused_naming_the_key(workspace, section, key):
    body = workspace.config.read_text()
    value = "canary-in-file-4242"
    if section == "schedule.jobs.sync":
        extra = '\n[schedule.jobs.sync]\ncommand = "kpi daily"\nat = ["06:00"]\n'
        extra += f'{key} = "{value}"\n'
        body = body.replace("### retention ###", extra + "### retention ###")
    else:
        body = body.replace(f"[{section}]\n", f'[{section}]\n{key} = "{value}"\n', 1)
    workspace.config.write_text(body)
    proc = workspace.run("doctor")
    assert proc.code == 2
    assert f"{section}.{key}" in proc.stderr and f"{key}_env" in proc.stderr
    assert value not in proc.stderr and proc.stderr.count("\n") == 1

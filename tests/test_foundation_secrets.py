"""AT-29: canary secrets in secret-looking env vars never reach output, logs or the database."""

from __future__ import annotations

import sqlite3
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import SAMPLES, Proc

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
NEEDLES.append(b"canary-hook-6e5d4c")  # the webhook credential without its "Bearer" word


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


class _EchoHeaders(BaseHTTPRequestHandler):
    """A webhook receiver that fails with 500 and echoes every request header in its body."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # The credential first, so a 200-character excerpt of the body still holds it.
        items = sorted(self.headers.items(), key=lambda kv: kv[0].lower() != "authorization")
        body = "you sent: " + " ".join(f"{k}: {v}" for k, v in items)
        token = self.headers.get("Authorization", "").partition(" ")[2]
        body = f"bad token {token}; {body}"  # the credential alone, without "Bearer"
        data = body.encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_every_jobs_commands_and_failures_keep_the_canaries_out_of_output_db_and_files(
    workspace, tmp_path
):
    """AT-29 across the merged tree: import (Shopify 401), follow-ups (SMTP 535, webhook 500
    echoing headers), surveys (send, serve + POST, import), returns, KPIs, doctor, a crash."""
    from tests.import_helpers import ShopifyServer, shopify_config
    from tests.messaging_helpers import Sink, queue, wait_for
    from tests.surveys_helpers import SURVEY_CONFIG, free_port, links_in, seed_orders

    ws = workspace
    env = {**CANARIES, "CSOPS_NOW": "2024-04-20T02:00:00Z"}
    shopify = ShopifyServer(token="the-right-token-not-a-canary")
    base = shopify.start()
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    sink = Sink(tmp_path, extra_args=["--auth", "shop:the-right-password"])
    port = free_port()
    ws.set_config(
        shopify_config(base).replace("CSOPS_TEST_SHOPIFY_TOKEN", "SHOPIFY_ACCESS_TOKEN")
        + f'[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {sink.port}\n'
        'security = "none"\nusername = "shop"\npassword_env = "CSOPS_SMTP_PASSWORD"\n'
        f'[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:{hook.server_port}/x"\n'
        'auth_header_env = "WEBHOOK_AUTH_HEADER"\nidempotent = false\n' + SURVEY_CONFIG
    )
    ws.replace_config('quiet_hours = "21:00-09:00"', 'quiet_hours = ""')
    ws.replace_config('cap_period = "2d"', 'cap_period = "0d"')
    ws.replace_config('base_url = "http://127.0.0.1:8080"', f'base_url = "http://127.0.0.1:{port}"')
    ws.replace_config("\n[surveys]\n", '\n[surveys]\nalert_recipient = "care@shop.example"\n')
    seed_orders(ws.db_path, 5, delivered_at="2024-04-15T08:00:00Z")
    queue(ws, 3, channel="hook", prefix="hook", rule="hooked")

    procs = []

    def run(*args: str, codes: tuple[int, ...] = (0, 3)) -> None:
        proc = ws.run("-v", "--log-format", "json", *args, env=env)
        assert proc.code in codes, (args, proc.code, proc.stderr[-1500:])
        procs.append((args, proc))

    try:
        run("doctor", codes=(0, 1, 2, 4))
        run("-q", "doctor", codes=(0, 1, 2, 4))
        run("import", "orders", "--from", "shopify-api", codes=(1,))  # 401
        assert shopify.log, "the Shopify fake was never asked"
        run(
            "import",
            "orders",
            "--from",
            "shopify-csv",
            str(SAMPLES / "shopify_orders_april2024.csv"),
        )
        run("followups", "send", codes=(0, 3))  # webhook 500s echoing the auth header
        queue(ws, 3, channel="mail", prefix="smtp")
        run("followups", "send", codes=(1,))  # SMTP 535 stops the run naming the variable
        run("outbox", "list", "--json")
        run("surveys", "send")
        server = ws.popen("-v", "surveys", "serve", "--port", str(port), env=env)
        try:
            import requests

            def up() -> bool:
                try:
                    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok
                except requests.RequestException:
                    return False

            assert wait_for(up, timeout=30)
            links = [
                link
                for p in (ws.root / "outbox").rglob("*.eml")
                for link in links_in(message_from_bytes(p.read_bytes(), policy=policy.default))
                if f"127.0.0.1:{port}/s/" in link
            ]
            assert links, "no survey link in any .eml"
            r = requests.post(links[0].split("?")[0], data={"score": "1", "comment": "bad"})
            assert r.status_code == 200
        finally:
            server.terminate()
            s_out, s_err = server.communicate(timeout=30)
        procs.append(
            (("surveys", "serve"), Proc(server.returncode, s_out.decode(), s_err.decode()))
        )
        answers = tmp_path / "answers.csv"
        answers.write_text("order,score,comment,kind\n#1002,5,fine,csat\n#1003,9,x,csat\n")
        run("surveys", "import", str(answers))
        run("surveys", "summary")
        run(
            "returns",
            "process",
            str(SAMPLES / "returns_batch_april2024.csv"),
            "--out",
            str(ws.root / "exports" / "decisions.csv"),
        )
        run("kpi", "daily")
        run("kpi", "report", "--out", str(ws.root / "reports" / "kpi.html"))
        run("kpi", "check", codes=(0, 3, 4))
        run("runs", "--json")
        run("retention", "purge")
        conn = sqlite3.connect(ws.db_path)
        conn.execute("DROP TABLE return_lines")
        conn.close()
        run("returns", "process", str(SAMPLES / "returns_batch.csv"), codes=(1,))
        _args, crash = procs[-1]
        assert "Traceback" in crash.stderr, crash.stderr[-1500:]
    finally:
        shopify.stop()
        hook.shutdown()
        sink.stop()

    for args, proc in procs:
        assert not leaks(proc.stdout) and not leaks(proc.stderr), (args, leaks(proc.stderr))
    # The failures really happened (so the canaries had a chance to leak).
    errors = " ".join(r["last_error"] or "" for r in ws.query("SELECT last_error FROM outbox"))
    assert "535" in errors or any("535" in p.stderr for _a, p in procs), errors
    assert "500" in errors, errors
    checked = 0
    for path in ws.root.rglob("*"):
        if path.is_file():
            checked += 1
            assert not leaks(path.read_bytes()), path
    assert list((ws.root / "outbox").rglob("*.eml")) and list((ws.root / "exports").iterdir())
    assert (ws.root / "reports" / "kpi.html").exists() and checked > 10

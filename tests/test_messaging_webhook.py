"""The webhook channel against a real HTTP receiver on loopback (AT-17)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from messaging_helpers import env, no_quiet_hours, queue, sized, states


class Receiver:
    """Records every request; dedupes processing by Idempotency-Key; faults on first attempts."""

    def __init__(self, faults: dict[str, str]) -> None:
        self.faults = faults
        self.requests: list[dict] = []
        self.processed: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key")
                with receiver.lock:
                    attempt = sum(1 for r in receiver.requests if r["key"] == key) + 1
                    receiver.requests.append(
                        {
                            "key": key,
                            "to": body["to"],
                            "time": time.time(),
                            "auth": self.headers.get("Authorization"),
                        }
                    )
                fault = receiver.faults.get(body["to"]) if attempt == 1 else None

                def process() -> None:
                    with receiver.lock:
                        receiver.processed[key] = 1  # deduped by key

                if fault == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", "2")
                    self.end_headers()
                elif fault in ("503", "400"):
                    self.send_response(int(fault))
                    self.end_headers()
                    self.wfile.write(b"nope")
                elif fault == "timeout":
                    process()
                    time.sleep(1.5)
                    self.send_response(200)
                    self.end_headers()
                elif fault == "reset":
                    process()
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                else:
                    process()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


def _faults(n: int) -> dict[str, str]:
    out = {}
    for i in range(n):
        r = (i * 37) % 100
        fault = (
            "429" if r < 10 else "503" if r < 15 else "400" if r < 17 else
            "timeout" if r < 20 else "reset" if r < 22 else None
        )  # fmt: skip
        if fault:
            out[f"u{i}@example.test"] = fault
    return out


@pytest.mark.parametrize("idempotent", [False, True])
def test_webhook_faults_end_in_the_right_state_and_each_key_is_processed_once(
    workspace, idempotent, scale
):
    """AT-17: 100 messages; ``--nightly``: 500."""
    n = sized(scale, 100, 500)
    faults = _faults(n)
    rec = Receiver(faults)
    try:
        workspace.set_config(
            f'[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:{rec.port}/send"\n'
            f"read_timeout = 0.5\nconnect_timeout = 2\nidempotent = {str(idempotent).lower()}\n"
            'auth_header_env = "CSOPS_HOOK_AUTH"\n'
        )
        workspace.replace_config('backoff = ["1m", "5m", "30m", "2h", "6h"]', 'backoff = ["1s"]')
        workspace.replace_config("breaker_threshold = 5", "breaker_threshold = 1000")
        no_quiet_hours(workspace)
        queue(workspace, n, channel="hook")
        secret = "Bearer hook-secret-value-123"
        outputs = []
        for now in ("2024-04-20T02:00:00Z", "2024-04-20T02:01:00Z", "2024-04-20T02:02:00Z"):
            p = workspace.run("followups", "send", env=env(now, CSOPS_HOOK_AUTH=secret))
            outputs.append(p.stdout + p.stderr)
            assert "Traceback" not in p.stderr
        rows = {
            r["recipient"]: r
            for r in workspace.query("SELECT recipient, state, message_id, last_error FROM outbox")
        }
    finally:
        rec.stop()
    assert all(r["auth"] == secret for r in rec.requests)
    assert all(r["key"] for r in rec.requests)
    assert all(secret not in out for out in outputs)
    by_key: dict[str, int] = {}
    for r in rec.requests:
        by_key[r["key"]] = by_key.get(r["key"], 0) + 1
    for i in range(n):
        addr = f"u{i}@example.test"
        row, fault = rows[addr], faults.get(addr)
        key = row["message_id"]
        if fault in (None, "429", "503"):
            assert row["state"] == "sent", (addr, row)
            assert rec.processed.get(key) == 1
        elif fault == "400":
            assert row["state"] == "failed" and "400" in row["last_error"]
            assert by_key[key] == 1
        else:  # processed, reply lost
            assert rec.processed.get(key) == 1
            if idempotent:
                assert row["state"] == "sent" and by_key[key] == 2
            else:
                assert row["state"] == "unknown" and by_key[key] == 1
    # Every 429 was retried (the hint itself is checked in the next test).
    assert all(by_key[rows[a]["message_id"]] == 2 for a, f in faults.items() if f == "429")


def test_webhook_429_hint_sets_the_next_attempt_no_earlier_than_retry_after(workspace):
    rec = Receiver({"u0@example.test": "429"})
    try:
        workspace.set_config(
            f'[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:{rec.port}/send"\n'
        )
        workspace.replace_config('backoff = ["1m", "5m", "30m", "2h", "6h"]', 'backoff = ["1s"]')
        no_quiet_hours(workspace)
        queue(workspace, 1, channel="hook")
        workspace.run("followups", "send", env=env("2024-04-20T02:00:00Z"))
        row = workspace.query("SELECT state, next_attempt_at FROM outbox")[0]
        assert row["state"] == "queued"
        assert row["next_attempt_at"] >= "2024-04-20T02:00:02Z"
        # Not yet due one second later; due three seconds later.
        workspace.run("followups", "send", env=env("2024-04-20T02:00:01Z"))
        assert states(workspace) == {"queued": 1}
        workspace.run("followups", "send", env=env("2024-04-20T02:00:03Z"))
        assert states(workspace) == {"sent": 1}
    finally:
        rec.stop()


def test_a_missing_webhook_secret_is_a_config_error_naming_the_variable(workspace):
    workspace.set_config(
        '[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
        'auth_header_env = "CSOPS_HOOK_AUTH"\n'
    )
    no_quiet_hours(workspace)
    queue(workspace, 1, channel="hook")
    p = workspace.run("followups", "send", env=env())
    assert p.code == 2 and "CSOPS_HOOK_AUTH" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_webhook_token_stops_the_run_and_leaves_the_queue_queued(
    workspace, httpserver, status
):
    """A revoked token answers every request 401/403: the run stops at the first one (exit 1,
    naming the channel and the variable, never the token) instead of failing the whole queue;
    with the token fixed, the next run sends every message once."""
    from werkzeug import Response

    token = "Bearer revoked-token-canary-7781"
    seen: list[tuple[str, str]] = []
    revoked = {"after": 2}  # the token stops working after two messages

    def handler(request):
        seen.append((request.headers.get("Idempotency-Key"), request.headers.get("Authorization")))
        if len(seen) > revoked["after"]:
            # The body echoes the header it got, as some gateways do.
            return Response(f"bad auth {request.headers.get('Authorization')}", status=status)
        return Response('{"ok": true}', status=200, content_type="application/json")

    httpserver.expect_request("/send", method="POST").respond_with_handler(handler)
    workspace.set_config(
        f'[channels.hook]\ntype = "webhook"\nurl = "{httpserver.url_for("/send")}"\n'
        'auth_header_env = "CSOPS_HOOK_AUTH"\n'
    )
    no_quiet_hours(workspace)
    queue(workspace, 6, channel="hook")

    p = workspace.run("followups", "send", env=env(CSOPS_HOOK_AUTH=token))
    assert p.code == 1, (p.code, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "hook" in p.stderr and "CSOPS_HOOK_AUTH" in p.stderr and str(status) in p.stderr
    assert "revoked-token-canary" not in p.stdout + p.stderr
    assert len(seen) == 3  # two sent, one refused, then the run stopped: the rest untouched
    rows = workspace.query("SELECT id, state, attempts, handed_over_at, last_error FROM outbox")
    assert states(workspace) == {"sent": 2, "queued": 4}
    refused = [r for r in rows if r["state"] == "queued" and r["attempts"]]
    assert len(refused) == 1 and refused[0]["handed_over_at"] is None, rows
    assert sum(1 for r in rows if r["state"] == "queued" and not r["attempts"]) == 3
    stored = str(rows) + str(workspace.query("SELECT * FROM runs"))
    assert "revoked-token-canary" not in stored
    run = workspace.query("SELECT exit_code FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert run["exit_code"] == 1

    revoked["after"] = 10**6  # a new token is in place
    p = workspace.run("followups", "send", env=env(CSOPS_HOOK_AUTH="Bearer fixed"))
    assert p.code == 0, p.stderr
    assert states(workspace) == {"sent": 6}
    accepted = [key for key, _ in seen[:2]] + [key for key, _ in seen[3:]]
    assert len(accepted) == 6 and len(set(accepted)) == 6  # each message accepted once

"""SMTP over STARTTLS and implicit TLS with AUTH, the password read from an env var."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from messaging_helpers import Sink, env, queue, smtp_channel, states

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
PASSWORD = "relay-pass-7f3a9c"


@pytest.fixture
def cert(tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_mail_goes_out_over_tls_with_auth_and_the_password_never_shows(
    workspace, tmp_path, cert, mode
):
    crt, key = cert
    args = ["--tls", mode, "--cert", str(crt), "--key", str(key), "--auth", f"shop:{PASSWORD}"]
    with Sink(tmp_path, extra_args=args) as sink:
        smtp_channel(
            workspace,
            sink.port,
            extra=f'security = "{mode}"\nusername = "shop"\n'
            f'password_env = "CSOPS_SMTP_PASSWORD"\nca_file = "{crt}"\n',
        )
        queue(workspace, 5)
        p = workspace.run("followups", "send", "--json", env=env(CSOPS_SMTP_PASSWORD=PASSWORD))
        assert p.code == 0, p.stderr
        assert states(workspace) == {"sent": 5} and len(sink.ledger()) == 5
        assert PASSWORD not in p.stdout + p.stderr


def test_a_wrong_password_stops_the_run_naming_the_variable_and_sends_nothing(
    workspace, tmp_path, cert
):
    crt, key = cert
    args = ["--tls", "starttls", "--cert", str(crt), "--key", str(key), "--auth", "shop:right"]
    with Sink(tmp_path, extra_args=args) as sink:
        smtp_channel(
            workspace,
            sink.port,
            extra='security = "starttls"\nusername = "shop"\n'
            f'password_env = "CSOPS_SMTP_PASSWORD"\nca_file = "{crt}"\n',
        )
        queue(workspace, 3)
        p = workspace.run("followups", "send", env=env(CSOPS_SMTP_PASSWORD=PASSWORD))
        assert p.code == 1, p.stderr
        assert "CSOPS_SMTP_PASSWORD" in p.stderr and PASSWORD not in p.stderr
        assert "Traceback" not in p.stderr
        assert states(workspace) == {"queued": 3} and sink.ledger() == []
        db_text = "".join(str(r) for r in workspace.query("SELECT * FROM outbox"))
        assert PASSWORD not in db_text + str(workspace.query("SELECT * FROM runs"))


def test_an_untrusted_certificate_is_refused_not_ignored(workspace, tmp_path, cert):
    crt, key = cert
    args = ["--tls", "starttls", "--cert", str(crt), "--key", str(key)]
    with Sink(tmp_path, extra_args=args) as sink:
        smtp_channel(workspace, sink.port, extra='security = "starttls"\n')
        queue(workspace, 2)
        p = workspace.run("followups", "send", env=env())
        assert p.code == 1 and sink.ledger() == []
        assert "not trusted" in p.stderr and "ca_file" in p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert states(workspace) == {"queued": 2}

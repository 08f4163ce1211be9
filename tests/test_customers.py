"""Opt-out scopes: a marketing stop suppresses marketing only; an operator opt-out stops all."""

from __future__ import annotations

from pathlib import Path

from csops import db
from csops.customers import opt_in, opt_out, suppression_scope


def make_customer(conn, email: str) -> None:
    with db.write(conn):
        conn.execute(
            "INSERT INTO customers (email, created_at, updated_at) VALUES (?, 'x', 'x')", (email,)
        )


def test_marketing_stop_leaves_the_customer_reachable_for_transactional_mail(
    tmp_path: Path,
) -> None:
    conn = db.connect(tmp_path / "c.db")
    make_customer(conn, "ana@example.org")
    result = opt_out(conn, "ANA@example.org", scope="marketing", reason="one-click")
    assert result.changed and result.customers == 1
    assert suppression_scope(conn, "ana@example.org", "email") == "marketing"
    row = conn.execute("SELECT opted_out_at FROM customers").fetchone()
    assert row["opted_out_at"] is None


def test_operator_optout_upgrades_a_marketing_stop_to_all_and_optin_lifts_it(
    tmp_path: Path,
) -> None:
    conn = db.connect(tmp_path / "c.db")
    make_customer(conn, "ana@example.org")
    opt_out(conn, "ana@example.org", scope="marketing")
    upgraded = opt_out(conn, "ana@example.org", scope="all")
    assert upgraded.changed
    assert suppression_scope(conn, "ana@example.org", "email") == "all"
    assert conn.execute("SELECT opted_out_at FROM customers").fetchone()[0] is not None
    assert not opt_out(conn, "ana@example.org", scope="all").changed
    opt_in(conn, "ana@example.org")
    assert suppression_scope(conn, "ana@example.org", "email") is None
    assert conn.execute("SELECT opted_out_at FROM customers").fetchone()[0] is None

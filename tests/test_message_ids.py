"""Every kind of message carries the shop's own Message-ID domain, whoever planned it."""

from __future__ import annotations

from tests.conftest import Workspace


def test_followups_surveys_returns_and_alerts_share_the_shop_message_id_domain(
    workspace: Workspace,
) -> None:
    from datetime import datetime, timezone

    from csops import db
    from csops.config import load_config
    from csops.messaging.outbox import NewMessage, enqueue, message_id_domain

    config = load_config(workspace.config)
    assert message_id_domain(config) == "demo-shop.example"
    conn = db.connect(workspace.db_path)
    with db.write(conn):
        enqueue(
            conn,
            NewMessage("k1", "alert", "outbox", "ops@demo-shop.example", "s", "b"),
            now=datetime(2024, 4, 20, tzinfo=timezone.utc),
            domain=message_id_domain(config),
        )
    (row,) = workspace.query("SELECT message_id FROM outbox")
    assert row["message_id"].endswith("@demo-shop.example>")

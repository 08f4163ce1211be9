"""``import conversations``: generic CSV and Zendesk exports, linked to orders, idempotent."""

from __future__ import annotations


def test_generic_conversations_link_to_imported_orders_and_reimport_changes_nothing(
    workspace, sample
):
    assert (
        workspace.run(
            "import", "orders", "--from", "shopify-csv", str(sample / "shopify_orders_export.csv")
        ).code
        == 0
    )
    p = workspace.run(
        "import", "conversations", "--from", "csv", str(sample / "conversations.csv"), "--json"
    )
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 3
    rows = {
        r["external_id"]: r
        for r in workspace.query(
            "SELECT c.*, o.number FROM conversations c LEFT JOIN orders o ON o.id = c.order_id"
        )
    }
    assert rows["C-1"]["number"] == "#1001" and rows["C-1"]["channel"] == "chat"
    assert rows["C-1"]["created_at"] == "2026-03-01T14:00:00Z"
    assert rows["C-1"]["first_response_at"] == "2026-03-01T14:02:10Z"
    assert rows["C-3"]["order_id"] is None and rows["C-3"]["resolved_at"] is None
    again = workspace.run(
        "import", "conversations", "--from", "csv", str(sample / "conversations.csv"), "--json"
    )
    assert again.json()[0]["unchanged"] == 3


def test_zendesk_export_computes_first_response_from_reply_minutes(workspace, sample):
    assert (
        workspace.run(
            "import",
            "orders",
            "--from",
            "shopify-csv",
            str(sample / "shopify_orders_april2024.csv"),
        ).code
        == 0
    )
    p = workspace.run(
        "import",
        "conversations",
        "--from",
        "zendesk-csv",
        str(sample / "zendesk_tickets_april2024.csv"),
        "--json",
    )
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 12
    r = workspace.query(
        "SELECT c.*, o.number FROM conversations c LEFT JOIN orders o "
        "ON o.id = c.order_id WHERE c.external_id = '9101'"
    )[0]
    # 2024-04-03 10:00 Asia/Shanghai = 02:00Z; first reply 600 minutes later
    assert (r["created_at"], r["first_response_at"], r["resolved_at"]) == (
        "2024-04-03T02:00:00Z",
        "2024-04-03T12:00:00Z",
        "2024-04-03T12:30:00Z",
    )
    assert r["number"] == "#2010" and r["channel"] == "Mail" and r["kind"] == "question"


def test_a_conversation_answered_before_it_was_opened_is_rejected(workspace, tmp_path):
    path = tmp_path / "conv.csv"
    path.write_text(
        "conversation_id,channel,order_number,created_at,first_response_at,resolved_at\n"
        "A,chat,,2024-04-01T10:00:00Z,2024-04-01T09:00:00Z,\n"
        "B,chat,,2024-04-01T10:00:00Z,2024-04-01T10:05:00Z,not a time\n"
        "C,email,,2024-04-01T10:00:00Z,,\n",
        encoding="utf-8",
    )
    p = workspace.run("import", "conversations", "--from", "csv", str(path), "--json")
    assert p.code == 3
    assert p.json()[0]["inserted"] == 1 and p.json()[0]["rejected"] == 2
    assert "first_response_at: before created_at" in p.stderr
    assert "resolved_at: not a date/time" in p.stderr


def test_a_file_that_is_not_a_conversations_export_fails_listing_the_columns(workspace, sample):
    p = workspace.run(
        "import", "conversations", "--from", "csv", str(sample / "shopify_orders_export.csv")
    )
    assert p.code == 2
    assert "missing column(s) conversation_id" in p.stderr


def test_stdin_is_read_and_closed_on_success_and_on_a_bad_header(workspace, sample):
    """``-`` reads stdin (a copy in a temporary file); the copy is closed on every path:
    Python's development mode reports any file left for the garbage collector."""
    data = (sample / "conversations.csv").read_bytes()
    for text, code in ((data, 0), (b"not,a,conversations,file\n1,2,3,4\n", 2)):
        p = workspace.run(
            "import",
            "conversations",
            "--from",
            "csv",
            "-",
            "--dry-run",
            input=text,
            env={"PYTHONDEVMODE": "1"},
        )
        assert p.code == code, p.stderr
        assert "ResourceWarning" not in p.stderr

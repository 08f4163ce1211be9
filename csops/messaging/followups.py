"""The ``followups send`` job: plan what is due into the outbox and deliver the queue."""

from __future__ import annotations

from typing import Any

from csops.result import Result


def send_job(ctx: Any, *, rules: set[str] | None = None, limit: int | None = None) -> Result:
    """Plan due follow-ups, then deliver due queued messages (all kinds, or only ``rules``)."""
    from csops.messaging.outbox import deliver
    from csops.messaging.rules import PlanReport, plan_due, plan_steps

    if ctx.dry_run:
        plan = plan_due(ctx.conn, ctx.config, ctx.now, rule_names=rules, dry_run=True)
        report = deliver(ctx, limit=limit, rules=rules)
    else:
        # Planning runs in the pauses of delivery (while a mail server works on a message),
        # and always to the end: everything due is planned even if delivery stops early.
        plan = PlanReport()
        steps = plan_steps(ctx.conn, ctx.config, ctx.now, plan, rule_names=rules)
        report = deliver(ctx, limit=limit, rules=rules, background=steps)
    result = Result("followups send")
    if ctx.dry_run:
        result.count("would_plan", len([r for r in plan.rows if r["state"] == "planned"]))
        rows = [{**r, "id": None, "action": "would_plan"} for r in plan.rows]
        rows += [{**r, "action": r["state"]} for r in report.rows]
        result.rows = rows
        result.columns = ["action", "id", "rule", "order_id", "recipient", "error"]
    else:
        result.count("planned", plan.planned)
        result.rows = report.rows
        result.columns = ["id", "state", "rule", "channel", "recipient", "message_id", "error"]
    if plan.template_errors:
        result.count("template_errors", plan.template_errors)
    if plan.no_recipient:
        result.count("no_recipient", plan.no_recipient)
    for k, v in report.counts.items():
        result.count(k, v)
    result.messages.extend(report.messages)
    result.messages.extend(plan.errors[:20])
    if not ctx.dry_run and (report.partial or plan.template_errors):
        result.status = "partial"
    return result

"""``[surveys]``: which orders get a CSAT or NPS survey, when, how often, and the server's limits.

Durations are strings (``3d``, ``12h``) like every other delay in csops; thresholds are the
highest score that still counts as a detractor, so the service-recovery alert is one comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from csops.timeutil import parse_duration

Kind = Literal["csat", "nps"]
SCALES: dict[str, tuple[int, int]] = {"csat": (1, 5), "nps": (0, 10)}


def _duration(value: str, where: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{where}: invalid duration {value!r}", "a number and a unit: 30m, 12h, 3d, 2w"
        ) from None


@dataclass(frozen=True)
class SurveyRule:
    """One survey rule: ``kind`` sent ``delay`` after the order's ``trigger`` event."""

    name: str
    kind: Kind = "csat"
    trigger: Literal["paid", "shipped", "delivered"] = "delivered"
    delay: str = "3d"
    # Do not send when the survey would go out more than this late (e.g. after a long outage).
    send_within: str = "14d"
    # Template name; empty: survey_<kind>.
    template: str = ""

    def __post_init__(self) -> None:
        _duration(self.delay, "delay")
        _duration(self.send_within, "send_within")
        if not self.name.strip():
            raise ValueError("rule name is empty", "a short name like 'csat-after-delivery'")

    @property
    def delay_td(self) -> timedelta:
        return parse_duration(self.delay)

    @property
    def send_within_td(self) -> timedelta:
        return parse_duration(self.send_within)

    @property
    def template_name(self) -> str:
        return self.template or f"survey_{self.kind}"


def _default_rules() -> list[SurveyRule]:
    return [SurveyRule(name="csat-after-delivery", kind="csat", trigger="delivered", delay="3d")]


@dataclass(frozen=True)
class SurveySettings:
    """Survey rules, throttles, token expiry, detractor alerts and the survey server's limits."""

    rules: list[SurveyRule] = field(default_factory=_default_rules)
    # Channel (a [channels.NAME]) for survey mail; empty: the messaging default channel.
    channel: str = ""
    # At most one survey per customer within this many days (across kinds and rules).
    throttle_days: int = 90
    # One reminder this many days after the survey was sent without an answer; 0: never.
    reminder_after_days: int = 4
    # Links stop working this many days after the survey was planned.
    token_expiry_days: int = 30
    # An answer at or below these scores is a detractor: an alert is queued at once.
    csat_detractor_max: int = 2
    nps_detractor_max: int = 6
    # Channel for detractor alerts (webhook or e-mail to the shop); empty: no alerts.
    alert_channel: str = ""
    # Recipient of alerts (address or webhook name); empty: [shop] email.
    alert_recipient: str = ""
    # Server limits.
    max_body_bytes: int = 16384
    max_comment_chars: int = 2000
    posts_per_token_per_minute: int = 20
    posts_per_client_per_minute: int = 300
    channel_timeout_s: int = 30
    threads: int = 4
    # Address of the HTTPS reverse proxy in front of the server: the client address used for
    # rate limits then comes from its X-Forwarded-For. Empty: the peer address.
    trusted_proxy: str = ""

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("two survey rules share a name", "unique rule names")
        for key in ("throttle_days", "reminder_after_days", "token_expiry_days"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} is negative", "0 or more days")
        if self.token_expiry_days < 1:
            raise ValueError("token_expiry_days must be at least 1", "1 or more days")
        if not 1 <= self.csat_detractor_max <= 5:
            raise ValueError("csat_detractor_max out of range", "a CSAT score 1-5")
        if not 0 <= self.nps_detractor_max <= 10:
            raise ValueError("nps_detractor_max out of range", "an NPS score 0-10")
        if not 1024 <= self.max_body_bytes <= 1048576:
            raise ValueError("max_body_bytes out of range", "1024 to 1048576 bytes")
        if self.max_comment_chars < 1:
            raise ValueError("max_comment_chars must be positive", "1 or more characters")
        for key in ("posts_per_token_per_minute", "posts_per_client_per_minute", "threads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive", "1 or more")
        if self.channel_timeout_s < 1:
            raise ValueError("channel_timeout_s must be positive", "1 or more seconds")

    @property
    def token_max_age(self) -> timedelta:
        return timedelta(days=self.token_expiry_days)

    def detractor_max(self, kind: str) -> int:
        return self.csat_detractor_max if kind == "csat" else self.nps_detractor_max

    def is_detractor(self, kind: str, score: int) -> bool:
        return score <= self.detractor_max(kind)


def doctor_checks(config):  # type: ignore[no-untyped-def]
    """Signing keys present; survey templates present for every rule and locale."""
    from csops.doctor import Check
    from csops.errors import CsopsError

    checks = []
    try:
        from csops.tokens import signing_keys

        n = len(signing_keys(config))
        checks.append(Check("surveys", "signing keys", n > 0, f"{n} key(s) in the env var"))
    except CsopsError as exc:
        checks.append(Check("surveys", "signing keys", False, str(exc), level="warning"))
    settings: SurveySettings = config.section("surveys")
    try:
        from csops.messaging.render import template_locales
    except ImportError:  # messaging not installed: nothing to check against
        return checks
    for name in sorted({r.template_name for r in settings.rules}):
        for tname in (name, f"{name}_reminder"):
            locales = template_locales(config, tname)
            checks.append(
                Check(
                    "surveys",
                    f"template {tname}",
                    bool(locales)
                    or (tname.endswith("_reminder") and not settings.reminder_after_days),
                    ", ".join(locales) or "missing (templates/messages/<name>/<locale>.txt)",
                )
            )
    if settings.alert_channel:
        channels = config.section("channels") or {}
        ok = settings.alert_channel in channels or settings.alert_channel == "outbox"
        checks.append(
            Check("surveys", "alert_channel", ok, f"{settings.alert_channel!r} in [channels]")
        )
    return checks

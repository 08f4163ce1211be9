"""Settings of the messaging job: ``[channels.NAME]``, ``[messaging]`` and ``[[followups]]``.

Validated by the generic loader in :mod:`csops.config`; the semantic checks (a duration that
parses, a channel type that exists, quiet hours that read as ``HH:MM-HH:MM``) live here, so a
bad value is a config error naming the key, never a surprise in the middle of a send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from typing import Literal

from csops.timeutil import parse_duration

TRIGGERS = (
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
    "return_decided",
    "birthday",
)
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _check_duration(value: str, key: str) -> None:
    try:
        parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{key}: invalid duration {value!r}", "a number and a unit: 30m, 12h, 3d"
        ) from None


def parse_hhmm(value: str) -> time:
    m = _HHMM.match(value.strip())
    if not m:
        raise ValueError(f"invalid time {value!r}", "HH:MM (24-hour)")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class ChannelSettings:
    """One named delivery channel: ``[channels.NAME]`` with ``type`` = a registered channel.

    Keys unused by a type are ignored by it (an ``smtp`` channel has no ``url``); the type's
    own required keys are checked here so a typo fails at load time.
    """

    type: str = "outbox-dir"
    # outbox-dir
    path: str = ""  # empty: [paths] outbox_dir
    # smtp
    host: str = "127.0.0.1"
    port: int = 25
    security: Literal["ssl", "starttls", "none"] = "none"
    username: str = ""
    password_env: str = ""
    timeout: float = 30.0
    ca_file: str = ""  # extra CA bundle to trust (a private relay's certificate); empty: system
    rate_per_minute: int = 0  # 0: unlimited
    from_address: str = ""  # empty: [shop] email
    from_name: str = ""  # empty: [shop] name
    helo: str = ""
    # webhook
    url: str = ""
    auth_header_env: str = ""  # env var holding the whole Authorization header value
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    idempotent: bool = False  # the receiver dedupes by Idempotency-Key: a lost reply is retried
    body_template: str = ""  # JSON template; empty: the default {"to","subject","text",...}

    def __post_init__(self) -> None:
        from csops.registry import known, names

        if not known("channels", self.type):
            raise ValueError(
                f"unknown channel type {self.type!r}", "one of " + ", ".join(names("channels"))
            )
        if self.type == "webhook" and not self.url.startswith(("http://", "https://")):
            raise ValueError("a webhook channel needs url = 'http(s)://...'", "an http(s) URL")
        if self.type == "smtp" and not self.host:
            raise ValueError("an smtp channel needs host", "a host name")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}", "1-65535")
        if self.rate_per_minute < 0:
            raise ValueError("rate_per_minute must be >= 0", "0 (unlimited) or more")
        if self.username and not self.password_env:
            raise ValueError(
                "username given without password_env", "password_env naming an env variable"
            )


@dataclass(frozen=True)
class MessagingSettings:
    """How the outbox behaves: default channel, customer protection, retries, breaker."""

    default_channel: str = "outbox"
    # Frequency cap per customer across all rules: at most `cap_messages` in `cap_period`.
    cap_messages: int = 1
    cap_period: str = "2d"  # "0d" disables the cap
    cap_action: Literal["defer", "suppress"] = "defer"
    cap_exempt_kinds: list[str] = field(default_factory=lambda: ["return_notice", "alert"])
    # Follow-up rules left out of the cap both ways (never held by it, never counted in it),
    # e.g. ["shipping_notice"]: a transactional notice that must not wait behind a review request.
    cap_exempt_rules: list[str] = field(default_factory=list)
    # Quiet hours in the shop timezone ("21:00-09:00"); empty disables. Staff alerts ignore them.
    quiet_hours: str = "21:00-09:00"
    quiet_exempt_kinds: list[str] = field(default_factory=lambda: ["alert"])
    # Waits after the 1st, 2nd, ... transient failure (the last repeats); a server hint
    # (Retry-After, "try again in N seconds") wins when longer.
    backoff: list[str] = field(default_factory=lambda: ["1m", "5m", "30m", "2h", "6h"])
    max_attempts: int = 10
    # Stop the run after this many transient failures in a row (relay down), exit 3.
    breaker_threshold: int = 5
    # Jinja2 limits against runaway templates.
    max_render_bytes: int = 1_000_000
    max_render_seconds: float = 2.0
    # Domain used in generated Message-IDs; empty: the domain of [shop] email.
    message_id_domain: str = ""

    def __post_init__(self) -> None:
        _check_duration(self.cap_period, "cap_period")
        for b in self.backoff:
            _check_duration(b, "backoff")
        if not self.backoff:
            raise ValueError("backoff must not be empty", "a list of durations")
        if self.quiet_hours:
            start, sep, end = self.quiet_hours.partition("-")
            if not sep:
                raise ValueError(f"invalid quiet_hours {self.quiet_hours!r}", "'HH:MM-HH:MM'")
            parse_hhmm(start)
            parse_hhmm(end)
        if self.breaker_threshold < 1 or self.max_attempts < 1 or self.cap_messages < 1:
            raise ValueError("breaker_threshold, max_attempts and cap_messages must be >= 1")

    def quiet_window(self) -> tuple[time, time] | None:
        if not self.quiet_hours:
            return None
        start, _, end = self.quiet_hours.partition("-")
        return parse_hhmm(start), parse_hhmm(end)


@dataclass(frozen=True)
class FollowupRule:
    """One ``[[followups]]`` rule: when a message becomes due, for which orders, with what."""

    name: str
    trigger: Literal[
        "paid", "shipped", "delivered", "cancelled", "refunded", "return_decided", "birthday"
    ]
    template: str
    delay: str = "0h"
    expire_after: str = "7d"  # not sent if more than this late (after trigger + delay)
    channel: str = ""  # empty: [messaging] default_channel
    enabled: bool = True
    marketing: bool = False  # review requests, birthday mail: unsubscribe headers + scope
    # Conditions (all must hold; empty means "any").
    statuses: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    min_total_minor: int = 0
    tags_any: list[str] = field(default_factory=list)
    skus_any: list[str] = field(default_factory=list)
    customer: Literal["any", "first_order", "repeat"] = "any"
    # Extra template variables, e.g. a coupon code for the birthday greeting.
    variables: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9_-]*$", self.name):
            raise ValueError(f"invalid rule name {self.name!r}", "lower-case letters, digits, _ -")
        _check_duration(self.delay, "delay")
        _check_duration(self.expire_after, "expire_after")
        from csops.model import ORDER_STATUSES

        for s in self.statuses:
            if s not in ORDER_STATUSES:
                raise ValueError(
                    f"unknown order status {s!r}", "one of " + ", ".join(ORDER_STATUSES)
                )
        if self.min_total_minor < 0:
            raise ValueError("min_total_minor must be >= 0")


def doctor_checks(config):
    """Channels named by rules exist; templates of rules exist; Jinja2 is patched enough."""
    from csops.doctor import Check

    checks = []
    messaging: MessagingSettings = config.section("messaging")
    channels = channel_table(config)
    checks.append(
        Check(
            "messaging",
            "default_channel",
            messaging.default_channel in channels,
            f"{messaging.default_channel!r} ({', '.join(sorted(channels))})",
        )
    )
    for rule in config.section("followups"):
        ch = rule.channel or messaging.default_channel
        checks.append(Check("followups", f"rule {rule.name}", ch in channels, f"channel {ch!r}"))
    import jinja2

    parts = tuple(int(p) for p in re.findall(r"\d+", jinja2.__version__)[:3])
    checks.append(
        Check(
            "templates",
            "jinja2 version",
            parts >= (3, 1, 6),
            f"jinja2 {jinja2.__version__} (sandbox fixes need >= 3.1.6)",
        )
    )
    try:
        from csops.messaging.render import check_templates

        problems = check_templates(config)
        checks.append(
            Check(
                "templates",
                "render",
                not problems,
                "all templates render"
                if not problems
                else f"{len(problems)} failing: " + "; ".join(p["error"] for p in problems[:3]),
            )
        )
    except Exception as exc:  # doctor reports, it never crashes
        checks.append(Check("templates", "render", False, f"{type(exc).__name__}: {exc}"))
    for name, ch in channels.items():
        if ch.password_env or ch.auth_header_env:
            import os

            env = ch.password_env or ch.auth_header_env
            checks.append(
                Check("channels", f"{name} secret", bool(os.environ.get(env)), f"env {env}")
            )
    return checks


def channel_table(config) -> dict[str, ChannelSettings]:
    """Configured channels plus the built-in ``outbox`` (outbox-dir) unless redefined."""
    table = dict(config.section("channels") or {})
    table.setdefault("outbox", ChannelSettings(type="outbox-dir"))
    return table

"""Webhook channel: an HTTP POST of a JSON body (an SMS gateway, a chat robot, a ticket system).

Every request carries ``Idempotency-Key: <message_id>`` (the same on every attempt), a connect
and a read timeout, and no automatic retries: retries belong to the outbox (backoff, breaker).
A reply lost after the request went out (read timeout, reset) is ``unknown`` unless the channel
is declared ``idempotent = true``, in which case the receiver dedupes and we may retry.

401 and 403 are not a verdict on one message but on our credentials (a revoked or wrong token):
failing each queued message in turn would burn the whole queue, so they stop the run with
:class:`RemoteAuthError` (exit 1), as an SMTP login refusal does, and the messages stay queued.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from csops import timeutil
from csops.errors import RemoteAuthError
from csops.messaging.channels.base import BaseChannel, Outcome, OutMessage

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timeutil.now()).total_seconds())


class WebhookChannel(BaseChannel):
    """POST each message as JSON to ``url``."""

    def __init__(self, name: str, settings, config) -> None:
        self.name = name
        self.settings = settings
        self.config = config
        self.auth = (
            config.secret(settings.auth_header_env, key=f"channels.{name}.auth_header_env")
            if settings.auth_header_env
            else None
        )
        self.session = None

    def open(self) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def body(self, msg: OutMessage) -> bytes:
        fields = {
            "message_id": msg.message_id,
            "kind": msg.kind,
            "rule": msg.rule,
            "to": msg.recipient,
            "subject": msg.subject,
            "text": msg.body_text,
            "html": msg.body_html,
            "order_id": msg.order_id,
            "customer_id": msg.customer_id,
            "locale": msg.locale,
        }
        if not self.settings.body_template:
            return json.dumps(fields, ensure_ascii=False).encode("utf-8")
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        text = env.from_string(self.settings.body_template).render(**fields)
        json.loads(text)  # must be JSON: a broken template fails the message, not the run
        return text.encode("utf-8")

    def send(self, msg: OutMessage, mark_handed_over: Callable[[], None]) -> Outcome:
        import requests

        if self.session is None:
            self.open()
        try:
            body = self.body(msg)
        except Exception as exc:
            return Outcome("permanent", "template_error", f"body_template: {exc}"[:300])
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": msg.message_id,
            "User-Agent": "csops",
        }
        if self.auth:
            headers["Authorization"] = self.auth
        s = self.settings
        mark_handed_over()
        try:
            resp = self.session.post(
                s.url, data=body, headers=headers, timeout=(s.connect_timeout, s.read_timeout)
            )
        except requests.exceptions.ConnectTimeout as exc:
            return Outcome("transient", "connect", type(exc).__name__)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if _never_connected(exc):
                return Outcome("transient", "connect", type(exc).__name__)
            if s.idempotent:
                return Outcome("transient", "lost_reply", f"{type(exc).__name__} (idempotent)")
            return Outcome("unknown", "lost_after_handover", type(exc).__name__)
        except requests.RequestException as exc:
            return Outcome("transient", "request", type(exc).__name__)
        if resp.status_code in (401, 403):
            raise self._auth_refused(resp.status_code)
        text = resp.text[:200].replace("\n", " ")
        if 200 <= resp.status_code < 300:
            return Outcome("sent", str(resp.status_code), text)
        if resp.status_code in TRANSIENT_STATUS:
            return Outcome(
                "transient",
                str(resp.status_code),
                text,
                retry_after(resp.headers.get("Retry-After")),
            )
        return Outcome("permanent", str(resp.status_code), text or resp.reason or "")

    def _auth_refused(self, status: int) -> RemoteAuthError:
        """The stop for a 401/403: names the channel and the variable, never its value (nor
        the reply's body, which may echo the header we sent)."""
        from urllib.parse import urlsplit

        env = self.settings.auth_header_env
        where = urlsplit(self.settings.url).netloc or self.settings.url
        if env:
            expected = f"a valid Authorization header value in ${env}"
        else:
            expected = "auth_header_env naming the variable that holds the Authorization header"
        return RemoteAuthError(
            f"webhook channel {self.name!r} ({where}) refused the credentials (HTTP {status}); "
            "the run stopped, the messages stay queued",
            field=f"channels.{self.name}.auth_header_env",
            expected=expected,
        )


def _never_connected(exc: BaseException) -> bool:
    """True when the request never reached the server (refused, DNS): safe to retry."""
    from urllib3.exceptions import NewConnectionError

    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (NewConnectionError, ConnectionRefusedError)):
            return True
        for arg in getattr(cur, "args", ()):
            if isinstance(arg, BaseException):
                if isinstance(arg, (NewConnectionError, ConnectionRefusedError)):
                    return True
                if getattr(arg, "reason", None) is not None and isinstance(
                    arg.reason, (NewConnectionError, ConnectionRefusedError)
                ):
                    return True
        cur = cur.__cause__ or cur.__context__
    return False

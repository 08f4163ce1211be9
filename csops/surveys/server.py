"""The survey server: a WSGI app for survey and unsubscribe links, served by waitress.

Mail scanners open every link, so GET and HEAD only ever show a page; the page's button POSTs,
and only a POST records an answer or an unsubscribe. The RFC 8058 one-click POST
(``List-Unsubscribe=One-Click``) acts at once. Tampered, expired or unknown tokens get a plain
localized 4xx page and write nothing. Bodies are size-limited (413 before reading), POSTs are
rate-limited per token and per client (429), and any exception becomes a generic 500 page: the
details go to the log, never to the browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from csops import db as dbmod
from csops import timeutil
from csops.config import Config
from csops.errors import CsopsError, NotFoundError
from csops.log import get_logger
from csops.surveys.links import expired_ref, read_survey_token
from csops.surveys.responses import AnswerError, parse_score, record_answer
from csops.surveys.settings import SCALES, SurveySettings
from csops.tokens import TokenError, read_token

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCALES = ("en", "zh-CN")
_TOKEN = r"([A-Za-z0-9_\-\.]{16,1024})"
_ROUTES = (("survey", re.compile(rf"^/s/{_TOKEN}/?$")), ("unsub", re.compile(rf"^/u/{_TOKEN}/?$")))
log = get_logger("surveys.server")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    locale: str = "en"
    nonce: str = ""  # the CSP nonce of the page's <style>


class RateLimiter:
    """Sliding one-minute windows per key; thread-safe; forgets idle keys."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._hits) > 10000:
                self._hits = {k: v for k, v in self._hits.items() if v and now - v[-1] < 60}
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return False
            hits.append(now)
            return True


def negotiate_locale(
    *candidates: str | None, accept_language: str = "", default: str = "en"
) -> str:
    """The first supported locale among explicit candidates, then Accept-Language, then default."""
    for cand in candidates:
        loc = _normalize_locale(cand)
        if loc:
            return loc
    ranked = []
    for i, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        m = re.search(r"q=([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag))
    for _, _, tag in sorted(ranked):
        loc = _normalize_locale(tag)
        if loc:
            return loc
    return _normalize_locale(default) or "en"


def _normalize_locale(tag: str | None) -> str | None:
    if not tag:
        return None
    t = tag.strip().lower().replace("_", "-")
    if t.startswith("zh"):
        return "zh-CN"
    if t.startswith("en"):
        return "en"
    return None


class Pages:
    """Jinja2 pages from ``templates/pages/`` with their strings from ``strings.toml``."""

    def __init__(self, roots: list[Path]) -> None:
        from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        roots = [r for r in roots if (r / "strings.toml").is_file()]
        if not roots:
            raise CsopsError("no survey pages found", expected="templates/pages/strings.toml")
        root = roots[0]
        self.env = ImmutableSandboxedEnvironment(
            loader=ChoiceLoader([FileSystemLoader(str(r)) for r in roots]),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        with open(root / "strings.toml", "rb") as fh:
            self.strings: dict[str, dict[str, str]] = tomllib.load(fh)
        for loc in LOCALES:
            if loc not in self.strings:
                raise CsopsError(f"no [{loc}] strings", file=str(root / "strings.toml"))

    def render(self, name: str, locale: str, nonce: str, **context: Any) -> bytes:
        t = {**self.strings["en"], **self.strings[locale]}
        template = self.env.get_template(f"{name}.html.j2")
        return template.render(t=t, locale=locale, nonce=nonce, **context).encode("utf-8")


def page_dirs(config: Config) -> list[Path]:
    """The workspace's ``templates/pages`` first, then the packaged defaults."""
    from importlib import resources

    dirs = [config.resolve(config.paths.templates) / "pages"] if config.path else []
    dirs.append(Path(str(resources.files("csops.templates"))) / "pages")
    return dirs


class AlertWorker:
    """Delivers queued detractor alerts in the background, right after an answer records one."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = False

    def notify(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="csops-alerts", daemon=True)
                self._thread.start()
        self._event.set()

    def stop(self) -> None:
        self._stop = True
        self._event.set()

    def _loop(self) -> None:
        from csops.surveys.send import deliver_alerts_job

        while not self._stop:
            self._event.wait()
            self._event.clear()
            if self._stop:
                return
            try:
                deliver_alerts_job(self.config)
            except Exception:  # the server keeps serving; the next outbox run retries
                log.exception("delivering survey alerts failed")


class SurveyApp:
    """The WSGI application. One SQLite connection per server thread, opened on first use."""

    def __init__(self, config: Config, *, testing: bool | None = None) -> None:
        self.config = config
        self.settings: SurveySettings = config.section("surveys")
        self.pages = Pages(page_dirs(config))
        self.token_limiter = RateLimiter(self.settings.posts_per_token_per_minute)
        self.client_limiter = RateLimiter(self.settings.posts_per_client_per_minute)
        self.alerts = AlertWorker(config)
        self.testing = os.environ.get("CSOPS_TESTING") == "1" if testing is None else testing
        self._local = threading.local()

    # -- plumbing ---------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = dbmod.connect(
                self.config.db_path,
                synchronous=self.config.database.synchronous,
                busy_timeout_ms=self.config.database.busy_timeout_ms,
            )
            self._local.conn = conn
        return conn

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            resp = self.dispatch(environ, method)
        except Exception:
            log.exception("survey server error on %s %s", method, _safe_path(environ))
            resp = self.error_page(environ, 500, "error_internal")
        headers = [
            ("Content-Type", resp.content_type),
            ("Content-Length", str(len(resp.body))),
            ("Content-Language", resp.locale),
            *self.security_headers(resp),
            *resp.headers,
        ]
        status = f"{resp.status} {HTTPStatus(resp.status).phrase}"
        start_response(status, headers)
        log.debug("%s %s -> %s", method, _safe_path(environ), resp.status)
        return [b""] if method == "HEAD" else [resp.body]

    def security_headers(self, resp: Response) -> list[tuple[str, str]]:
        nonce = resp.nonce
        csp = (
            "default-src 'none'; "
            + (f"style-src 'nonce-{nonce}'; " if nonce else "")
            + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        return [
            ("Content-Security-Policy", csp),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-store"),
            ("X-Robots-Tag", "noindex, nofollow"),
            ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]

    def page(self, status: int, name: str, locale: str, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(12)
        body = self.pages.render(name, locale, nonce, shop=self.config.shop.name, **context)
        return Response(status, body, locale=locale, nonce=nonce)

    def error_page(
        self, environ: dict[str, Any], status: int, message: str, locale: str | None = None
    ) -> Response:
        loc = locale or negotiate_locale(
            accept_language=environ.get("HTTP_ACCEPT_LANGUAGE", ""),
            default=self.config.shop.locale,
        )
        try:
            resp = self.page(status, "error", loc, message_key=message, code=status)
        except Exception:
            log.exception("rendering the error page failed")
            resp = Response(status, b"Error", content_type="text/plain; charset=utf-8")
        if status == 405:
            resp.headers.append(("Allow", "GET, HEAD, POST"))
        return resp

    def read_form(self, environ: dict[str, Any]) -> dict[str, str]:
        """The urlencoded body, size-checked before reading; FormError (400/413/415) otherwise."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise FormError(400) from None
        if length < 0:
            raise FormError(400)
        if length > self.settings.max_body_bytes:
            raise FormError(413)
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        body = environ["wsgi.input"].read(length) if length else b""
        if ctype not in ("application/x-www-form-urlencoded", "") or (body and not ctype):
            raise FormError(415)
        try:
            text = body.decode("ascii")
            pairs = parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise FormError(400) from None
        return {k: v[-1] for k, v in pairs.items()}

    # -- routes -----------------------------------------------------------------------------
    def dispatch(self, environ: dict[str, Any], method: str) -> Response:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return Response(200, b"ok\n", content_type="text/plain; charset=utf-8")
        if path == "/robots.txt":
            return Response(
                200, b"User-agent: *\nDisallow: /\n", content_type="text/plain; charset=utf-8"
            )
        if path == "/_test/fail" and self.testing:
            raise RuntimeError("forced failure for tests at /tmp/secret/path.py")
        for name, pattern in _ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            if method not in ("GET", "HEAD", "POST"):
                return self.error_page(environ, 405, "error_method")
            handler = getattr(self, f"{name}_{'post' if method == 'POST' else 'get'}")
            return handler(environ, m.group(1))
        return self.error_page(environ, 404, "error_not_found")

    def _survey(self, environ: dict[str, Any], token: str) -> tuple[sqlite3.Row | None, Response]:
        """The survey row for a valid token, or an error response (4xx, localized)."""
        accept = environ.get("HTTP_ACCEPT_LANGUAGE", "")
        try:
            ref = read_survey_token(self.config, token)
        except TokenError as exc:
            expired = expired_ref(exc)
            if expired is None:
                return None, self.error_page(environ, 404, "error_bad_link")
            row = self._load_survey(expired.survey_id)
            loc = self._locale(row, accept)
            return None, self.error_page(environ, 410, "error_expired", loc)
        row = self._load_survey(ref.survey_id)
        if row is None or row["kind"] != ref.kind:
            return None, self.error_page(environ, 404, "error_bad_link")
        return row, Response(200)

    def _load_survey(self, survey_id: int) -> sqlite3.Row | None:
        return (
            self.conn()
            .execute(
                "SELECT s.id, s.kind, s.score, s.comment, s.responded_at, "
                "o.number AS order_number, "
                "m.locale AS message_locale, c.locale AS customer_locale "
                "FROM surveys s LEFT JOIN orders o ON o.id = s.order_id "
                "LEFT JOIN outbox m ON m.id = s.outbox_id "
                "LEFT JOIN customers c ON c.id = s.customer_id WHERE s.id = ?",
                (survey_id,),
            )
            .fetchone()
        )

    def _locale(self, row: sqlite3.Row | None, accept: str) -> str:
        cands = (row["message_locale"], row["customer_locale"]) if row is not None else ()
        return negotiate_locale(*cands, accept_language=accept, default=self.config.shop.locale)

    def _survey_page(
        self,
        row: sqlite3.Row,
        locale: str,
        score: int | None,
        comment: str | None,
        status: int = 200,
        error: str | None = None,
    ) -> Response:
        low, high = SCALES[row["kind"]]
        return self.page(
            status,
            "survey",
            locale,
            kind=row["kind"],
            scale=list(range(low, high + 1)),
            selected=score,
            comment=comment or "",
            order_number=row["order_number"] or "",
            answered=row["responded_at"] is not None,
            max_comment=self.settings.max_comment_chars,
            error_key=error,
        )

    def survey_get(self, environ: dict[str, Any], token: str) -> Response:
        row, err = self._survey(environ, token)
        if row is None:
            return err
        locale = self._locale(row, environ.get("HTTP_ACCEPT_LANGUAGE", ""))
        try:
            query = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=20)
        except ValueError:  # a link mangled by a mail client: show the page without a choice
            query = {}
        score = row["score"]
        if query.get("score"):
            try:
                score = parse_score(row["kind"], query["score"][-1])
            except AnswerError:
                score = row["score"]
        return self._survey_page(row, locale, score, row["comment"])

    def survey_post(self, environ: dict[str, Any], token: str) -> Response:
        limited = self._rate_limit(environ, f"s:{token}")
        if limited:
            return limited
        try:
            form = self.read_form(environ)
        except FormError as exc:
            return self.error_page(environ, exc.status, exc.message_key)
        row, err = self._survey(environ, token)
        if row is None:
            return err
        locale = self._locale(row, environ.get("HTTP_ACCEPT_LANGUAGE", ""))
        try:
            score = parse_score(row["kind"], form.get("score"))
        except AnswerError:
            return self._survey_page(
                row, locale, None, form.get("comment"), status=400, error="error_score"
            )
        try:
            outcome = record_answer(
                self.conn(),
                self.config,
                survey_id=row["id"],
                score=score,
                comment=form.get("comment"),
                now=timeutil.now(),
                source="web",
            )
        except NotFoundError:
            return self.error_page(environ, 404, "error_bad_link", locale)
        if outcome.alert_outbox_id:
            self.alerts.notify()
        return self.page(200, "thanks", locale, kind=row["kind"], score=score)

    def _unsub_address(self, token: str) -> tuple[str, str] | None:
        try:
            payload = read_token(self.config, "unsubscribe", token, None)
            return str(payload["a"]), str(payload.get("c") or "email")
        except (TokenError, KeyError, TypeError):
            return None

    def _unsub_locale(self, address: str, accept: str) -> str:
        row = (
            self.conn()
            .execute(
                "SELECT locale FROM customers WHERE email = ? OR phone = ? LIMIT 1",
                (address, address),
            )
            .fetchone()
        )
        return negotiate_locale(
            row["locale"] if row else None,
            accept_language=accept,
            default=self.config.shop.locale,
        )

    def unsub_get(self, environ: dict[str, Any], token: str) -> Response:
        found = self._unsub_address(token)
        if found is None:
            return self.error_page(environ, 404, "error_bad_link")
        address, channel = found
        locale = self._unsub_locale(address, environ.get("HTTP_ACCEPT_LANGUAGE", ""))
        from csops.customers import suppression_scope
        from csops.secrets import mask_email

        done = suppression_scope(self.conn(), address, channel) is not None
        return self.page(200, "unsubscribe", locale, address=mask_email(address), done=done)

    def unsub_post(self, environ: dict[str, Any], token: str) -> Response:
        limited = self._rate_limit(environ, f"u:{token}")
        if limited:
            return limited
        try:
            self.read_form(environ)
        except FormError as exc:
            if exc.status == 413:
                return self.error_page(environ, 413, exc.message_key)
            # An RFC 8058 POST is `List-Unsubscribe=One-Click`; any other body still means "stop".
        found = self._unsub_address(token)
        if found is None:
            return self.error_page(environ, 404, "error_bad_link")
        address, _channel = found
        from csops.customers import opt_out
        from csops.secrets import mask_email

        opt_out(self.conn(), address, scope="marketing", reason="one-click unsubscribe")
        locale = self._unsub_locale(address, environ.get("HTTP_ACCEPT_LANGUAGE", ""))
        return self.page(200, "unsubscribed", locale, address=mask_email(address))

    def _rate_limit(self, environ: dict[str, Any], key: str) -> Response | None:
        client = environ.get("REMOTE_ADDR", "-")
        if not self.client_limiter.allow(f"c:{client}") or not self.token_limiter.allow(key):
            resp = self.error_page(environ, 429, "error_rate")
            resp.headers.append(("Retry-After", "60"))
            return resp
        return None


_FORM_ERROR_KEYS = {400: "error_bad_request", 413: "error_too_large", 415: "error_bad_request"}


class FormError(Exception):
    """A request body we will not read (413) or cannot read (400/415)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
        self.message_key = _FORM_ERROR_KEYS.get(status, "error_bad_request")


def _safe_path(environ: dict[str, Any]) -> str:
    """The path with any token cut, for logs (tokens are bearer secrets)."""
    path = str(environ.get("PATH_INFO", ""))[:200]
    return re.sub(r"^/([su])/.*", r"/\1/…", path)


def make_server(config: Config, host: str = "127.0.0.1", port: int = 8080, **kw: Any) -> Any:
    """A waitress server bound to host:port (port 0: any free port; see ``.effective_port``)."""
    from waitress.server import create_server

    settings: SurveySettings = config.section("surveys")
    app = SurveyApp(config)
    if settings.trusted_proxy:
        kw.setdefault("trusted_proxy", settings.trusted_proxy)
        kw.setdefault("trusted_proxy_headers", {"x-forwarded-for", "x-forwarded-proto"})
        kw.setdefault("trusted_proxy_count", 1)
    server = create_server(
        app,
        host=host,
        port=port,
        threads=settings.threads,
        channel_timeout=settings.channel_timeout_s,
        cleanup_interval=max(1, min(30, settings.channel_timeout_s // 2)),
        # waitress refuses absurd declared bodies (over 1 MiB) itself with 413 before reading
        # them. Smaller oversized bodies are taken in so the client, which is still sending,
        # gets the app's localized 413 page instead of a connection reset.
        max_request_body_size=max(1 << 20, settings.max_body_bytes * 4),
        max_request_header_size=32768,
        expose_tracebacks=False,
        ident="csops",
        clear_untrusted_proxy_headers=True,
        **kw,
    )
    server.csops_app = app  # type: ignore[attr-defined]
    return server


def serve_until(server: Any, stop: threading.Event, tick: float = 0.2) -> None:
    """Run a server made by :func:`make_server` until ``stop`` is set, then close everything.

    For embedding (tests run the server in a thread this way). Everything is closed by the
    thread that ran the loop, after it stopped polling, so no socket is closed under select().
    """
    try:
        while not stop.is_set():
            server.asyncore.loop(timeout=tick, map=server._map, count=1)
    finally:
        server.task_dispatcher.shutdown(timeout=5)
        for channel in list(server._map.values()):
            with contextlib.suppress(OSError):
                channel.close()
        server.csops_app.alerts.stop()

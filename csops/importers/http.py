"""One HTTP client for the API sources: timeouts, bounded retries, Retry-After with a cap.

A ``requests.Session`` with ``timeout=(connect, read)`` on every call and a urllib3 ``Retry``
for 429/5xx on GET that honours ``Retry-After``. A server asking us to wait longer than
``[import] retry_after_cap`` does not put cron to sleep: :class:`RetryLaterError` ends the run
(the cursor of every committed page is already saved) with exit 3 and says when to come back.
Connection failures the status retry cannot see — a reset mid-body, a read timeout, a refused
connection — are retried here with a short backoff, a bounded number of times.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from csops.errors import CsopsError, ExitCode, RemoteError
from csops.importers.settings import ImportSettings

log = logging.getLogger("csops.import.http")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryLaterError(CsopsError):
    """The server asked for a wait longer than the configured cap: stop, come back later."""

    exit_code = ExitCode.PARTIAL
    code = "retry_later"

    def __init__(self, seconds: float, url: str = "") -> None:
        wait = f"{seconds:.0f} s" if math.isfinite(seconds) else "forever"
        super().__init__(f"server asked to retry after {wait} (above the cap)")
        self.seconds = seconds
        self.url = url


class CappedRetry(Retry):
    """urllib3 Retry that refuses to sleep longer than ``cap`` seconds on a Retry-After."""

    cap: float = 60.0

    def new(self, **kw: Any) -> CappedRetry:
        fresh = super().new(**kw)
        fresh.cap = self.cap
        return fresh

    def get_retry_after(self, response: Any) -> float | None:
        header = response.headers.get("Retry-After")
        if header is None:
            return None
        value = parse_retry_after(header)
        if value is None:
            log.warning("unreadable Retry-After %r; backing off instead", header[:40])
            return None
        if value > self.cap:
            raise RetryLaterError(value)
        return value


def parse_retry_after(header: str, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: decimal seconds (Shopify sends ``2.0``) or an HTTP date.

    ``None`` for a value that is neither (or NaN, or negative): the caller backs off instead.
    Infinity stays infinite, i.e. above any cap. urllib3's own parser takes only whole seconds
    and raises on anything else.
    """
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        return max(when.timestamp() - (time.time() if now is None else now), 0.0)
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def retry_when(seconds: float) -> str:
    """``"after 14:05 UTC"`` for a wait, or ``"later"`` when it cannot be put on a clock."""
    try:
        return "after " + time.strftime("%H:%M UTC", time.gmtime(time.time() + seconds))
    except (OverflowError, OSError, ValueError):
        return "later"


class SameOriginSession(requests.Session):
    """A session that follows a redirect only to the same origin (or http → https on it).

    requests drops ``Authorization`` on a redirect to another host but keeps every other
    header, so ``X-Shopify-Access-Token`` would go wherever a ``Location`` points. An API has
    no business sending us to another host: the run stops before that request is made.
    """

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        if self.should_strip_auth(response.request.url, prepared_request.url):
            target = urlsplit(prepared_request.url)
            raise RemoteError(
                f"refused a redirect to another host ({target.scheme}://{target.netloc}); "
                "credentials are only sent to the configured host",
                file=_strip_query(response.request.url),
            )
        super().rebuild_auth(prepared_request, response)


@dataclass
class Client:
    """A configured session plus the retry policy for failures below the HTTP status level."""

    settings: ImportSettings
    session: requests.Session
    requests_made: int = 0
    sleep: Any = time.sleep
    statuses: list[int] = field(default_factory=list)

    def get(self, url: str, params: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
        """GET with retries; returns the final response (any status) or raises RemoteError."""
        attempts = self.settings.max_retries + 1
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                self.requests_made += 1
                resp = self.session.get(
                    url,
                    params=params,
                    timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                    **kw,
                )
                _ = resp.content  # read the whole body now: a reset mid-body is retried here
                self.statuses.append(resp.status_code)
                return resp
            except RetryLaterError as exc:
                exc.url = url
                raise
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                last = exc
                if attempt + 1 < attempts:
                    wait = min(0.2 * 2**attempt, 5.0)
                    log.warning(
                        "request failed (%s); retry %d/%d in %.1f s",
                        type(exc).__name__,
                        attempt + 1,
                        attempts - 1,
                        wait,
                    )
                    self.sleep(wait)
        raise RemoteError(
            f"no answer after {attempts} attempts: {type(last).__name__}",
            file=_strip_query(url),
        )


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


def make_client(settings: ImportSettings, headers: dict[str, str] | None = None) -> Client:
    retry = CappedRetry(
        total=None,
        connect=0,
        read=0,
        other=0,
        redirect=3,
        status=settings.max_retries,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=0.5,
        backoff_max=30,
        raise_on_status=False,
        respect_retry_after_header=True,
        retry_after_max=10**9,  # see the real value; the cap below decides
    )
    retry.cap = settings.retry_after_cap
    session = SameOriginSession()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=1)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": "csops-import", "Accept": "application/json"})
    if headers:
        session.headers.update(headers)
    return Client(settings=settings, session=session)


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` URL of an RFC 8288 ``Link`` header (Shopify, WordPress)."""
    if not header:
        return None
    for part in header.split(","):
        section = part.strip().split(";")
        if len(section) < 2:
            continue
        url = section[0].strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for param in section[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "rel" and "next" in value.strip().strip('"').split():
                return url[1:-1]
    return None


@dataclass
class SyncOutcome:
    """What an API sync reports back: pages read, where the watermark stands, if it stopped."""

    pages: int = 0
    watermark: str | None = None
    partial: bool = False
    messages: list[str] = field(default_factory=list)
    rejects: list[Any] = field(default_factory=list)  # csops.result.Reject


@dataclass(frozen=True)
class ApiSource:
    """An API importer: ``sync(ctx, store, settings, since) -> SyncOutcome``."""

    name: str
    sync: Any

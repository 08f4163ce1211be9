"""Render message templates in Jinja2's sandbox: subject, plain text and HTML per locale.

Layout (under ``[paths] templates``, falling back to the packaged defaults)::

    messages/<name>/<locale>.subject.txt   one line (CR/LF are folded to spaces)
    messages/<name>/<locale>.txt           the plain-text part (required)
    messages/<name>/<locale>.html          the HTML part (optional, autoescaped)
    messages/<name>/sample.json            optional variables for ``templates check``

Templates run in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: a missing
variable is an error at check time, never a blank in a customer's inbox, and attribute tricks
raise ``SecurityError``. Data is passed as values, never compiled, so ``{{ 7*7 }}`` in a
customer's name stays literal. Output is capped in size and time.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from csops.errors import CsopsError

LOCALES = ("en", "zh-CN")
PARTS = ("subject.txt", "txt", "html")


class TemplateError(CsopsError):
    """A template is missing, does not compile, or failed to render (with file and line)."""

    code = "template_error"


@dataclass
class Rendered:
    subject: str
    text: str
    html: str | None
    locale: str


def pick_locale(customer_locale: str | None, config: Any) -> str:
    """The customer's locale if we have templates for it, then the shop default, then ``en``."""
    for cand in (customer_locale, getattr(config.shop, "locale", None)):
        if not cand:
            continue
        norm = cand.replace("_", "-")
        for loc in LOCALES:
            if norm.lower().split("-")[0] == loc.lower().split("-")[0]:
                return loc
    return "en"


def template_dirs(config: Any) -> list[Path]:
    """The workspace templates folder first, then the packaged defaults."""
    if config is not None and getattr(config, "path", None) is not None:
        return list(_workspace_dirs(str(config.root), config.paths.templates))
    return list(_dirs(None))


@lru_cache(maxsize=32)
def _workspace_dirs(root: str, templates: str) -> tuple[Path, ...]:
    p = Path(templates).expanduser()
    return _dirs(str(p if p.is_absolute() else (Path(root) / p).resolve()))


@lru_cache(maxsize=32)
def _dirs(workspace: str | None) -> tuple[Path, ...]:
    dirs = [Path(workspace)] if workspace else []
    packaged = Path(str(resources.files("csops.templates")))
    return tuple(dirs + ([packaged] if packaged not in dirs else []))


def _money(minor: Any, currency: str) -> str:
    from csops.model import format_money

    if minor is None:
        return ""
    return format_money(int(minor), str(currency))


def _to_local(value: Any, tz: str) -> datetime | date | None:
    from csops.timeutil import parse_instant

    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.astimezone(ZoneInfo(tz))
    if isinstance(value, date):
        return value
    text = str(value)
    if len(text) == 10:
        return date.fromisoformat(text)
    return parse_instant(text).astimezone(ZoneInfo(tz))


_DICT_ATTRIBUTES = frozenset(dir(dict))


@lru_cache(maxsize=16)
def _environment(dirs: tuple[str, ...], tz: str):
    from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, pass_context
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def autoescape(name: str | None) -> bool:
        return bool(name and name.endswith(".html"))

    class Sandbox(ImmutableSandboxedEnvironment):
        """No ``str.format``/``format_map`` at all: the classic sandbox-escape door."""

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            if isinstance(obj, str) and attr in ("format", "format_map"):
                return False
            return super().is_safe_attribute(obj, attr, value)

        def getattr(self, obj: Any, attribute: str) -> Any:
            # Fast path for the context's plain dicts: ``order.number`` where ``number`` is
            # not a dict attribute is the item (what Jinja finds after getattr() fails, minus
            # raising and catching that AttributeError ~24 times a message).
            if type(obj) is dict and attribute not in _DICT_ATTRIBUTES and attribute in obj:
                return obj[attribute]
            if isinstance(obj, str) and attribute in ("format", "format_map"):
                return self.unsafe_undefined(obj, attribute)
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            if isinstance(obj, str) and argument in ("format", "format_map"):
                return self.unsafe_undefined(obj, str(argument))
            return super().getitem(obj, argument)

    env = Sandbox(
        loader=ChoiceLoader([FileSystemLoader(d) for d in dirs]),
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        auto_reload=False,
    )

    @pass_context
    def localdate(ctx, value: Any) -> str:
        d = _to_local(value, tz)
        if d is None:
            return ""
        d = d.date() if isinstance(d, datetime) else d
        if ctx.get("locale") == "zh-CN":
            return f"{d.year}年{d.month}月{d.day}日"
        return d.strftime("%d %b %Y").lstrip("0")

    @pass_context
    def localdatetime(ctx, value: Any) -> str:
        d = _to_local(value, tz)
        if d is None:
            return ""
        if not isinstance(d, datetime):
            return localdate(ctx, d)
        if ctx.get("locale") == "zh-CN":
            return f"{d.year}年{d.month}月{d.day}日 {d:%H:%M}"
        return d.strftime("%d %b %Y %H:%M").lstrip("0")

    env.filters["money"] = _money
    env.filters["localdate"] = localdate
    env.filters["localdatetime"] = localdatetime
    return env


def environment(config: Any):
    tz = config.shop.timezone if config is not None else "UTC"
    return _environment(tuple(str(d) for d in template_dirs(config)), tz)


def template_names(config: Any) -> list[str]:
    """Every message template name found in any templates folder."""
    names: set[str] = set()
    for d in template_dirs(config):
        base = d / "messages"
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if p.is_dir() and p.name[0] not in "._")
    return sorted(names)


@lru_cache(maxsize=256)
def _parts(dirs: tuple[Path, ...], name: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """(locales with a text part, locales with an HTML part) of one template, cached for a
    run: a render must not stat the template folders for every message."""
    text = [loc for loc in LOCALES if any((d / "messages" / name / f"{loc}.txt").is_file()
                                          for d in dirs)]  # fmt: skip
    html = {loc for loc in LOCALES if any((d / "messages" / name / f"{loc}.html").is_file()
                                          for d in dirs)}  # fmt: skip
    return tuple(text), frozenset(html)


def template_locales(config: Any, name: str) -> list[str]:
    found = set()
    for d in template_dirs(config):
        for loc in LOCALES:
            if (d / "messages" / name / f"{loc}.txt").is_file():
                found.add(loc)
    return [loc for loc in LOCALES if loc in found]


class _Deadline:
    """Stop a runaway render (a loop with no output) after ``seconds`` (main thread only)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False

    def __enter__(self) -> _Deadline:
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGALRM, self._fire)
                signal.setitimer(signal.ITIMER_REAL, self.seconds)
                self.armed = True
            except (ValueError, AttributeError, OSError):
                self.armed = False
        return self

    def _fire(self, signum, frame) -> None:
        raise TemplateError(f"render took longer than {self.seconds:g} s")

    def __exit__(self, *exc) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def _render_one(env, path: str, context: dict, max_bytes: int, deadline: float) -> str:
    from jinja2 import TemplateError as JinjaError
    from jinja2 import TemplateNotFound, TemplateSyntaxError

    try:
        template = env.get_template(path)
        out: list[str] = []
        append = out.append
        size = 0
        countdown = 1
        for chunk in template.generate(context):
            size += len(chunk)
            if size > max_bytes:
                raise TemplateError(f"{path}: output larger than {max_bytes} bytes")
            countdown -= 1
            if not countdown:  # the clock every 64 chunks (the only cap outside the main thread)
                if time.monotonic() > deadline:
                    raise TemplateError(f"{path}: render took too long")
                countdown = 64
            append(chunk)
        return "".join(out)
    except TemplateNotFound as exc:
        raise TemplateError(f"template not found: {exc.name}", file=path) from None
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"syntax error: {exc.message}", file=exc.filename or path, line=exc.lineno
        ) from None
    except JinjaError as exc:
        raise TemplateError(
            f"{type(exc).__name__}: {exc}", file=path, line=_jinja_line(exc)
        ) from None
    except TemplateError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, ZeroDivisionError) as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}", file=path) from None


def _jinja_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith((".txt", ".html")):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_safe(value: str) -> str:
    """One header line: CR, LF and other control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


_SETUP: dict[int, tuple[Any, tuple]] = {}


def _setup(config: Any) -> tuple[Any, int, float, tuple[Path, ...]]:
    """(environment, max bytes, max seconds, template folders) of a config, worked out once:
    planning renders thousands of messages with the same config."""
    cached = _SETUP.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    settings = config.section("messaging") if config is not None else None
    setup = (
        environment(config),
        settings.max_render_bytes if settings else 1_000_000,
        settings.max_render_seconds if settings else 2.0,
        tuple(template_dirs(config)),
    )
    if len(_SETUP) > 16:
        _SETUP.clear()
    _SETUP[id(config)] = (config, setup)  # the config is kept alive, so its id stays its own
    return setup


def render_message(config: Any, name: str, locale: str, context: dict) -> Rendered:
    """Render ``messages/<name>/<locale>.*``; raises TemplateError (file, line) on any error."""
    env, max_bytes, seconds, dirs = _setup(config)
    locales, html_locales = _parts(dirs, name)
    if not locales:
        raise TemplateError(f"no message template named {name!r}", expected="templates list")
    if locale not in locales:
        locale = "en" if "en" in locales else locales[0]
    ctx = {**context, "locale": locale}
    base = f"messages/{name}/{locale}"
    deadline = time.monotonic() + seconds
    with _Deadline(seconds):
        subject = _render_one(env, f"{base}.subject.txt", ctx, max_bytes, deadline)
        text = _render_one(env, f"{base}.txt", ctx, max_bytes, deadline)
        html = None
        if locale in html_locales:
            html = _render_one(env, f"{base}.html", ctx, max_bytes, deadline)
    return Rendered(subject=header_safe(subject), text=text, html=html, locale=locale)


def sample_context(config: Any, name: str | None = None) -> dict[str, Any]:
    """Sample data for ``templates check``/``render`` without a database (plus sample.json)."""
    shop = config.shop
    ctx: dict[str, Any] = {
        "shop": {
            "name": shop.name,
            "email": shop.email,
            "base_url": shop.base_url,
            "currency": shop.currency,
        },
        "customer": {
            "id": 1,
            "name": "Sample Customer",
            "first_name": "Sample",
            "email": "customer@example.com",
            "phone": "+8613800138000",
            "locale": shop.locale,
            "birthday": "1990-04-20",
        },
        "order": {
            "id": 1,
            "number": "#1001",
            "platform": "shopify",
            "status": "delivered",
            "currency": shop.currency,
            "total_minor": 12990,
            "subtotal_minor": 11990,
            "shipping_minor": 1000,
            "discount_minor": 0,
            "refunded_minor": 0,
            "created_at": "2024-04-10T08:00:00Z",
            "paid_at": "2024-04-10T08:01:00Z",
            "shipped_at": "2024-04-12T03:00:00Z",
            "delivered_at": "2024-04-15T09:30:00Z",
            "cancelled_at": None,
            "refunded_at": None,
            "tracking_url": "",
        },
        "items": [
            {
                "sku": "SKU-1",
                "name": "Sample item",
                "quantity": 1,
                "unit_price_minor": 11990,
                "total_minor": 11990,
            },
        ],
        "rule": {"name": "sample", "trigger": "delivered"},
        "vars": {"coupon_code": "SAMPLE10", "review_url": f"{shop.base_url}/review"},
        "unsubscribe_url": f"{shop.base_url.rstrip('/')}/u/sample-token",
        "now": "2024-04-20T02:00:00Z",
    }
    if name:
        for d in reversed(template_dirs(config)):
            sample = d / "messages" / name / "sample.json"
            if sample.is_file():
                try:
                    extra = json.loads(sample.read_text(encoding="utf-8"))
                except ValueError as exc:
                    raise TemplateError(
                        f"sample.json is not JSON: {exc}", file=str(sample)
                    ) from None
                _deep_merge(ctx, extra)
    return ctx


def _deep_merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


def check_templates(config: Any, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Render every template in every locale against sample data; the list of problems."""
    problems = []
    for name in names or template_names(config):
        locales = template_locales(config, name)
        if not locales:
            problems.append({"template": name, "locale": "", "error": "no <locale>.txt part"})
            continue
        for loc in locales:
            try:
                render_message(config, name, loc, sample_context(config, name))
            except TemplateError as exc:
                problems.append({"template": name, "locale": loc, "error": str(exc)})
    return problems


def list_templates(config: Any) -> list[dict[str, Any]]:
    """Name, locales, parts, where it comes from, and which rules use it."""
    rules = config.section("followups")
    out = []
    dirs = template_dirs(config)
    for name in template_names(config):
        parts: set[str] = set()
        source = ""
        for d in dirs:
            folder = d / "messages" / name
            if folder.is_dir():
                source = source or ("workspace" if d == dirs[0] and len(dirs) > 1 else "packaged")
                for loc in LOCALES:
                    parts.update(p for p in PARTS if (folder / f"{loc}.{p}").is_file())
        out.append(
            {
                "name": name,
                "locales": ",".join(template_locales(config, name)),
                "parts": ",".join(p for p in PARTS if p in parts),
                "source": source,
                "rules": ",".join(r.name for r in rules if r.template == name),
            }
        )
    return out


def render_preview(
    config: Any,
    name: str,
    *,
    order_id: int | None = None,
    customer_id: int | None = None,
    locale: str | None = None,
    rule: str | None = None,
) -> Rendered:
    """Render NAME for a real order/customer from the database (or sample data); no writes."""
    from types import SimpleNamespace

    from csops import db as dbmod
    from csops.errors import NotFoundError
    from csops.messaging.rules import _context
    from csops.timeutil import now

    if name not in template_names(config):
        raise NotFoundError(f"no message template named {name!r}", expected="templates list")
    rules = config.section("followups")
    chosen = next((r for r in rules if (r.name == rule if rule else r.template == name)), None)
    fake_rule = chosen or SimpleNamespace(
        name="preview", trigger="delivered", variables={}, marketing=False
    )
    if order_id is None and customer_id is None:
        ctx = sample_context(config, name)
        if chosen is not None:
            ctx["vars"] = {**ctx["vars"], **dict(chosen.variables)}
        return render_message(config, name, locale or pick_locale(None, config), ctx)
    conn = dbmod.connect(config.db_path, readonly=True) if config.db_path.exists() else None
    if conn is None:
        raise NotFoundError("no database yet", file=str(config.db_path))
    try:
        order = None
        if order_id is not None:
            order = conn.execute(
                "SELECT o.*, (SELECT MAX(decided_at) FROM return_lines r WHERE r.order_id = o.id)"
                " AS return_decided_at FROM orders o WHERE o.id = ? OR o.number = ? "
                "OR o.number = ? ORDER BY o.id = ? DESC LIMIT 1",
                (order_id, str(order_id), f"#{order_id}", order_id),
            ).fetchone()
            if order is None:
                raise NotFoundError(f"no order {order_id}", field="--order")
            customer_id = customer_id or order["customer_id"]
        customer = None
        if customer_id is not None:
            customer = conn.execute(
                "SELECT * FROM customers WHERE id = ?", (customer_id,)
            ).fetchone()
            if customer is None and order is None:
                raise NotFoundError(f"no customer {customer_id}", field="--customer")
        recipient = (order["email"] if order is not None else None) or (
            customer["email"] if customer is not None else ""
        )
        ctx = _context(conn, config, fake_rule, order, customer, recipient or "", now())
        cust_locale = customer["locale"] if customer is not None else None
        return render_message(config, name, locale or pick_locale(cust_locale, config), ctx)
    finally:
        conn.close()

"""Find, load and validate the TOML configuration into frozen dataclasses.

Lookup order: ``--config``, then ``CSOPS_CONFIG``, then ``./config/csops.toml``. Paths inside the
file are relative to the file. Secrets are never in the file: keys ending in ``_env`` name the
environment variable that holds them, read only when used (:meth:`Config.secret`).

Each top-level section is validated by a dataclass registered in :data:`SECTIONS` as an import
path, so a job owns its own settings module and the validator here stays generic: an unknown key
or a wrong type is a :class:`ConfigError` naming the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from csops.errors import ConfigError, SecretMissingError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_RELPATH = Path("config") / "csops.toml"

# Keys that would hold a secret value directly; the file must name an env var instead (`*_env`).
SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "secret",
        "api_key",
        "key",
        "consumer_key",
        "consumer_secret",
        "auth_header",
        "authorization",
        "hmac_key",
        "signing_key",
    }
)


@dataclass(frozen=True)
class ShopSettings:
    """Who the shop is: its name, timezone (what a "day" is), locale and sender address."""

    name: str = "My Shop"
    timezone: str = "UTC"
    locale: str = "en"
    currency: str = "USD"
    email: str = "service@example.com"
    base_url: str = "http://127.0.0.1:8080"
    # Env var holding the link-signing keys (comma-separated, newest first, for rotation).
    signing_keys_env: str = "CSOPS_SIGNING_KEYS"

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown timezone {self.timezone!r}", "an IANA name like 'Asia/Shanghai'"
            ) from exc
        if self.locale not in ("en", "zh-CN"):
            raise ValueError(f"unsupported locale {self.locale!r}", "'en' or 'zh-CN'")
        from csops.model import valid_currency

        if not valid_currency(self.currency):
            raise ValueError(f"unknown currency {self.currency!r}", "an ISO 4217 code like 'CNY'")


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the SQLite file lives and how hard it syncs."""

    path: str = "../data/csops.db"
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_ms: int = 30000


@dataclass(frozen=True)
class PathSettings:
    """Folders csops writes to; relative paths are relative to the config file."""

    templates: str = "../templates"
    outbox_dir: str = "../outbox"
    rejects_dir: str = "../rejects"
    reports_dir: str = "../reports"
    exports_dir: str = "../exports"
    # Empty: a folder beside the database, so every config pointing at one database shares locks.
    lock_dir: str = ""
    log_file: str = ""


# section name -> "module:Class" (a table), "[]module:Class" (array of tables) or
# "{}module:Class" (a table of named tables). Imported only when the section is validated.
SECTIONS: dict[str, str] = {
    "shop": "csops.config:ShopSettings",
    "database": "csops.config:DatabaseSettings",
    "paths": "csops.config:PathSettings",
    "import": "csops.importers.settings:ImportSettings",
    "channels": "{}csops.messaging.settings:ChannelSettings",
    "messaging": "csops.messaging.settings:MessagingSettings",
    "followups": "[]csops.messaging.settings:FollowupRule",
    "surveys": "csops.surveys.settings:SurveySettings",
    "returns": "csops.returns.settings:ReturnPolicy",
    "kpi": "csops.kpi.settings:KpiSettings",
    "alerts": "csops.kpi.settings:AlertSettings",
    "schedule": "csops.scheduler:ScheduleSettings",
    "retention": "csops.retention:RetentionSettings",
}


@dataclass(frozen=True)
class Config:
    """The validated configuration. ``sections`` holds every section's object by name."""

    path: Path | None
    sections: Mapping[str, Any] = field(default_factory=dict)
    db_override: Path | None = None

    @property
    def root(self) -> Path:
        """The folder relative paths are resolved against (the config file's folder)."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def shop(self) -> ShopSettings:
        return self.section("shop")

    @property
    def database(self) -> DatabaseSettings:
        return self.section("database")

    @property
    def paths(self) -> PathSettings:
        return self.section("paths")

    @property
    def db_path(self) -> Path:
        return self.db_override or self.resolve(self.database.path)

    @property
    def lock_dir(self) -> Path:
        if self.paths.lock_dir:
            return self.resolve(self.paths.lock_dir)
        return self.db_path.parent / ".csops-locks"

    def section(self, name: str) -> Any:
        """The validated object of a section, or its defaults when the file has none."""
        if name in self.sections:
            return self.sections[name]
        return default_section(name)

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.root / p).resolve()

    def secret(self, env_name: str, *, key: str = "") -> str:
        """Read a secret from the environment variable the config names; never log the value."""
        if not env_name:
            raise ConfigError(
                f"no environment variable named for {key or 'a secret'}",
                file=str(self.path),
                field=key,
                expected="an '*_env' key naming a variable",
            )
        value = os.environ.get(env_name)
        if not value:
            raise SecretMissingError(
                f"environment variable {env_name} is not set", field=key or None
            )
        return value


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use, by flag, then ``CSOPS_CONFIG``, then ``./config/csops.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CSOPS_CONFIG")
    if env:
        return Path(env)
    default = Path.cwd() / DEFAULT_CONFIG_RELPATH
    return default if default.exists() else None


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    db_override: str | os.PathLike[str] | None = None,
    required: bool = True,
) -> Config:
    """Load and validate the config; without a file, defaults (only when not ``required``)."""
    path = find_config_path(explicit)
    db_path = Path(db_override).resolve() if db_override else None
    if path is None:
        if required:
            raise ConfigError(
                "no configuration found (looked for --config, $CSOPS_CONFIG, "
                f"./{DEFAULT_CONFIG_RELPATH})",
                expected="a workspace made by 'csops init DIR'",
            )
        return Config(path=None, db_override=db_path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=str(path)) from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from None
    return Config(path=path.resolve(), sections=parse_sections(raw, str(path)), db_override=db_path)


def parse_sections(raw: Mapping[str, Any], file: str) -> dict[str, Any]:
    """Validate every top-level section of a parsed TOML document."""
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"unknown section [{name}]",
                file=file,
                field=name,
                expected="one of " + ", ".join(sorted(SECTIONS)),
            )
        sections[name] = parse_section(name, value, file)
    return sections


def _section_target(name: str) -> tuple[str, type | None]:
    spec = SECTIONS[name]
    shape = ""
    if spec[:2] in ("[]", "{}"):
        shape, spec = spec[:2], spec[2:]
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return shape, None  # the job owning this section is not installed yet
    return shape, getattr(module, attr)


def parse_section(name: str, value: Any, file: str) -> Any:
    shape, cls = _section_target(name)
    if cls is None:
        return value
    if shape == "[]":
        if not isinstance(value, list):
            raise ConfigError(
                "wrong type", file=file, field=name, expected=f"an array of tables [[{name}]]"
            )
        return tuple(build(cls, item, file, f"{name}[{i}]") for i, item in enumerate(value))
    if shape == "{}":
        if not isinstance(value, dict):
            raise ConfigError("wrong type", file=file, field=name, expected="a table of tables")
        return {k: build(cls, v, file, f"{name}.{k}") for k, v in value.items()}
    return build(cls, value, file, name)


def default_section(name: str) -> Any:
    shape, cls = _section_target(name)
    if shape == "[]":
        return ()
    if shape == "{}" or cls is None:
        return {}
    return cls()


def build(cls: type, value: Any, file: str, where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking every key and type."""
    if not isinstance(value, dict):
        raise ConfigError("wrong type", file=file, field=where, expected="a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            if key in SECRET_KEYS:
                raise ConfigError(
                    "secrets must not be written in the config file",
                    file=file,
                    field=f"{where}.{key}",
                    expected=f"'{key}_env' naming an environment variable",
                )
            raise ConfigError(
                "unknown key",
                file=file,
                field=f"{where}.{key}",
                expected="one of " + ", ".join(sorted(fields)),
            )
        kwargs[key] = coerce(hints[key], item, file, f"{where}.{key}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError("missing key", file=file, field=f"{where}.{missing[0]}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message, *rest = exc.args or ("invalid value",)
        raise ConfigError(
            str(message), file=file, field=where, expected=rest[0] if rest else None
        ) from None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce(tp: Any, value: Any, file: str, where: str) -> Any:
    """Check ``value`` against type hint ``tp``; return it in the dataclass's shape."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, file, where)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(
            "wrong type",
            file=file,
            field=where,
            expected=" or ".join(_type_name(a) for a in args if a is not type(None)),
        )
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(
            f"invalid value {value!r}", file=file, field=where, expected=_type_name(tp)
        )
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError("wrong type", file=file, field=where, expected=_type_name(tp))
        (item_tp, *_rest) = get_args(tp)
        return tuple(coerce(item_tp, v, file, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError("wrong type", file=file, field=where, expected="a table")
        _key_tp, val_tp = get_args(tp)
        return {k: coerce(val_tp, v, file, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, file, where)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError("wrong type", file=file, field=where, expected="an integer")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError("wrong type", file=file, field=where, expected=_type_name(tp))

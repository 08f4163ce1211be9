"""Logging to stderr for people (text) or machines (``--log-format json``), secrets redacted.

Every record carries the job and run id once a run has started, so a log collector can group
and alert on them. Customer addresses are masked unless ``-v`` is given.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from csops.secrets import mask_email, redact

LOGGER_NAME = "csops"
_context: dict[str, Any] = {}
_mask = True


def set_context(**values: Any) -> None:
    _context.update({k: v for k, v in values.items() if v is not None})


def clear_context() -> None:
    _context.clear()


def _clean(text: str) -> str:
    text = redact(text)
    return mask_email(text) if _mask else text


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"[{record.job}] " if getattr(record, "job", None) else ""
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"{prefix}{level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return _clean(text)


class JsonFormatter(logging.Formatter):
    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._standard and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return _clean(json.dumps(payload, ensure_ascii=False, default=str))


def configure(*, verbose: int = 0, quiet: bool = False, fmt: str = "text") -> logging.Logger:
    """Set up the ``csops`` logger on stderr; idempotent (tests invoke the CLI many times)."""
    global _mask
    _mask = verbose == 0
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    logger.addHandler(handler)
    logger.propagate = False
    if quiet:
        logger.setLevel(logging.WARNING)
    elif verbose:
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.INFO)
    return logger


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)

"""Survey links: a signed token per survey, and the scale as one link per score.

The token carries only the survey id and its kind, signed (HMAC) with the ``survey`` salt of
:mod:`csops.tokens`; the score travels in the query string and is only a preselection, so a
link never records anything by itself. Expiry is checked with csops' clock (``CSOPS_NOW``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from csops.config import Config
from csops.surveys.settings import SCALES, SurveySettings
from csops.tokens import TokenError, make_token, read_token


@dataclass(frozen=True)
class SurveyRef:
    survey_id: int
    kind: str


def survey_token(config: Config, survey_id: int, kind: str) -> str:
    return make_token(config, "survey", {"s": int(survey_id), "k": kind})


def read_survey_token(config: Config, token: str) -> SurveyRef:
    """The survey a token points at; TokenError when forged, for another purpose, or expired."""
    settings: SurveySettings = config.section("surveys")
    payload = read_token(config, "survey", token, int(settings.token_max_age.total_seconds()))
    return _ref(payload)


def _ref(payload: Any) -> SurveyRef:
    try:
        survey_id, kind = int(payload["s"]), str(payload["k"])
    except (TypeError, KeyError, ValueError):
        raise TokenError("this link is not valid") from None
    if kind not in SCALES:
        raise TokenError("this link is not valid")
    return SurveyRef(survey_id, kind)


def expired_ref(exc: TokenError) -> SurveyRef | None:
    """For an authentic but expired token, the survey it was for (to answer in its language)."""
    if not exc.expired or exc.payload is None:
        return None
    try:
        return _ref(exc.payload)
    except TokenError:
        return None


def survey_url(config: Config, token: str, score: int | None = None) -> str:
    base = f"{config.shop.base_url.rstrip('/')}/s/{token}"
    return f"{base}?{urlencode({'score': score})}" if score is not None else base


def scale_links(config: Config, token: str, kind: str) -> list[dict[str, Any]]:
    """One link per score of the kind's scale (CSAT 1–5, NPS 0–10), lowest first."""
    low, high = SCALES[kind]
    return [{"score": n, "url": survey_url(config, token, n)} for n in range(low, high + 1)]

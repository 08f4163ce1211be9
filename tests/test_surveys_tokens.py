"""Tokens at AT-27's counts: forged, swapped, cross-purpose, rotated, expired."""

from __future__ import annotations

import itertools
import random

import pytest

from csops.config import load_config
from csops.surveys.links import expired_ref, read_survey_token, survey_token
from csops.tokens import TokenError, make_token, read_token
from tests.surveys_helpers import OLD_KEY, SIGNING_KEY, SURVEY_CONFIG

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def config(workspace, monkeypatch):
    workspace.set_config(SURVEY_CONFIG)
    monkeypatch.setenv("CSOPS_TESTING", "1")
    monkeypatch.setenv("CSOPS_NOW", "2024-04-20T02:00:00Z")
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", f"{SIGNING_KEY},{OLD_KEY}")
    return load_config(workspace.config)


def _mutate(token: str, rng: random.Random, part: int) -> str:
    pieces = token.split(".")
    piece = pieces[part]
    i = rng.randrange(len(piece))
    pieces[part] = piece[:i] + rng.choice(ALPHABET.replace(piece[i], "")) + piece[i + 1 :]
    return ".".join(pieces)


def test_a_thousand_tokens_verify_and_every_single_character_change_is_refused(config, scale):
    rng = random.Random(5)
    n = 1000 * scale
    tokens = [survey_token(config, i, "csat" if i % 2 else "nps") for i in range(1, n + 1)]
    assert len(set(tokens)) == n
    for i, token in enumerate(tokens, 1):
        ref = read_survey_token(config, token)
        assert (ref.survey_id, ref.kind) == (i, "csat" if i % 2 else "nps")
    accepted = []
    for token in tokens:
        for part in (0, 2):  # payload, signature
            forged = _mutate(token, rng, part)
            try:
                read_survey_token(config, forged)
                accepted.append(forged)
            except TokenError:
                pass
    # A change in the last base64 character may only touch padding bits of the signature.
    for forged in accepted:
        assert forged.split(".")[2][:-1] in {t.split(".")[2][:-1] for t in tokens}
    assert len(accepted) <= n // 50


def test_swapped_payloads_and_cross_purpose_tokens_are_refused(config):
    tokens = [survey_token(config, i, "csat") for i in range(1, 201)]
    unsub = [
        make_token(config, "unsubscribe", {"a": f"c{i}@example.com", "c": "email"})
        for i in range(100)
    ]
    for a, b in itertools.pairwise(tokens):
        swapped = b.split(".")[0] + "." + ".".join(a.split(".")[1:])
        with pytest.raises(TokenError):
            read_survey_token(config, swapped)
    for u in unsub:
        with pytest.raises(TokenError):
            read_survey_token(config, u)
    for t in tokens[:100]:
        with pytest.raises(TokenError):
            read_token(config, "unsubscribe", t, None)
    same_payload = make_token(config, "unsubscribe", {"s": 1, "k": "csat"})
    with pytest.raises(TokenError):
        read_survey_token(config, same_payload)


def test_old_key_tokens_verify_while_listed_and_new_tokens_use_the_first_key(config, monkeypatch):
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", OLD_KEY)
    old = [survey_token(config, i, "csat") for i in range(1, 51)]
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", f"{SIGNING_KEY},{OLD_KEY}")
    new = [survey_token(config, i, "csat") for i in range(1, 51)]
    assert all(read_survey_token(config, t).survey_id == i for i, t in enumerate(old, 1))
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", SIGNING_KEY)  # old retired
    assert all(read_survey_token(config, t).survey_id == i for i, t in enumerate(new, 1))
    for t in old:
        with pytest.raises(TokenError):
            read_survey_token(config, t)


def test_tokens_expire_one_second_after_max_age_on_the_injected_clock(config, monkeypatch):
    tokens = [survey_token(config, i, "nps") for i in range(1, 101)]
    monkeypatch.setenv("CSOPS_NOW", "2024-05-20T02:00:00Z")  # 30 days: still valid
    assert all(read_survey_token(config, t) for t in tokens)
    monkeypatch.setenv("CSOPS_NOW", "2024-05-20T02:00:01Z")
    for i, t in enumerate(tokens, 1):
        with pytest.raises(TokenError) as info:
            read_survey_token(config, t)
        assert info.value.expired
        ref = expired_ref(info.value)
        assert ref is not None and (ref.survey_id, ref.kind) == (i, "nps")
    monkeypatch.setenv("CSOPS_NOW", "2024-04-19T02:00:00Z")  # signed in the future: refused
    with pytest.raises(TokenError):
        read_survey_token(config, tokens[0])

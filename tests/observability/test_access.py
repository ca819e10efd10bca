"""The dashboard's access rules (guild.observability._access), as pure functions.

Expected verdicts are written out from the rules in the module's docstring, or
follow from a property that holds whatever the request says.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from guild import ConfigError
from guild.config import load_config
from guild.config._effective import effective
from guild.observability._access import (
    Access,
    Admit,
    Asked,
    Kind,
    Refuse,
    StartSession,
    host_name,
    is_loopback,
    judge,
    parse_cookies,
    redact,
    session_value,
    valid_session,
)
from guild.observability._dashboard import ActionError, action_ids, circuit

TOKEN = "s3cret"
OPEN = Access(token=None, loopback=True)
LOCKED = Access(token=TOKEN, loopback=False)


def ask(
    kind: Kind = Kind.PAGE,
    *,
    host: str = "127.0.0.1:8000",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    query_token: str | None = None,
) -> Asked:
    return Asked(
        kind=kind,
        scheme="http",
        headers={"host": host, **(headers or {})},
        cookies=cookies or {},
        query_token=query_token,
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("app.localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8000", "127.0.0.1"), ("[::1]:80", "::1"), ("a.example", "a.example"), ("", "")],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


class TestLoopback:
    def test_pages_and_events_need_nothing(self) -> None:
        assert judge(OPEN, ask()) == Admit()
        assert judge(OPEN, ask(Kind.EVENTS, host="localhost:8000")) == Admit()

    def test_a_foreign_host_is_refused(self) -> None:
        verdict = judge(OPEN, ask(host="evil.example:8000"))
        assert isinstance(verdict, Refuse) and verdict.status == 403

    def test_actions_need_the_header_to_equal_the_cookie(self) -> None:
        def act(header: str | None, cookie: str | None) -> int | None:
            verdict = judge(
                OPEN,
                ask(
                    Kind.ACTION,
                    headers={} if header is None else {"x-guild-csrf": header},
                    cookies={} if cookie is None else {"guild_csrf": cookie},
                ),
            )
            return verdict.status if isinstance(verdict, Refuse) else None

        assert act("abc", "abc") is None
        assert act(None, "abc") == 403
        assert act("abc", None) == 403
        assert act("abd", "abc") == 403
        assert act("", "") == 403

    def test_a_cross_site_action_is_refused_even_with_the_csrf_pair(self) -> None:
        pair = {"headers": {"x-guild-csrf": "k"}, "cookies": {"guild_csrf": "k"}}
        for extra in (
            {"origin": "https://evil.example"},
            {"origin": "http://127.0.0.1:9999"},
            {"sec-fetch-site": "cross-site"},
            {"sec-fetch-site": "same-site"},
        ):
            asked = ask(Kind.ACTION, headers={**pair["headers"], **extra}, cookies=pair["cookies"])
            assert isinstance(judge(OPEN, asked), Refuse), extra
        for own in ("http://127.0.0.1:8000", "https://127.0.0.1:8000"):  # https: a TLS proxy
            same = ask(
                Kind.ACTION, headers={**pair["headers"], "origin": own}, cookies=pair["cookies"]
            )
            assert judge(OPEN, same) == Admit()


class TestNonLoopback:
    def test_without_a_token_configured_everything_is_refused(self) -> None:
        bare = Access(token=None, loopback=False)
        for kind in Kind:
            verdict = judge(bare, ask(kind, headers={"authorization": "Bearer anything"}))
            assert isinstance(verdict, Refuse) and verdict.status == 403
            assert "GUILD_HTTP_TOKEN" in verdict.reason

    def test_the_bearer_token_admits_every_kind(self) -> None:
        for kind in Kind:
            asked = ask(kind, host="example.com", headers={"authorization": f"Bearer {TOKEN}"})
            assert judge(LOCKED, asked) == Admit()

    def test_the_query_token_starts_a_session_on_pages_only(self) -> None:
        verdict = judge(LOCKED, ask(query_token=TOKEN))
        assert isinstance(verdict, StartSession)
        assert valid_session(TOKEN, verdict.cookie)
        assert isinstance(judge(LOCKED, ask(Kind.EVENTS, query_token=TOKEN)), Refuse)
        assert isinstance(judge(LOCKED, ask(query_token=TOKEN + "x")), Refuse)

    def test_a_session_admits_pages_and_events_and_actions_with_csrf(self) -> None:
        session = session_value(TOKEN)
        assert judge(LOCKED, ask(cookies={"guild_session": session})) == Admit()
        assert judge(LOCKED, ask(Kind.EVENTS, cookies={"guild_session": session})) == Admit()
        action = ask(Kind.ACTION, cookies={"guild_session": session})
        assert isinstance(judge(LOCKED, action), Refuse)
        with_csrf = ask(
            Kind.ACTION,
            headers={"x-guild-csrf": "k"},
            cookies={"guild_session": session, "guild_csrf": "k"},
        )
        assert judge(LOCKED, with_csrf) == Admit()

    def test_a_session_of_another_token_is_refused(self) -> None:
        other = session_value("other-token")
        verdict = judge(LOCKED, ask(cookies={"guild_session": other}))
        assert isinstance(verdict, Refuse) and verdict.status == 401

    def test_the_session_mac_is_hmac_sha256_of_the_nonce(self) -> None:
        expected = hmac.new(TOKEN.encode(), b"session:n0nce", hashlib.sha256).hexdigest()
        assert session_value(TOKEN, "n0nce") == f"n0nce.{expected}"


_header_names = st.sampled_from(
    ["authorization", "cookie", "origin", "x-guild-csrf", "sec-fetch-site", "referer"]
)


@given(
    kind=st.sampled_from(Kind),
    headers=st.dictionaries(_header_names, st.text(max_size=40), max_size=5),
    cookies=st.dictionaries(
        st.sampled_from(["guild_session", "guild_csrf", "other"]), st.text(max_size=80)
    ),
    query_token=st.none() | st.text(max_size=20),
)
def test_nothing_without_the_token_gets_past_a_locked_server(
    kind: Kind, headers: dict[str, str], cookies: dict[str, str], query_token: str | None
) -> None:
    """Whatever a request says, if the token is nowhere in it, it is refused."""
    assume(all(TOKEN not in text for text in [*headers.values(), query_token or ""]))
    asked = ask(kind, headers=headers, cookies=cookies, query_token=query_token)
    assert isinstance(judge(LOCKED, asked), Refuse)


@given(nonce=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32), flip=st.integers(0, 63))
def test_a_tampered_session_is_invalid(nonce: str, flip: int) -> None:
    value = session_value(TOKEN, nonce)
    head, mac = value.split(".")
    tampered = mac[:flip] + ("0" if mac[flip] != "0" else "1") + mac[flip + 1 :]
    assert valid_session(TOKEN, value)
    assert not valid_session(TOKEN, f"{head}.{tampered}")
    assert not valid_session(TOKEN + "x", value)


def test_the_token_must_be_clean() -> None:
    for bad in ("", " padded", "padded\n"):
        with pytest.raises(ValueError, match="token"):
            Access(token=bad, loopback=False)


def test_parse_cookies() -> None:
    assert parse_cookies('a=1; b="two"; a=3; junk; =x') == {"a": "1", "b": "two"}


def test_redact_hides_the_given_messages_only() -> None:
    body = {
        "status": "unhealthy",
        "workers": {
            "w": {"state": "open", "last_error": "KeyError: pw=1", "broker_error": None},
        },
        "checks": {
            "worker:w:state": {"status": "unhealthy", "detail": "KeyError: pw=1"},
            "queue:w:depth": {"status": "degraded", "detail": "12 jobs ready"},
        },
    }
    out = redact(body, {"KeyError: pw=1"})
    assert out == {
        "status": "unhealthy",
        "workers": {"w": {"state": "open", "last_error": "redacted", "broker_error": None}},
        "checks": {
            "worker:w:state": {"status": "unhealthy", "detail": "redacted"},
            "queue:w:depth": {"status": "degraded", "detail": "12 jobs ready"},
        },
    }


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "must be JSON"),
        (b"[1]", "object"),
        (b'{"id": ["a"]}', "object"),
        (b'{"ids": "a"}', "list of non-empty strings"),
        (b'{"ids": [1]}', "list of non-empty strings"),
        (b'{"ids": ["a", ""]}', "list of non-empty strings"),
        (b'{"ids": [' + b",".join([b'"x"'] * 1001) + b"]}", "at most 1000"),
    ],
)
def test_action_bodies_refused(body: bytes, problem: str) -> None:
    with pytest.raises(ActionError, match=problem):
        action_ids(body)


def test_action_ids_keep_order_and_drop_repeats() -> None:
    assert action_ids(b'{"ids": ["b", "a", "b"]}') == ["b", "a"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [("open", "open"), ("half_open", "half_open"), ("running", "closed"), ("gave_up", "closed")],
)
def test_circuit(state: str, expected: str) -> None:
    assert circuit(state) == expected


class TestConfig:
    """``http_token`` and ``http_redact`` in guild.toml."""

    def test_read_and_checked(self, tmp_path: Path) -> None:
        good = tmp_path / "guild.toml"
        good.write_text('[guild]\napp = "m:app"\nhttp_token = "t0k"\nhttp_redact = true\n')
        config = load_config(good)
        assert (config.http_token, config.http_redact) == ("t0k", True)
        plain = tmp_path / "plain.toml"
        plain.write_text('[guild]\napp = "m:app"\n')
        assert (load_config(plain).http_token, load_config(plain).http_redact) == (None, None)
        for line, key in (
            ('http_token = ""', "guild.http_token"),
            ('http_token = " t0k"', "guild.http_token"),
            ("http_token = 12", "guild.http_token"),
            ('http_redact = "yes"', "guild.http_redact"),
        ):
            bad = tmp_path / "bad.toml"
            bad.write_text(f'[guild]\napp = "m:app"\n{line}\n')
            with pytest.raises(ConfigError, match=key):
                load_config(bad)

    def test_config_show_hides_the_token(self, tmp_path: Path) -> None:
        path = tmp_path / "guild.toml"
        path.write_text('[guild]\napp = "m:app"\nhttp_token = "t0k-secret"\n')
        shown = effective(path, environ={})
        assert "t0k-secret" not in shown.render()
        assert "t0k-secret" not in json.dumps(shown.to_json())
        assert shown.to_json()["settings"]["guild.http_token"]["value"] == "(hidden)"

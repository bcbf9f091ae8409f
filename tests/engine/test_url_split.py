"""url.parse splits an http(s) URL itself (urlsplit once per origin, not per URL): it must
read every URL as urlsplit reads it, accepted or refused with the same code and text."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.url import Target, forget_parsed, parse, parse_by_urlsplit

_PIECES = (
    "http https HTTP HtTpS ftp http: https: // : / ? # @ [ ] ::1 % %41 user pw example.org "
    "EXAMPLE.org 127.0.0.1 8080 0 99999 a . .. /./ /../ é bücher.de x=1 & ; + \u212a \ufb01"
)
PIECES = st.sampled_from([*_PIECES.split(" "), " ", "\t"])


def _outcome(function: object, url: str) -> Target | tuple[Code, str]:
    try:
        return function(url)  # type: ignore[operator, no-any-return]
    except TransferError as exc:
        return (exc.code, exc.text)


@settings(max_examples=3000, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https", "ftp", "http:/", ""]),
    rest=st.lists(PIECES, max_size=12).map("".join),
)
@example(scheme="http", rest="user#x@host/p")
@example(scheme="http", rest="[::1]:8080/a/../b?q#f")
@example(scheme="https", rest="h?a/b#c?d")
@example(scheme="http", rest="[::1/")
@example(scheme="http", rest="host:99999/")
@example(scheme="http", rest="a:b@host:81/%2e%2E/x")
def test_parse_reads_urls_as_urlsplit_does(scheme: str, rest: str) -> None:
    url = f"{scheme}://{rest}" if scheme else rest
    forget_parsed()
    assert _outcome(parse, url) == _outcome(parse_by_urlsplit, url)


@given(st.text(max_size=40))
def test_parse_agrees_on_any_text(url: str) -> None:
    forget_parsed()
    assert _outcome(parse, url) == _outcome(parse_by_urlsplit, url)


def test_parse_fills_each_field_of_target() -> None:
    """Target is made field by field in order (tuple.__new__): each lands in its name."""
    forget_parsed()
    assert parse("HTTP://u:p@Example.org:81/a/./b?q=1#f")._asdict() == {
        "url": "http://u:p@Example.org:81/a/b?q=1#f",
        "scheme": "http",
        "host": "example.org",
        "port": 81,
        "target": "/a/b?q=1",
        "host_header": "example.org:81",
        "authorization": "Basic dTpw",
    }

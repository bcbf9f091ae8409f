"""url_problem() answers the common URL without urlsplit(): always as the full check would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hiperfifo.sources.fifo import _parsed_url_problem, url_problem

PIECES = st.sampled_from(
    ["http://", "HTTPS://", "ftp://", "a", "Z", "0", "9", ".", "-", ":", "/", "?", "#", "[", "]",
     "@", "%", " ", "\t", "\x7f", "é", "65535", "65536", "0", "00080", "99999", "::1"]
)  # fmt: skip


@settings(max_examples=3000)
@given(st.lists(PIECES, max_size=10).map("".join))
def test_the_fast_path_agrees_with_the_full_check(text: str) -> None:
    assert url_problem(text) == _parsed_url_problem(text)


def test_the_common_urls_and_their_edges() -> None:
    assert url_problem("http://127.0.0.1:8080/1k?i=7") is None
    assert url_problem("https://example.com") is None
    assert url_problem("http://a:65535/") is None
    assert url_problem("http://a:0/") == "bad port number 0 (a port is 1-65535)"
    assert url_problem("http://a:65536/") == _parsed_url_problem("http://a:65536/") is not None
    assert url_problem("http://") == "unparseable URL: no host"

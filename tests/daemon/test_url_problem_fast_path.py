"""url_problem() answers the common URL without urlsplit(), and Tokenizer a run of common URLs
in one match: always as the full check of each token would."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hiperfifo.sources.base import singles
from hiperfifo.sources.fifo import (
    _PLAIN_RUN,
    Item,
    Rejected,
    Stop,
    Tokenizer,
    Url,
    Urls,
    _parsed_url_problem,
    classify,
    url_problem,
)

PIECES = st.sampled_from(
    ["http://", "HTTPS://", "ftp://", "a", "Z", "0", "9", ".", "-", ":", "/", "?", "#", "[", "]",
     "@", "%", " ", "\t", "\x7f", "é", "65535", "65536", "0", "00080", "99999", "::1"]
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
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


# -- whole runs of tokens: Tokenizer checks a run of plain URLs in one match ------------

SEPARATORS = st.sampled_from([" ", "\n", "\r\n", "\t", "\x0b\x0c", "  \n"])
PORTS = st.sampled_from(["", ":1", ":80", ":0", ":080", ":9999", ":10000", ":59999", ":60000"])
PORTS |= st.sampled_from([":64999", ":65000", ":65499", ":65500", ":65529", ":65530", ":65535"])
PORTS |= st.sampled_from([":65536", ":65540", ":65600", ":66000", ":70000", ":99999", ":"])
PLAIN = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["http://", "https://", "HtTp://", "ftp://", ""]),
    st.sampled_from(["a", "127.0.0.1", "ex-ample.org", "", "[::1]", "é.org"]),
    PORTS,
    st.sampled_from(["", "/", "/1k?i=7", "#f", "?q", "/x\x7f", "/é", "/\x00"]),
)
TOKENS = PLAIN | st.sampled_from(["stop", "junk"]) | st.lists(PIECES, max_size=6).map("".join)


def one_by_one(data: bytes, max_length: int) -> list[Item]:
    """What the tokenizer gives for `data` (ending in whitespace), a token at a time."""
    tokens = [token for token in re.split(rb"[ \t\n\r\x0b\x0c]+", data) if token]
    return [
        classify(token)
        if len(token) <= max_length
        else Tokenizer(max_length).feed(token + b" ")[0]
        for token in tokens
    ]


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.tuples(TOKENS, SEPARATORS), max_size=12),
    st.sampled_from([8192, 24]),
    st.integers(min_value=0, max_value=40),
)
def test_a_run_of_tokens_gives_what_one_token_at_a_time_gives(
    pairs: list[tuple[str, str]], max_length: int, cut: int
) -> None:
    """All plain URLs or not, in one read or cut in two: the items of classify() per token."""
    data = "".join(token + sep for token, sep in pairs).encode()
    expected = one_by_one(data, max_length)
    assert singles(Tokenizer(max_length).feed(data)) == expected
    tokenizer = Tokenizer(max_length)
    assert singles(tokenizer.feed(data[:cut]) + tokenizer.feed(data[cut:])) == expected


def test_plain_urls_in_a_run_are_all_accepted() -> None:
    urls = [f"http://127.0.0.1:{port}/1k?i={port}" for port in (1, 80, 9999, 65535)]
    data = "\r\n".join(urls).encode() + b"\n"
    assert Tokenizer().feed(data) == [Urls(urls, data.decode())]


def test_the_run_matches_every_port_from_1_to_65535_and_no_other() -> None:
    """The run's port alternatives (longest first) spell exactly 1-65535, no leading zero."""
    for port in range(100_000):
        for spelled in (str(port), f"0{port}"):
            matched = _PLAIN_RUN.fullmatch(f"http://h:{spelled}/x\n") is not None
            assert matched == (spelled == str(port) and 1 <= port <= 65535), spelled


def test_a_read_cut_inside_a_url_still_gives_one_run() -> None:
    """The URL a read completes joins the run of the URLs after it: one Urls per read."""
    tokenizer = Tokenizer()
    assert tokenizer.feed(b"http://a/1\nhttp://a/") == [Urls(["http://a/1"], "http://a/1\n")]
    assert tokenizer.feed(b"2\nhttp://a/3\nhttp") == [
        Urls(["http://a/2", "http://a/3"], "http://a/2\nhttp://a/3\n")
    ]
    assert tokenizer.feed(b"://a/4\n") == [Urls(["http://a/4"], "http://a/4\n")]


def test_a_token_that_is_no_plain_url_splits_the_run_around_it() -> None:
    """URLs before and after a junk line (or `stop`, or a URL urlsplit() must look at) stay
    runs: one match each, not every token of the read on its own."""
    data = b"http://a/1 http://a/2\njunk\nhttp://a/3\nstop\nhttp://u:p@h/ http://a/4\n"
    assert Tokenizer().feed(data) == [
        Urls(["http://a/1", "http://a/2"], "http://a/1 http://a/2\n"),
        Rejected("not a URL (no scheme)", "junk"),
        Urls(["http://a/3"], "\nhttp://a/3\n"),
        Stop(),
        Url("http://u:p@h/"),
        Urls(["http://a/4"], " http://a/4\n"),
    ]

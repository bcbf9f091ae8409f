"""sources/fifo.py: the tokenizer (pure) and creating/adopting/refusing the FIFO path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hiperfifo.redact import redact
from hiperfifo.sources.base import singles
from hiperfifo.sources.fifo import (
    FifoError,
    Rejected,
    Stop,
    Tokenizer,
    Url,
    classify,
    open_fifo,
)


def feed_all(tokenizer: Tokenizer, *chunks: bytes) -> list[object]:
    items: list[object] = []
    for chunk in chunks:
        items.extend(singles(tokenizer.feed(chunk)))
    return items


def test_splits_on_every_ascii_whitespace() -> None:
    """Space, tab, CR, LF, VT and FF all separate tokens; runs of them make no empty tokens."""
    data = b"http://a/1 http://a/2\thttp://a/3\r\nhttp://a/4\x0bhttp://a/5\x0chttp://a/6\n\n  \n"
    assert singles(Tokenizer().feed(data)) == [Url(f"http://a/{i}") for i in range(1, 7)]


def test_partial_token_waits_for_the_rest() -> None:
    """A token cut by the end of a read is completed by the next read."""
    tokenizer = Tokenizer()
    assert tokenizer.feed(b"http://exa") == []
    assert tokenizer.pending == 10
    assert singles(tokenizer.feed(b"mple.org/x\n")) == [Url("http://example.org/x")]


def test_stop_word_is_an_item_in_order() -> None:
    """`stop` comes out where it was written, after the URLs before it."""
    assert singles(Tokenizer().feed(b"http://a/1 http://a/2 stop http://a/3\n")) == [
        Url("http://a/1"),
        Url("http://a/2"),
        Stop(),
        Url("http://a/3"),
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"file:///etc/passwd", "unsupported scheme"),
        (b"gopher://x", "unsupported scheme"),
        (b"ftp://x/y", "unsupported scheme"),
        (b"javascript:alert(1)", "unsupported scheme"),
        (b"example.org/x", "no scheme"),
        (b"http://a\x00b/", "NUL"),
        (b"http://\xff\xfe/", "not UTF-8"),
        (b"http://[::1/", "unparseable"),
        (b"http://h:99999/", "unparseable"),
        (b"http://h:port/", "unparseable"),
        (b"http://h:0/", "bad port number 0"),
        (b"https://h:000/x", "bad port number 0"),
        (b"http:///path", "no host"),
        (b"http://h/\x1b[2J", "control character"),
    ],
)
def test_junk_is_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    """Each kind of junk is rejected, and the reason says which."""
    item = classify(raw)
    assert isinstance(item, Rejected)
    assert reason in item.reason


def test_ports_1_and_65535_are_accepted() -> None:
    """Only port 0 is refused: the ends of the range are fine, as is no port at all."""
    for raw in (b"http://h:1/", b"http://h:65535/", b"http://h/", b"http://h:/"):
        assert isinstance(classify(raw), Url), raw


def test_non_utf8_bytes_are_shown_escaped() -> None:
    """A rejected non-UTF-8 token is shown with \\xNN escapes."""
    item = classify(b"http://x/\xff\xc3")
    assert isinstance(item, Rejected)
    assert item.token == "http://x/\\xff\\xc3"


def test_shown_token_is_cut_to_200_characters() -> None:
    """The token shown in a rejection is at most 200 characters."""
    item = classify(b"gopher://" + b"a" * 1000)
    assert isinstance(item, Rejected)
    assert len(item.token) == 200


def test_over_long_token_is_rejected_once_and_stream_resyncs() -> None:
    """A 100 KB token is one rejection; the URL after the next whitespace is accepted."""
    tokenizer = Tokenizer(max_length=8192)
    items = feed_all(
        tokenizer, b"http://a/ok1 http://", b"a" * 50_000, b"b" * 50_000, b" http://a/ok2\n"
    )
    assert items[0] == Url("http://a/ok1")
    assert isinstance(items[1], Rejected)
    assert "longer than 8192" in items[1].reason
    assert items[2:] == [Url("http://a/ok2")]
    assert tokenizer.pending == 0


def test_token_of_exactly_max_length_is_accepted() -> None:
    """The limit is inclusive: max_length bytes pass, one more does not."""
    url = b"http://a/" + b"x" * 7
    assert singles(Tokenizer(max_length=len(url)).feed(url + b" ")) == [Url(url.decode())]
    assert isinstance(Tokenizer(max_length=len(url) - 1).feed(url + b" ")[0], Rejected)


def test_nul_is_not_a_separator() -> None:
    """`a\\0b` is one token (rejected), not two."""
    items = singles(Tokenizer().feed(b"http://a/1\x00http://a/2\n"))
    assert len(items) == 1
    assert isinstance(items[0], Rejected)


def test_crlf_lines_are_accepted() -> None:
    """CRLF line endings do not leak a CR into the URL."""
    assert singles(Tokenizer().feed(b"http://a/1\r\nhttp://a/2\r\n")) == [
        Url("http://a/1"),
        Url("http://a/2"),
    ]


_token_bytes = st.sampled_from(
    [
        b"http://a/x",
        b"stop",
        b" ",
        b"\n",
        b"\r\n",
        b"\x00",
        b"\xff",
        b"gopher://g",
        b"http://",
        b"a" * 20,
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=300), st.lists(_token_bytes, max_size=40).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
    max_length=st.integers(min_value=16, max_value=64),
)
def test_any_split_gives_the_same_items_as_one_feed(
    data: bytes, cuts: list[int], max_length: int
) -> None:
    """Arbitrary bytes fed in arbitrary pieces give the same items as one feed; nothing raises."""
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = singles(Tokenizer(max_length=max_length).feed(data))
    assert feed_all(Tokenizer(max_length=max_length), *pieces) == whole


_WHITESPACE = b" \t\r\n\x0b\x0c"
_valid_urls = st.builds(
    "{}://{}{}/{}".format,
    st.sampled_from(["http", "https", "HTTP", "hTtPs"]),
    st.one_of(
        st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z]{2,6}){0,2}", fullmatch=True),
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    ),
    st.one_of(st.just(""), st.integers(1, 65535).map(":{}".format)),
    st.text(alphabet="abcXYZ019-._~%/?=&;:@!$'()*+,", max_size=40),
)
_no_space = st.binary(min_size=1, max_size=30).map(
    lambda b: bytes(c for c in b if c not in _WHITESPACE) or b"x"
)
_invalid_tokens = st.one_of(
    _no_space.map(lambda b: b + b"\x00"),  # a NUL anywhere
    _no_space.map(lambda b: b"http://a/" + b + b"\xff"),  # not UTF-8
    st.sampled_from([b"ftp://h/", b"file:///etc/passwd", b"javascript:alert(1)", b"gopher://g"]),
    st.from_regex(r"[a-z0-9./]{1,20}", fullmatch=True).map(str.encode),  # no scheme
    st.sampled_from([b"http://", b"https:///path", b"http://h:99999/", b"http://[::1/"]),
    st.just(b"http://a/" + b"x" * 200),  # longer than max_length below
)


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(
        st.tuples(
            st.one_of(
                _valid_urls.map(lambda u: ("valid", u.encode())),
                _invalid_tokens.map(lambda t: ("invalid", t)),
                _no_space.map(lambda t: ("unknown", t)),
                st.just(("stop", b"stop")),
            ),
            st.binary(min_size=1, max_size=3).map(
                lambda b: bytes(_WHITESPACE[c % len(_WHITESPACE)] for c in b)
            ),
        ),
        max_size=30,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=15),
)
def test_every_valid_url_accepted_once_everything_else_rejected_with_a_reason(
    stream: list[tuple[tuple[str, bytes], bytes]], cuts: list[int]
) -> None:
    """Tokens in any split: each valid URL is one Url in order, each junk one Rejected."""
    data = b"".join(token + gap for (_, token), gap in stream)
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    items = feed_all(Tokenizer(max_length=128), *pieces)
    assert len(items) == len(stream)
    for ((kind, token), _), item in zip(stream, items, strict=True):
        if kind == "valid":
            assert item == Url(token.decode())
        elif kind == "stop":
            assert item == Stop()
        elif kind == "invalid":
            assert isinstance(item, Rejected)
        else:
            assert isinstance(item, Url | Rejected | Stop)
        if isinstance(item, Rejected):
            assert item.reason
            assert len(item.token) <= 200


def test_creates_fifo_with_exact_mode_despite_umask(tmp_path: Path) -> None:
    """A missing FIFO is created with --fifo-mode exactly, whatever the umask."""
    path = tmp_path / "in.fifo"
    old = os.umask(0o077)
    try:
        fifo = open_fifo(path, 0o620)
    finally:
        os.umask(old)
    try:
        st_ = os.stat(path)
        assert stat.S_ISFIFO(st_.st_mode)
        assert stat.S_IMODE(st_.st_mode) == 0o620
        assert fifo.created
    finally:
        fifo.close()
    assert not path.exists()


def test_reuses_existing_fifo_and_leaves_it(tmp_path: Path) -> None:
    """An existing FIFO is reused and not removed on close."""
    path = tmp_path / "in.fifo"
    os.mkfifo(path, 0o644)
    fifo = open_fifo(path, 0o600)
    assert not fifo.created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    fifo.close()
    assert stat.S_ISFIFO(os.stat(path).st_mode)


def test_read_write_nonblocking_never_sees_eof(tmp_path: Path) -> None:
    """Opened read-write and non-blocking: an empty FIFO reads b"" instead of blocking."""
    fifo = open_fifo(tmp_path / "in.fifo", 0o600)
    try:
        assert fifo.read(100) == b""
        with open(fifo.path, "wb") as writer:
            writer.write(b"http://a/\n")
        assert fifo.read(100) == b"http://a/\n"
        assert fifo.read(100) == b""
    finally:
        fifo.close()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_refuses_anything_but_a_fifo(tmp_path: Path, kind: str) -> None:
    """A regular file, directory or symlink (even to a FIFO) at the path is refused, untouched."""
    path = tmp_path / "in.fifo"
    if kind == "file":
        path.write_bytes(b"precious")
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(tmp_path / "real.fifo")
        path.symlink_to(tmp_path / "real.fifo")
    with pytest.raises(FifoError, match="refusing"):
        open_fifo(path, 0o600)
    if kind == "file":
        assert path.read_bytes() == b"precious"
    assert os.path.lexists(path)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:pw@h/x", "http://u:***@h/x"),
        ("https://u:p:w@h:8080/", "https://u:***@h:8080/"),
        ("http://u@h/", "http://u@h/"),
        ("http://h/a:b@c", "http://h/a:b@c"),
        ("u:pw@proxy:3128", "u:***@proxy:3128"),  # --proxy without a scheme
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    """redact() replaces the password of the userinfo and nothing else."""
    assert redact(url) == shown


def test_flush_ends_the_open_token_as_whitespace_would() -> None:
    """A write without a newline: flush() completes it, and the next bytes start a new token
    (`http://h/a.txt` then `stop`, not `http://h/a.txtstop`)."""
    tokenizer = Tokenizer(max_length=64)
    assert tokenizer.feed(b"http://h/a.txt") == []
    assert tokenizer.open
    assert tokenizer.flush() == [Url("http://h/a.txt")]
    assert not tokenizer.open
    assert tokenizer.flush() == []
    assert tokenizer.feed(b"stop") == []
    assert tokenizer.flush() == [Stop()]
    tokenizer.feed(b"x" * 100)  # too long: rejected at once, the rest skipped...
    assert tokenizer.open
    assert tokenizer.flush() == []  # ... and the skipping ends with the token
    assert feed_all(tokenizer, b"http://h/b\n") == [Url("http://h/b")]

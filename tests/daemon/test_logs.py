"""logs.py in-process: JSON lines as structlog's processor chain wrote them, timestamps,
and lines held inside batched() until flush()."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hiperfifo import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """logs configured for JSON into a StringIO; structlog's defaults again afterwards."""
    out = io.StringIO()
    logs.configure("json", "debug", out)
    yield out
    structlog.reset_defaults()


def _reference_line(method: str, event_dict: dict[str, Any]) -> str:
    """What the chain add_log_level, TimeStamper, dict_tracebacks, keys first, JSONRenderer
    made of one event (the timestamp fixed to "T")."""
    event_dict = structlog.processors.add_log_level(None, method, event_dict)
    event_dict["timestamp"] = "T"
    event_dict = structlog.processors.dict_tracebacks(None, method, event_dict)
    first = {key: event_dict.pop(key) for key in ("timestamp", "level", "event")}
    return str(structlog.processors.JSONRenderer()(None, method, {**first, **event_dict}))


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_json_lines_are_byte_for_byte_what_the_processor_chain_wrote(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound keys, then call keys; None, bools, floats, non-ASCII, objects by repr()."""
    monkeypatch.setattr(logs, "timestamp", lambda: "T")
    log = logs.get(id=7, url="http://h/é")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("info", {"status": None, "ok": True, "elapsed": 0.098615, "error": ""}),
        ("warning", {"result": 7, "error": 'quote " and \\ and \x01', "thing": Opaque()}),
        ("debug", {"level": "spoofed", "timestamp": "spoofed", "nested": {"a": [1, 2.5]}}),
    ]
    for method, fields in calls:
        getattr(log, method)("transfer.done", **fields)
    expected = [
        _reference_line(method, {"id": 7, "url": "http://h/é", **fields, "event": "transfer.done"})
        for method, fields in calls
    ]
    assert stream.getvalue().splitlines() == expected


def test_exception_lines_carry_the_traceback_as_structured_data(stream: io.StringIO) -> None:
    """log.exception() writes level error and an `exception` list, as dict_tracebacks did."""
    try:
        raise RuntimeError("injected")
    except RuntimeError:
        logs.get().exception("daemon.crashed")
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert list(event)[:3] == ["timestamp", "level", "event"]
    assert (event["level"], event["event"]) == ("error", "daemon.crashed")
    assert event["exception"][0]["exc_type"] == "RuntimeError"
    assert event["exception"][0]["exc_value"] == "injected"


@pytest.mark.parametrize(
    "nanoseconds",
    [1_795_000_000_000_000_000, 1_795_000_000_123_456_789, 1_795_000_000_000_000_999],
)
def test_timestamps_are_written_as_datetime_isoformat_with_z(
    monkeypatch: pytest.MonkeyPatch, nanoseconds: int
) -> None:
    """ISO 8601 UTC with Z; microseconds left out when they are 0, as isoformat() does."""
    monkeypatch.setattr(logs.time, "time_ns", lambda: nanoseconds)
    second, micro = divmod(nanoseconds // 1000, 1_000_000)
    moment = datetime.fromtimestamp(second, tz=UTC).replace(microsecond=micro)
    assert logs.timestamp() == moment.isoformat().replace("+00:00", "Z")


def test_lines_of_one_loop_iteration_share_its_timestamp(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside batched() the clock is read at an iteration's first line and again only after
    flush() (before the loop may sleep); outside, at every line."""
    ticks = iter(range(1_795_000_000_000_001_000, 1_795_000_001_000_000_000, 1_000))
    monkeypatch.setattr(logs.time, "time_ns", lambda: next(ticks))
    log = logs.get()

    def stamps() -> list[str]:
        return [json.loads(line)["timestamp"] for line in stream.getvalue().splitlines()]

    log.info("before")
    with logs.batched():
        log.info("one")
        logs.transfers_added(log, 1, ["http://h/"], [None])
        log.warning("two")
        logs.flush()
        log.info("three")
        log.info("four")
    log.info("after")
    log.info("after again")
    before, one, added, two, three, four, after, again = stamps()
    assert one == added == two
    assert three == four
    assert len({before, one, three, after, again}) == 5
    assert before < one < three < after < again


def test_lines_wait_inside_batched_until_flush(stream: io.StringIO) -> None:
    """Outside batched() a line is written at once; inside, at flush() or on the way out."""
    log = logs.get()
    log.info("one")
    assert stream.getvalue().count("\n") == 1
    with logs.batched():
        log.info("two")
        log.info("three")
        assert stream.getvalue().count("\n") == 1
        logs.flush()
        assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == [
            "one",
            "two",
            "three",
        ]
        log.info("four")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()][-1] == "four"


def test_a_long_batch_is_written_without_waiting_for_flush(stream: io.StringIO) -> None:
    """MAX_PENDING lines in one loop iteration (an abort of a big queue) go out anyway."""
    with logs.batched():
        for n in range(logs.MAX_PENDING):
            logs.get().info("transfer.done", id=n)
        assert stream.getvalue().count("\n") == logs.MAX_PENDING


BIDI = "\u202e\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029"


@pytest.mark.parametrize("fmt", ["logfmt", "console"])
def test_bidi_controls_are_escaped_like_c0_controls(fmt: str) -> None:
    """U+202E and the other reordering controls reach the terminal as \\uNNNN, ESC as \\x1b;
    other non-ASCII text is left alone."""
    out = io.StringIO()
    logs.configure(fmt, "debug", out)
    try:
        logs.get().warning("input.rejected", reason="r", token=f"http://h/{BIDI}gpj.exe\x1bé")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert not any(char in text for char in BIDI + "\x1b")
    for char in BIDI:
        assert f"\\u{ord(char):04x}" in text
    assert "\\x1b" in text
    assert "é" in text


@pytest.mark.parametrize("fmt", ["logfmt", "console"])
def test_transfer_done_leads_with_url_result_status_bytes_elapsed(fmt: str) -> None:
    """On a terminal the keys a reader wants come first, the rest in the order logged."""
    out = io.StringIO()
    logs.configure(fmt, "debug", out)
    try:
        logs.get(id=7, url="http://h/a").info(
            "transfer.done",
            effective_url="http://h/a",
            result=0,
            result_name="OK",
            error="",
            status=200,
            bytes=16,
            elapsed=0.01,
            redirects=0,
            attempts=1,
        )
    finally:
        structlog.reset_defaults()
    line = out.getvalue()
    keys = [word.split("=")[0] for word in line.split() if "=" in word]
    keys = [key for key in keys if key not in ("timestamp", "level", "event")]
    assert keys[:5] == ["url", "result", "status", "bytes", "elapsed"]
    assert keys[5:] == ["id", "effective_url", "result_name", "error", "redirects", "attempts"]


def test_redact_head_hides_credentials_and_keeps_the_rest() -> None:
    """Authorization/Proxy-Authorization keep their scheme, cookies their names; other lines
    and the order stay; the blank line ending the head is dropped."""
    head = (
        "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YWxpY2U6czNjcmV0\r\n"
        "proxy-authorization: Bearer tok\r\nCookie: sid=abc; theme=dark\r\n\r\n"
    )
    assert logs.redact_head(head) == [
        "GET / HTTP/1.1",
        "Host: h",
        "Authorization: Basic ***",
        "proxy-authorization: Bearer ***",
        "Cookie: sid=***; theme=***",
    ]
    response = "HTTP/1.1 200 OK\r\nSet-Cookie: sid=abc; Path=/; HttpOnly\r\nX-A: b\r\n\r\n"
    assert logs.redact_head(response) == ["HTTP/1.1 200 OK", "Set-Cookie: sid=***", "X-A: b"]


# -- the per-URL lines (transfer.added, transfer.done), rendered without structlog --------

text = st.text(st.characters(codec="utf-8"), max_size=20)
maybe_text = st.none() | text
count = st.integers(min_value=0, max_value=2**63)
DONE_ORDER = ["id", "url", "entry", "effective_url", "result", "result_name", "error", "status"]
DONE_ORDER += ["bytes", "elapsed", "redirects", "attempts", "http_version", "file"]
done_fields = st.fixed_dictionaries(
    {
        "id": count,
        "url": text,
        "entry": maybe_text,
        "effective_url": st.none() | text,  # None: the url itself (the same object)
        "result": st.integers(min_value=-1, max_value=100),
        "result_name": text,
        "error": text,
        "status": st.none() | st.integers(min_value=100, max_value=999),
        "bytes": count,
        "elapsed": st.floats(min_value=0, max_value=1e12),
        "redirects": st.integers(min_value=0, max_value=50),
        "attempts": st.integers(min_value=1, max_value=10),
        "http_version": st.none() | st.sampled_from(["1.0", "1.1", "2"]),
        "file": maybe_text,
    },
)
# ... and the common line (OK, no entry, no file, the URL its own effective URL), which
# transfer_done writes its own way
ok_fields = done_fields.map(
    lambda fields: {
        **fields,
        **{"entry": None, "effective_url": None, "result": 0, "result_name": "OK"},
        **{"error": "", "file": None},
    }
)


@pytest.fixture
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "timestamp", lambda: "T")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=count, added=st.lists(st.tuples(text, maybe_text), max_size=5))
def test_transfers_added_are_byte_for_byte_the_generic_lines(
    stream: io.StringIO, fixed_time: None, first: int, added: list[tuple[str, str | None]]
) -> None:
    """The lines written without structlog are the lines its processor chain would write."""
    stream.seek(0)
    stream.truncate()  # the fixtures serve every example: the stream is emptied, the time fixed
    logs.transfers_added(logs.get(), first, [u for u, _ in added], [e for _, e in added])
    expected = []
    for transfer_id, (url, entry) in enumerate(added, first):
        fields: dict[str, Any] = {"id": transfer_id, "url": url}
        if entry is not None:
            fields["entry"] = entry
        expected.append(_reference_line("info", {"event": "transfer.added", **fields}) + "\n")
    assert stream.getvalue() == "".join(expected)


# what `plain` promises of a URL: printable ASCII, no quote, no backslash
plain_urls = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\')
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=count, urls=st.lists(plain_urls, max_size=5))
def test_plain_transfers_added_are_byte_for_byte_the_generic_lines(
    stream: io.StringIO, fixed_time: None, first: int, urls: list[str]
) -> None:
    """A run of URLs that need no JSON escaping (plain), without entries (None)."""
    stream.seek(0)
    stream.truncate()
    logs.transfers_added(logs.get(), first, urls, None, plain=True)
    expected = [
        _reference_line("info", {"event": "transfer.added", "id": n, "url": url}) + "\n"
        for n, url in enumerate(urls, first)
    ]
    assert stream.getvalue() == "".join(expected)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=done_fields | ok_fields, ok=st.booleans())
def test_transfer_done_is_byte_for_byte_the_generic_line(
    stream: io.StringIO, fixed_time: None, fields: dict[str, Any], ok: bool
) -> None:
    """Keys in jobs.report's order, no entry or file when None, elapsed rounded to 6 places."""
    stream.seek(0)
    stream.truncate()  # the fixtures serve every example: the stream is emptied, the time fixed
    if fields["effective_url"] is None:
        fields["effective_url"] = fields["url"]
    logs.transfer_done(logs.get(), ok, *(fields[key] for key in DONE_ORDER))
    expected = {key: fields[key] for key in DONE_ORDER}
    expected["elapsed"] = round(expected["elapsed"], 6)
    for key in ("entry", "file"):
        if expected[key] is None:
            del expected[key]
    reference = _reference_line(
        "info" if ok else "warning", {"event": "transfer.done", **expected}
    )
    assert stream.getvalue() == reference + "\n"


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=ok_fields, entry=maybe_text)
def test_transfer_ok_is_byte_for_byte_the_generic_line(
    stream: io.StringIO, fixed_time: None, fields: dict[str, Any], entry: str | None
) -> None:
    """transfer_ok(): transfer_done()'s common line (ok, OK, the URL its own effective URL,
    no error, one attempt, no file; an entry or none), as structlog's chain writes it."""
    stream.seek(0)
    stream.truncate()
    fields = {**fields, "entry": entry, "effective_url": fields["url"], "attempts": 1}
    ok_keys = ["id", "url", "entry", "status", "bytes", "elapsed", "redirects", "http_version"]
    logs.transfer_ok(logs.get(), *(fields[key] for key in ok_keys))
    expected = {key: fields[key] for key in DONE_ORDER if key != "file"}
    expected["elapsed"] = round(expected["elapsed"], 6)
    if expected["entry"] is None:
        del expected["entry"]
    assert (
        stream.getvalue() == _reference_line("info", {"event": "transfer.done", **expected}) + "\n"
    )


@settings(max_examples=3000)
@given(
    st.floats(min_value=0, max_value=1e10)
    | st.integers(min_value=0, max_value=10**16).map(lambda n: n / 10**7)  # near the ties
    | st.sampled_from([0.0, 1e-4, 0.00009995, 0.0001, 0.00010000000000000001, 999999999.9999996])
)
def test_seconds_is_repr_of_the_float_rounded_to_six_places(elapsed: float) -> None:
    assert logs.seconds(elapsed) == repr(round(elapsed, 6))


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_per_url_lines_follow_the_level_and_other_formats(fmt: str) -> None:
    """Below --log-level nothing is written; logfmt (and console, journald) get the same
    keys and values through structlog, elapsed rounded alike."""
    out = io.StringIO()
    logs.configure(fmt, "warning", out)
    fields: dict[str, Any] = {
        "id": 3,
        "url": "http://u:***@h/",
        "entry": None,
        "effective_url": "http://u:***@h/x",
        "result": 7,
        "result_name": "COULDNT_CONNECT",
        "error": "refused",
        "status": None,
        "bytes": 0,
        "elapsed": 0.1234567,
        "redirects": 0,
        "attempts": 1,
        "http_version": None,
        "file": None,
    }
    try:
        logs.transfers_added(logs.get(), 3, ["http://u:***@h/"], [None])
        logs.transfer_done(logs.get(), True, *fields.values())
        assert out.getvalue() == ""
        logs.transfer_done(logs.get(), False, *fields.values())
    finally:
        structlog.reset_defaults()
    (line,) = out.getvalue().splitlines()
    assert "entry" not in line
    assert "file" not in line
    if fmt == "json":
        event = json.loads(line)
        assert list(event)[:3] == ["timestamp", "level", "event"]
        assert (event["level"], event["event"]) == ("warning", "transfer.done")
        del fields["entry"], fields["file"]
        assert list(event)[3:] == list(fields)
        assert event == {**event, **fields, "elapsed": 0.123457}
    else:
        assert line.startswith("timestamp=")
        assert "level=warning event=transfer.done" in line
        assert "result=7" in line
        assert "elapsed=0.123457" in line
        assert "error=refused" in line

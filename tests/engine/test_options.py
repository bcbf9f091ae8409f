"""Options of Easy and Multi fail where they are set: a wrong type is a TypeError, a wrong
value a ValueError, each naming the option; nothing a bad option does escapes later.

The property tests feed every option values of every type (and callbacks that raise or
return nonsense): construction and assignment raise TypeError/ValueError or nothing, and a
transfer built from whatever was accepted ends with a result code of its own while two
good transfers in the same multi finish with their bodies.
"""

from __future__ import annotations

import inspect
import math
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from servers import HELLO, HTTPServer, echo, respond

from hiperfifo.engine import Code, Easy, MCode, Multi, MultiError, NetworkPolicy
from hiperfifo.engine.options import EASY_OPTIONS, MULTI_OPTIONS
from hiperfifo.engine.testing import SelectorDriver

URL = "http://127.0.0.1:9/"  # never fetched by the construction tests


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"follow_location": "no"}, TypeError, "follow_location: must be a bool"),
        ({"follow_location": 1}, TypeError, "follow_location: must be a bool"),
        ({"timeout_ms": -5}, ValueError, "timeout_ms: must be an int >= 0"),
        ({"timeout_ms": "5"}, TypeError, "timeout_ms: must be an int >= 0"),
        ({"timeout_ms": 5.0}, TypeError, "timeout_ms: must be an int"),
        ({"max_redirs": "3"}, TypeError, "max_redirs: must be an int >= -1"),
        ({"max_redirs": -2}, ValueError, "max_redirs: must be an int >= -1"),
        ({"headers": {"a": "b"}}, TypeError, "headers: must be an iterable of (name, value)"),
        ({"headers": [("a", "b", "c")]}, TypeError, "headers: must be an iterable"),
        ({"headers": [("bad name", "b")]}, ValueError, "headers: must be header names"),
        ({"headers": [("X-A", "b\r\nInjected: 1")]}, ValueError, "headers: must be header values"),
        ({"headers": [("X-A", "caf\u00e9")]}, ValueError, "headers: must be header values"),
        ({"accept_encoding": 1}, TypeError, "accept_encoding: must be a str"),
        ({"write_function": "print"}, TypeError, "write_function: must be a callable"),
        ({"progress_function": 5}, TypeError, "progress_function: must be a callable"),
        ({"method": "GET /x"}, ValueError, "method: must be a str, an HTTP method token"),
        ({"method": b"GET"}, TypeError, "method: must be a str"),
        ({"body": "text"}, TypeError, "body: must be bytes"),
        ({"verify": None}, TypeError, "verify: must be a bool"),
        ({"ca_file": 3}, TypeError, "ca_file: must be a str or os.PathLike"),
        ({"proxy": 8080}, TypeError, "proxy: must be a str"),
        ({"proxy_env": [("http_proxy", "x")]}, TypeError, "proxy_env: must be a mapping"),
        ({"proxy_env": {"http_proxy": 1}}, TypeError, "proxy_env: must be a mapping"),
        ({"network_policy": ["10.0.0.0/8"]}, TypeError, "network_policy: must be a NetworkPolicy"),
        ({"max_filesize": -1}, ValueError, "max_filesize: must be an int >= 0"),
    ],
)
def test_a_bad_easy_option_fails_at_construction_naming_it(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """Each wrong type or value raises at once, the message naming the option and what it takes."""
    with pytest.raises(error) as caught:
        Easy(URL, **options)
    assert f"option {words}" in str(caught.value)


def test_a_url_that_is_not_a_str_fails_at_construction() -> None:
    """url=123 is a TypeError; a str that is no URL is the transfer's result, not an exception."""
    with pytest.raises(TypeError, match="option url: must be a str"):
        Easy(123)  # type: ignore[arg-type]
    assert Easy("not a url").url == "not a url"


def test_an_unknown_option_or_an_option_given_by_position_is_a_type_error() -> None:
    """Easy() takes the url, then options by keyword only, each one of EASY_OPTIONS."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'timeout'"):
        Easy(URL, timeout=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        Easy(URL, print)  # type: ignore[misc]
    with pytest.raises(TypeError, match="multiple values"):
        Easy(URL, **{"url": URL})  # type: ignore[misc]


def test_assignment_is_checked_and_a_refused_value_changes_nothing() -> None:
    """Options may be set later; a bad assignment raises and the old value stays."""
    easy = Easy(URL, timeout_ms=1000)
    with pytest.raises(TypeError, match="option timeout_ms"):
        easy.timeout_ms = "5"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="option timeout_ms"):
        easy.timeout_ms = -1
    assert easy.timeout_ms == 1000
    easy.timeout_ms = 2000
    assert easy.timeout_ms == 2000


def test_values_with_an_obvious_meaning_are_stored_as_that_meaning() -> None:
    """accept_encoding True/False, headers as a list, body as bytearray, ca_file as a Path."""
    easy = Easy(
        URL, accept_encoding=True, headers=[["X-A", "1"]], body=bytearray(b"x"), ca_file=Path("c")
    )  # type: ignore[arg-type, list-item]
    assert easy.accept_encoding == ""
    assert easy.headers == (("X-A", "1"),)
    assert easy.body == b"x"
    assert easy.ca_file == "c"
    assert Easy(URL, accept_encoding=False).accept_encoding is None
    assert Easy(URL, connect_timeout_ms=0).connect_timeout_ms == 300_000


def test_accept_encoding_true_asks_for_what_we_decode(
    serve: Callable[[HTTPServer], HTTPServer],
) -> None:
    """accept_encoding=True sends the same Accept-Encoding as "" (gzip, deflate)."""
    server = serve(HTTPServer({"/echo": echo()}))
    driver = SelectorDriver()
    try:
        answers = []
        for value in (True, ""):
            body = bytearray()
            easy = Easy(server.url("/echo"), accept_encoding=value, write_function=body.extend)
            driver.perform(easy, timeout=20)
            assert easy.result is Code.OK, easy.error
            answers.append(server.requests[-1].header("accept-encoding"))
    finally:
        driver.close()
    assert answers == ["gzip, deflate", "gzip, deflate"]


def test_write_function_none_discards_the_body(http_server: HTTPServer) -> None:
    """write_function=None (the default) reads the body and throws it away: OK, size counted."""
    driver = SelectorDriver()
    try:
        (easy,) = driver.perform(Easy(http_server.url(), write_function=None), timeout=20)
    finally:
        driver.close()
    assert (easy.result, easy.size_download) == (Code.OK, len(HELLO))


def test_a_fresh_easy_reads_its_signature_defaults_and_empty_getinfo() -> None:
    """Every option not given reads as Easy()'s documented default; getinfo as cleared."""
    easy = Easy(URL, private="mine")
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(Easy).parameters.items()
        if name != "url"
    }
    assert {name: getattr(easy, name) for name in defaults} == {**defaults, "private": "mine"}
    assert (easy.url, easy.effective_url, easy.result, easy.error) == (URL, URL, Code.OK, "")
    assert (easy.response_code, easy.content_length, easy.total_time) == (0, -1, 0.0)
    assert (easy.http_version, easy.http_version_wanted, easy.http_version_used) == ("2", "2", "")


def test_getinfo_is_read_only_and_cleared_when_the_easy_is_added_again(
    http_server: HTTPServer,
) -> None:
    """Only the engine writes what getinfo answers; add_handle clears the last run's."""
    easy = Easy(http_server.url(), write_function=None)
    with pytest.raises(AttributeError):
        easy.response_code = 200  # type: ignore[misc]
    driver = SelectorDriver()
    try:
        driver.perform(easy, timeout=20)
        assert (easy.result, easy.response_code, easy.http_version) == (Code.OK, 200, "1.1")
        info = easy.info  # the same answers, plain attributes
        assert (info.result, info.response_code, info.http_version_used) == (Code.OK, 200, "1.1")
        assert (info.size_download, info.effective_url) == (easy.size_download, easy.effective_url)
        driver.multi.add_handle(easy)  # cleared at once, before it runs again
        assert (easy.response_code, easy.size_download, easy.http_version_used) == (0, 0, "")
        driver.multi.remove_handle(easy)
    finally:
        driver.close()


class _Tagged(Easy):
    """An application's own Easy: an attribute of its own, another constructor."""

    def __init__(self, url: str, tag: str) -> None:
        super().__init__(url, write_function=self.collect)
        self.tag = tag
        self.body = b""
        self.got = bytearray()

    def collect(self, data: bytes) -> None:
        self.got += data


def test_an_interpreted_subclass_of_easy_runs(http_server: HTTPServer) -> None:
    """Applications subclass Easy: their attributes, options and results all work."""
    easy = _Tagged(http_server.url(), "t1")
    with pytest.raises(TypeError, match="option timeout_ms"):
        easy.timeout_ms = "5"  # type: ignore[assignment]
    driver = SelectorDriver()
    try:
        (done,) = driver.perform(easy, timeout=20)
    finally:
        driver.close()
    assert done is easy
    assert (easy.tag, easy.result, easy.response_code, bytes(easy.got)) == (
        "t1",
        Code.OK,
        200,
        HELLO,
    )


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"socket_function": 5}, TypeError, "socket_function: must be a callable"),
        ({"timer_function": "f"}, TypeError, "timer_function: must be a callable"),
        ({"max_total_connections": -1}, ValueError, "max_total_connections: must be an int"),
        ({"max_host_connections": "8"}, TypeError, "max_host_connections: must be an int"),
        ({"max_connects": 1.5}, TypeError, "max_connects: must be an int"),
        ({"max_idle_age": 0}, ValueError, "max_idle_age: must be a number of seconds > 0"),
        ({"clock": lambda: "now"}, ValueError, "clock: must be a callable () -> float"),
        ({"resolver_threads": 0}, ValueError, "resolver_threads: must be an int >= 1"),
        ({"getaddrinfo": "dns"}, TypeError, "getaddrinfo: must be a callable"),
    ],
)
def test_a_bad_multi_option_is_bad_function_argument_and_a_type_or_value_error(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """Multi's bad options raise MultiError(BAD_FUNCTION_ARGUMENT), also a TypeError/ValueError."""
    with pytest.raises(error) as caught:
        Multi(**options)
    assert isinstance(caught.value, MultiError)
    assert caught.value.code is MCode.BAD_FUNCTION_ARGUMENT
    assert f"option {words}" in str(caught.value)


def test_multi_options_set_later_are_checked() -> None:
    """socket_function, timer_function, max_connects and the limits are checked when set."""
    with Multi() as multi:
        with pytest.raises(TypeError, match="option socket_function"):
            multi.socket_function = 5  # type: ignore[assignment]
        with pytest.raises(TypeError, match="option timer_function"):
            multi.timer_function = object()  # type: ignore[assignment]
        with pytest.raises(TypeError, match="option max_connects"):
            multi.max_connects = "3"  # type: ignore[assignment]
        with pytest.raises(ValueError, match="option max_total_connections"):
            multi.max_total_connections = -1
        assert (multi.socket_function, multi.timer_function, multi.max_connects) == (
            None,
            None,
            None,
        )
        assert multi.max_total_connections == 0


# -- any value, any option -------------------------------------------------------------


class Evil:
    """A return value whose truth and comparisons raise."""

    def __bool__(self) -> bool:
        raise RuntimeError("no truth")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no equality")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("no inequality")

    __hash__ = object.__hash__


def _raises(*_args: Any) -> Any:
    raise RuntimeError("a callback that raises")


CALLBACKS = [
    lambda *_a: None,
    lambda *_a: 0,
    lambda *_a: -1,
    lambda *_a: True,
    lambda *_a: "text",
    lambda *_a: Evil(),
    lambda *_a: 10**30,
    lambda: None,  # called with the wrong number of arguments
    _raises,
    len,
]

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.binary(max_size=16),
    st.lists(st.integers(), max_size=3),
    st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=3),
    st.tuples(st.text(max_size=6), st.text(max_size=6)),
    st.dictionaries(
        st.text(max_size=6), st.one_of(st.text(max_size=6), st.integers()), max_size=3
    ),
    st.sampled_from(
        [
            object(),
            Evil(),
            NetworkPolicy(),
            NetworkPolicy.from_cidrs(deny=["127.0.0.0/8"]),
            Path("no/such/ca.pem"),
            bytearray(b"body"),
            memoryview(b"view"),
            1j,
            math.nan,
            (("X-A", "1"),),
            [("Accept", "*/*"), ("X-B", "")],
            {"http_proxy": "127.0.0.1:9", "no_proxy": "*"},
        ]
    ),
    st.sampled_from(CALLBACKS),
)


def _numeric_only(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    """No name ever leaves the process: anything but an address literal fails to resolve."""
    kwargs["flags"] = kwargs.get("flags", 0) | socket.AI_NUMERICHOST
    return socket.getaddrinfo(host, port, *args, **kwargs)


def _attempt(make: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """What make() returns, or the TypeError/ValueError it raised (anything else escapes)."""
    try:
        return make(), None
    except (TypeError, ValueError) as exc:
        return None, exc


LOCAL_ONLY = NetworkPolicy.from_cidrs(allow=["127.0.0.0/8"])


@pytest.fixture(scope="module")
def good_server() -> Iterator[HTTPServer]:
    server = HTTPServer({"/": respond(HELLO)})
    yield server
    server.close()


@pytest.fixture(scope="module")
def shared_driver() -> Iterator[SelectorDriver]:
    driver = SelectorDriver(getaddrinfo=_numeric_only, max_host_connections=4)
    yield driver
    driver.close()


def _run_beside_two_good_ones(driver: SelectorDriver, server: HTTPServer, odd: Easy) -> None:
    """Run `odd` with two good transfers in one multi: they finish, it has a Code."""
    bodies = [bytearray(), bytearray()]
    good = [Easy(server.url(), write_function=body.extend) for body in bodies]
    driver.perform(odd, *good, timeout=60)
    assert [easy.result for easy in good] == [Code.OK, Code.OK], [e.error for e in good]
    assert [bytes(body) for body in bodies] == [HELLO, HELLO]
    assert isinstance(odd.result, Code)


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(sorted(EASY_OPTIONS)), value=ANY_VALUE)
def test_any_value_for_any_easy_option_fails_at_once_or_not_at_all(
    good_server: HTTPServer, shared_driver: SelectorDriver, name: str, value: Any
) -> None:
    """Construction and assignment raise TypeError/ValueError or nothing; what was accepted
    runs to a result of its own while two good transfers in the same multi finish."""
    url = good_server.url()
    later = Easy(url)
    _attempt(lambda: setattr(later, name, value))
    if name == "url":
        odd, refused = _attempt(lambda: Easy(value, timeout_ms=20_000))
    else:
        odd, refused = _attempt(lambda: Easy(url, **{name: value}))
    if refused is not None:
        assert f"option {name}:" in str(refused)
        event("refused at construction")
        return
    assert isinstance(odd, Easy)
    event("accepted: run beside two good transfers")
    if name != "timeout_ms":
        odd.timeout_ms = 20_000
    if name != "network_policy":
        odd.network_policy = LOCAL_ONLY  # whatever a URL or proxy says, only loopback
    _run_beside_two_good_ones(shared_driver, good_server, odd)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(sorted(MULTI_OPTIONS)), value=ANY_VALUE)
def test_any_value_for_any_multi_option_fails_at_once_or_not_at_all(
    good_server: HTTPServer, name: str, value: Any
) -> None:
    """Multi(...) raises TypeError/ValueError (both BAD_FUNCTION_ARGUMENT) or nothing; a
    multi built from what was accepted runs transfers to the end."""
    with Multi() as later:
        if hasattr(type(later), name):  # the options that can be set later
            _, refused = _attempt(lambda: setattr(later, name, value))
            assert refused is None or isinstance(refused, MultiError)
    options = {name: value}
    if name != "getaddrinfo":
        options["getaddrinfo"] = _numeric_only
    multi, refused = _attempt(lambda: Multi(**options))
    if refused is not None:
        assert isinstance(refused, MultiError)
        assert refused.code is MCode.BAD_FUNCTION_ARGUMENT
        assert f"option {name}:" in str(refused)
        return
    assert isinstance(multi, Multi)
    driver = SelectorDriver(multi)  # the driver's own socket and timer callbacks
    try:
        odd = Easy(good_server.url(), network_policy=LOCAL_ONLY)
        _run_beside_two_good_ones(driver, good_server, odd)
        assert odd.result is Code.OK, odd.error
    finally:
        driver.close()

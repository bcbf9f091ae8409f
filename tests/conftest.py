"""Fixtures shared by the engine tests: local servers that always shut down, a driven Multi.

The engine is imported inside the fixtures, so that tests which do not need it
(test_layering.py) still run when it does not import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pytest
from names import Names
from servers import (
    HELLO,
    HTTPServer,
    chunked,
    echo,
    redirect,
    respond,
    take_unexpected,
    until_close,
)

S = TypeVar("S")


def _server_failure(errors: list[str]) -> str:
    return f"{len(errors)} unexpected exception(s) in test servers:\n\n" + "\n".join(errors)


def pytest_report_header() -> str:
    """Which engine runs: the pure package (make test) or mypyc's build (make test-compiled)."""
    try:
        import hiperfifo.engine.runner as runner
    except Exception as exc:  # the tests that need no engine still run
        return f"hiperfifo engine: does not import ({exc!r})"
    kind = "pure Python" if runner.__file__.endswith(".py") else "compiled by mypyc"
    return f"hiperfifo engine: {kind} ({runner.__file__})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A test that passed while one of its servers raised fails (the test phase, not teardown)."""
    result = yield
    errors = take_unexpected()
    if errors:
        pytest.fail(_server_failure(errors), pytrace=False)
    return result


@pytest.fixture(autouse=True)
def servers_raise_nothing() -> Iterator[None]:
    """Fail the test when a server it started raised unexpectedly (checked again after the
    servers are closed, which is when a handler still running at the end has finished)."""
    yield
    errors = take_unexpected()
    if errors:
        pytest.fail(_server_failure(errors), pytrace=False)


class Closable(Protocol):
    def close(self) -> None: ...


@pytest.fixture
def serve() -> Iterator[Callable[[S], S]]:
    """Register a server (or anything with close()) to be closed when the test ends."""
    started: list[Closable] = []

    def register(server: S) -> S:
        started.append(server)  # type: ignore[arg-type]
        return server

    yield register
    for server in reversed(started):
        server.close()


@pytest.fixture
def http_server(serve: Callable[[HTTPServer], HTTPServer]) -> HTTPServer:
    """A well-behaved keep-alive HTTP/1.1 server on 127.0.0.1 with a few scripted paths."""
    return serve(
        HTTPServer(
            {
                "/": respond(HELLO, headers=[("Content-Type", "text/plain")]),
                "/echo": echo(),
                "/chunked": chunked([b"hello, ", b"chunked ", b"world\n"]),
                "/close": until_close(b"delimited by close\n"),
                "/slow": respond(HELLO, delay=0.2),
                "/loop": redirect("/loop"),
                "/redirect": redirect("/"),
            }
        )
    )


@pytest.fixture(scope="session")
def ca() -> Any:
    """A throw-away certificate authority (trustme) for the TLS servers (servers.tls_context)."""
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CA's certificate as a PEM file, for Easy(ca_file=...) and --cacert."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def names() -> Names:
    """The test's name service: `names["x.test"] = ["127.0.0.1"]`, or
    `names.add("slow.test", "127.0.0.1", delay=0.5)`; other names resolve as usual.
    The drivers below hand it to their Multi as `getaddrinfo`."""
    return Names()


@pytest.fixture
def drv(names: Names) -> Iterator[Any]:
    """A SelectorDriver over a fresh Multi (names resolved through `names`), closed at the end."""
    from hiperfifo.engine.testing import SelectorDriver

    driver = SelectorDriver(record=True, getaddrinfo=names)
    yield driver
    driver.close()


@pytest.fixture
def make_driver(names: Names) -> Iterator[Callable[..., Any]]:
    """Build SelectorDrivers with Multi options (limits, clock; `getaddrinfo` defaults to
    `names`); all closed at the end."""
    from hiperfifo.engine.testing import SelectorDriver

    made: list[Any] = []

    def make(**multi_kwargs: Any) -> Any:
        multi_kwargs.setdefault("getaddrinfo", names)
        driver = SelectorDriver(record=True, **multi_kwargs)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


@pytest.fixture
def fetch(drv: Any) -> Callable[..., tuple[Any, bytes]]:
    """fetch(url, **easy_options) -> (easy, body): one transfer to completion on `drv`."""
    from hiperfifo.engine import Easy

    def run(url: str, *, timeout: float = 20.0, **options: Any) -> tuple[Any, bytes]:
        body = bytearray()
        options.setdefault("write_function", body.extend)
        easy = Easy(url, **options)
        drv.perform(easy, timeout=timeout)
        return easy, bytes(body)

    return run

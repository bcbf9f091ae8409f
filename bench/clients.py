"""The in-process contenders: `python -m bench.clients NAME URL COUNT CONCURRENCY [now]`.

Each fetches URL COUNT times, at most CONCURRENCY at once, and throws the
bodies away through a callback that counts their bytes. The protocol with
bench.run keeps imports and setup out of the measurement:

  child:  "ready"                 (everything imported, nothing fetched)
  parent: "go"                    (parent has read the child's CPU time)
  child:  {"ok": .., "bytes": .., "failed": .., "errors": [..]}
  parent: "exit"                  (parent has read the child's CPU time again)

The daemon and curl are separate programs; bench.run drives them itself.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


class Tally:
    """Counts responses, body bytes and failures the same way for every contender."""

    def __init__(self) -> None:
        self.ok = 0
        self.bytes = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def done(self, status: int, error: str = "") -> None:
        if status == 200 and not error:
            self.ok += 1
        else:
            self.failed += 1
            self.errors[error or f"HTTP {status}"] += 1

    def result(self) -> Result:
        return {
            "ok": self.ok,
            "bytes": self.bytes,
            "failed": self.failed,
            "errors": [f"{n} x {e}" for e, n in self.errors.most_common(5)],
        }


# -- hiperfifo's engine, on its stdlib selectors driver -----------------------------------


def engine_selector(url: str, count: int, concurrency: int) -> Result:
    from hiperfifo.engine import Code, Easy
    from hiperfifo.engine.testing import SelectorDriver

    tally = Tally()
    driver = SelectorDriver(max_total_connections=concurrency)
    for _ in range(count):
        driver.multi.add_handle(Easy(url, write_function=tally.write))
    messages = driver.run(timeout=3600)
    for message in messages:
        easy = message.easy
        error = "" if message.result == Code.OK else f"{message.result.name}: {easy.error}"
        tally.done(easy.response_code, error)
    tally.failed += count - len(messages)
    driver.close()
    return tally.result()


# -- hiperfifo's engine, on its pyuv driver (the daemon's) --------------------------------


def engine_pyuv(url: str, count: int, concurrency: int) -> Result:
    from hiperfifo.driver import Driver
    from hiperfifo.engine import Code, Easy, Message, Multi

    tally = Tally()
    multi = Multi(max_total_connections=concurrency)
    finished = 0

    def on_done(messages: list[Message]) -> None:
        nonlocal finished
        for message in messages:
            easy = message.easy
            multi.remove_handle(easy)
            error = "" if message.result == Code.OK else f"{message.result.name}: {easy.error}"
            tally.done(easy.response_code, error)
        finished += len(messages)
        if finished == count:
            driver.stop()

    driver = Driver(multi, on_done)
    for _ in range(count):
        multi.add_handle(Easy(url, write_function=tally.write))
    driver.run()
    multi.close()
    driver.close()
    return tally.result()


# -- hiperfifo.c's shape: the application's own pyuv loop over the public multi API --------
#
# EngineCShape (hiperfifo.engine) and PycurlPyuv (pycurl) are the same driver, line for line,
# over two libraries: one Poll per announced socket, one Timer, info_read after each
# socket_action, at most `concurrency` handles in the multi, the next URL started as one
# finishes, unique URLs. Each is fed in two shapes (SHAPES), so that neither library is
# measured only in the shape that suits it:
#   fresh  a new handle per URL, dropped when it is done: hiperfifo.c's own shape (its
#          new_conn() calls curl_easy_init, check_multi_info() curl_easy_cleanup)
#   reuse  `concurrency` handles made at the start, each added again with the next URL
#          (both keep the options set; the engine's add_handle clears what getinfo
#          answers, Easy.reset_info(), as libcurl does when a transfer starts)
# The Python each does per event is the same (bench/README.md, "Same driver, same shapes").

SHAPES = ("fresh", "reuse")


def unique(url: str, i: int) -> str:
    """The i-th URL of a run: the same resource, a URL of its own (`/1k?i=7`)."""
    return f"{url}{'&' if '?' in url else '?'}i={i}"


def engine_c_shape(url: str, count: int, concurrency: int) -> Result:
    """hiperfifo.c's shape: a new Easy per URL, at most `concurrency` in the multi."""
    return EngineCShape(url, count, concurrency, reuse=False).run()


def engine_c_shape_reuse(url: str, count: int, concurrency: int) -> Result:
    """`concurrency` Easy handles, each added again with the next URL as it finishes."""
    return EngineCShape(url, count, concurrency, reuse=True).run()


class EngineCShape:
    """hiperfifo.c in Python over hiperfifo.engine: one Poll per announced socket, one Timer,
    info_read after each socket_action. The application's own loop, not hiperfifo.driver."""

    def __init__(self, url: str, count: int, concurrency: int, reuse: bool) -> None:
        import pyuv

        from hiperfifo import engine

        self.engine, self.pyuv = engine, pyuv
        self.url = url
        self.count = count
        self.added = 0
        self.running = 0
        self.concurrency = concurrency
        self.reuse = reuse
        self.made = 0  # handles made (count fresh, concurrency reused)
        self.tally = Tally()
        self.loop = pyuv.Loop()
        self.timer = pyuv.Timer(self.loop)
        self.polls: dict[int, Any] = {}
        self.multi = engine.Multi(
            socket_function=self.socket_function,
            timer_function=self.timer_function,
            max_total_connections=concurrency,
        )
        self.uv_events = {
            engine.POLL_IN: pyuv.UV_READABLE,
            engine.POLL_OUT: pyuv.UV_WRITABLE,
            engine.POLL_INOUT: pyuv.UV_READABLE | pyuv.UV_WRITABLE,
        }

    def run(self) -> Result:
        for _ in range(min(self.concurrency, self.count)):
            self.start(None)
        self.loop.run()
        self.multi.close()
        return {**self.tally.result(), "handles": self.made}

    def start(self, easy: Any) -> None:
        """The next URL on `easy` (reuse), or on a new Easy (None: fresh, and the first ones)."""
        url = unique(self.url, self.added)
        if easy is None:
            easy = self.engine.Easy(url, write_function=self.tally.write)
            self.made += 1
        else:
            easy.url = url
        self.added += 1
        self.running += 1
        self.multi.add_handle(easy)

    def done(self, easy: Any) -> None:
        self.multi.remove_handle(easy)
        self.running -= 1
        if self.added < self.count:
            self.start(easy if self.reuse else None)

    def check_info(self) -> None:
        while (message := self.multi.info_read()) is not None:
            easy = message.easy
            if message.result:  # Code.OK is 0 (an IntEnum: int's own truth test)
                self.tally.done(easy.response_code, f"{message.result.name}: {easy.error}")
            else:
                self.tally.done(easy.response_code)
            self.done(easy)
        if self.running == 0:  # done: let loop.run() return
            self.timer.stop()
            for poll in self.polls.values():
                poll.close()
            self.polls.clear()

    def on_poll(self, poll: Any, events: int, error: int | None) -> None:
        engine, pyuv = self.engine, self.pyuv
        flags = engine.CSELECT_ERR if error is not None else 0
        if events & pyuv.UV_READABLE:
            flags |= engine.CSELECT_IN
        if events & pyuv.UV_WRITABLE:
            flags |= engine.CSELECT_OUT
        self.multi.socket_action(poll.fileno(), flags)
        self.check_info()

    def on_timeout(self, _timer: Any) -> None:
        self.multi.socket_action(self.engine.SOCKET_TIMEOUT, 0)
        self.check_info()

    def socket_function(self, _easy: Any, fd: int, what: int, _socketp: Any) -> None:
        if what == self.engine.POLL_REMOVE:
            poll = self.polls.pop(fd, None)
            if poll is not None:
                poll.stop()
                poll.close()
            return
        poll = self.polls.get(fd)
        if poll is None:
            poll = self.polls[fd] = self.pyuv.Poll(self.loop, fd)
        poll.start(self.uv_events[what], self.on_poll)

    def timer_function(self, timeout_ms: int) -> None:
        if timeout_ms < 0:
            self.timer.stop()
        else:
            self.timer.start(self.on_timeout, timeout_ms / 1000.0, 0.0)


def pycurl_pyuv(url: str, count: int, concurrency: int) -> Result:
    """A pool of `concurrency` Curl handles, each added again with the next URL."""
    return PycurlPyuv(url, count, concurrency, reuse=True).run()


def pycurl_pyuv_fresh(url: str, count: int, concurrency: int) -> Result:
    """hiperfifo.c's shape: a new Curl per URL (curl_easy_init), closed when done."""
    return PycurlPyuv(url, count, concurrency, reuse=False).run()


class PycurlPyuv:
    """hiperfifo.c in Python over pycurl: EngineCShape's driver, line for line."""

    def __init__(self, url: str, count: int, concurrency: int, reuse: bool) -> None:
        import pycurl
        import pyuv

        self.pycurl, self.pyuv = pycurl, pyuv
        self.url = url
        self.count = count
        self.added = 0
        self.running = 0
        self.concurrency = concurrency
        self.reuse = reuse
        self.made = 0
        self.tally = Tally()
        self.loop = pyuv.Loop()
        self.timer = pyuv.Timer(self.loop)
        self.polls: dict[int, Any] = {}
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, concurrency)
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self.socket_function)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self.timer_function)
        self.uv_events = {
            pycurl.POLL_IN: pyuv.UV_READABLE,
            pycurl.POLL_OUT: pyuv.UV_WRITABLE,
            pycurl.POLL_INOUT: pyuv.UV_READABLE | pyuv.UV_WRITABLE,
        }

    def run(self) -> Result:
        for _ in range(min(self.concurrency, self.count)):
            self.start(None)
        self.loop.run()
        self.multi.close()
        return {**self.tally.result(), "handles": self.made}

    def start(self, handle: Any) -> None:
        """The next URL on `handle` (reuse), or on a new Curl (None: fresh, and the first)."""
        pycurl = self.pycurl
        if handle is None:
            handle = pycurl.Curl()
            handle.setopt(pycurl.WRITEFUNCTION, self.tally.write)
            handle.setopt(pycurl.NOSIGNAL, 1)
            self.made += 1
        handle.setopt(pycurl.URL, unique(self.url, self.added))
        self.added += 1
        self.running += 1
        self.multi.add_handle(handle)

    def done(self, handle: Any) -> None:
        self.multi.remove_handle(handle)
        self.running -= 1
        if self.added < self.count and self.reuse:
            self.start(handle)
            return
        handle.close()  # curl_easy_cleanup, as hiperfifo.c's check_multi_info()
        if self.added < self.count:
            self.start(None)

    def check_info(self) -> None:
        code = self.pycurl.RESPONSE_CODE
        while True:
            _queued, ok_list, err_list = self.multi.info_read()
            for handle in ok_list:
                self.tally.done(handle.getinfo(code))
                self.done(handle)
            for handle, errno, message in err_list:
                self.tally.done(handle.getinfo(code), f"curl {errno}: {message}")
                self.done(handle)
            if not ok_list and not err_list:
                break
        if self.running == 0:  # done: let loop.run() return
            self.timer.stop()
            for poll in self.polls.values():
                poll.close()
            self.polls.clear()

    def on_poll(self, poll: Any, events: int, error: int | None) -> None:
        pycurl, pyuv = self.pycurl, self.pyuv
        flags = pycurl.CSELECT_ERR if error is not None else 0
        if events & pyuv.UV_READABLE:
            flags |= pycurl.CSELECT_IN
        if events & pyuv.UV_WRITABLE:
            flags |= pycurl.CSELECT_OUT
        self.multi.socket_action(poll.fileno(), flags)
        self.check_info()

    def on_timeout(self, _timer: Any) -> None:
        self.multi.socket_action(self.pycurl.SOCKET_TIMEOUT, 0)
        self.check_info()

    def socket_function(self, what: int, fd: int, _multi: Any, _socketp: Any) -> None:
        if what == self.pycurl.POLL_REMOVE:
            poll = self.polls.pop(fd, None)
            if poll is not None:
                poll.stop()
                poll.close()
            return
        poll = self.polls.get(fd)
        if poll is None:
            poll = self.polls[fd] = self.pyuv.Poll(self.loop, fd)
        poll.start(self.uv_events[what], self.on_poll)

    def timer_function(self, timeout_ms: int) -> None:
        if timeout_ms < 0:
            self.timer.stop()
        else:
            self.timer.start(self.on_timeout, timeout_ms / 1000.0, 0.0)


# -- aiohttp -------------------------------------------------------------------------------


def aiohttp_client(url: str, count: int, concurrency: int) -> Result:
    """`concurrency` workers over one ClientSession whose connector holds as many."""
    import asyncio

    import aiohttp

    tally = Tally()

    async def worker(session: aiohttp.ClientSession, todo: list[int]) -> None:
        while todo:
            todo.pop()
            try:
                async with session.get(url) as response:
                    async for chunk in response.content.iter_any():
                        tally.write(chunk)
                    tally.done(response.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                tally.done(0, f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            todo = list(range(count))
            await asyncio.gather(*(worker(session, todo) for _ in range(concurrency)))

    asyncio.run(main())
    return tally.result()


# -- httpx ---------------------------------------------------------------------------------


def httpx_client(url: str, count: int, concurrency: int) -> Result:
    """`concurrency` workers over one AsyncClient limited to as many connections."""
    import asyncio

    import httpx

    tally = Tally()

    async def worker(client: httpx.AsyncClient, todo: list[int]) -> None:
        while todo:
            todo.pop()
            try:
                async with client.stream("GET", url) as response:
                    async for chunk in response.aiter_raw():
                        tally.write(chunk)
                    tally.done(response.status_code)
            except (httpx.HTTPError, OSError) as exc:
                tally.done(0, f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=None) as client:
            todo = list(range(count))
            await asyncio.gather(*(worker(client, todo) for _ in range(concurrency)))

    asyncio.run(main())
    return tally.result()


CONTENDERS: dict[str, Callable[[str, int, int], Result]] = {
    "engine-selector": engine_selector,
    "engine-pyuv": engine_pyuv,
    "engine-c-shape": engine_c_shape,
    "engine-c-shape-reuse": engine_c_shape_reuse,
    "pycurl-pyuv": pycurl_pyuv,
    "pycurl-pyuv-fresh": pycurl_pyuv_fresh,
    "aiohttp": aiohttp_client,
    "httpx": httpx_client,
}

IMPORTS = {
    "engine-selector": ("hiperfifo.engine", "hiperfifo.engine.testing"),
    "engine-pyuv": ("hiperfifo.engine", "hiperfifo.driver"),
    "engine-c-shape": ("hiperfifo.engine", "pyuv"),
    "engine-c-shape-reuse": ("hiperfifo.engine", "pyuv"),
    "pycurl-pyuv": ("pycurl", "pyuv"),
    "pycurl-pyuv-fresh": ("pycurl", "pyuv"),
    "aiohttp": ("asyncio", "aiohttp"),
    "httpx": ("asyncio", "httpx"),
}


def main(argv: list[str]) -> int:
    import importlib

    name, url, count, concurrency = argv[0], argv[1], int(argv[2]), int(argv[3])
    now = argv[4:] == ["now"]  # no handshake: for a profiler wrapped around this process
    for module in IMPORTS[name]:
        importlib.import_module(module)
    run = CONTENDERS[name]
    if not now:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
    try:
        result = run(url, count, concurrency)
    except Exception as exc:  # reported, never timed as a success
        result = {"ok": 0, "bytes": 0, "failed": count, "errors": [repr(exc)]}
    print(json.dumps(result), flush=True)
    if not now:
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

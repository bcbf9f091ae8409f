"""The multi's API calls, compiled: what each public Multi method does behind its one frame.

Multi (multi.py) stays interpreted so that applications can subclass it, patch
its methods and get our MultiError/TypeError for a bad option; each of its
public methods is one line calling one method here. This room owns the rules
of an API call: entering it (a closed multi, a call from inside a callback:
RECURSIVE_API_CALL), the dead flag and the callback that killed it, the
socket and timer callbacks with the guard around them, the end of every call
(what HTTP/2 streams queued goes out, the resolver's socket, the timer), the
finished-message queue as info_read reads it, and add/remove bookkeeping.
It builds and holds the pieces the transfers share (pool, lease, resolver,
deadlines, runner).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from hiperfifo.engine.codes import POLL_IN, SOCKET_TIMEOUT, Code, MCode, MultiError, caused
from hiperfifo.engine.deadlines import Deadlines, Due
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.lease import Lease
from hiperfifo.engine.limits import IdleLimit
from hiperfifo.engine.pollset import PollSet
from hiperfifo.engine.pool import Pool
from hiperfifo.engine.resolver import GetAddrInfo, Resolver
from hiperfifo.engine.runner import Runner
from hiperfifo.engine.services import Services
from hiperfifo.engine.timer import Timer
from hiperfifo.engine.transfer import Transfer

SocketFunction = Callable[[Easy | None, int, int, Any], Any]
_NEW_TUPLE: Final = tuple.__new__  # a NamedTuple made in C, not by its Python __new__


class Message(NamedTuple):
    """One finished transfer, as curl_multi_info_read reports it."""

    easy: Easy
    result: Code
    msgs_in_queue: int


class MultiCore:
    """One multi's state behind its API: the guard, the callbacks, the dead flag, the
    transfers' shared pieces; `owner` is the public Multi (what `easy.multi` is)."""

    def __init__(
        self,
        owner: object,
        max_total_connections: int,
        max_host_connections: int,
        max_idle_age: float,
        clock: Callable[[], float],
        resolver_threads: int,
        getaddrinfo: GetAddrInfo | None,
        multiplex: bool,
        max_concurrent_streams: int,
    ) -> None:
        self.owner = owner
        self.socket_function: SocketFunction | None = None
        self.idle_limit = IdleLimit()
        self.clock = clock
        self.guard = CallbackGuard()
        self.timer = Timer(None, clock, self.guard)
        self.deadlines: Deadlines[Due] = Deadlines()
        self.pool = Pool(max_total_connections, max_host_connections, max_idle_age)
        self.resolver = Resolver(resolver_threads, getaddrinfo)
        self.pollset = PollSet(self.announce)
        self.lease = Lease(
            self.pool,
            clock,
            self.pollset.forget,
            self.idle_limit,
            multiplex=multiplex,
            max_streams=max_concurrent_streams,
        )
        self.svc = Services(clock, self.deadlines, self.lease, self.resolver, self.guard)
        self.runner = Runner(
            self.pollset, self.deadlines, self.resolver, clock, self.lease, self.svc.view
        )
        self.idle_limit.handles = self.runner.transfers
        self.dead: BaseException | None = None
        self.died_now: BaseException | None = None
        self.closed = False

    # --- the API calls (each: enter, work, finish_call) ------------------------------
    # The hot three (add_handle, remove_handle, socket_action) do enter()'s test inline:
    # one Python frame less each in the pure build.

    def enter(self) -> None:
        """The start of every API call but assign/info_read: refused when closed or when
        called from inside a callback (libcurl 8.22+: CURLM_RECURSIVE_API_CALL)."""
        if self.closed or self.guard.depth > 0:
            raise self.refused()
        self.lease.call += 1

    def refused(self) -> MultiError:
        if self.closed:
            return MultiError(MCode.BAD_HANDLE, "the multi is closed")
        return MultiError(MCode.RECURSIVE_API_CALL)

    def add_handle(self, easy: object) -> None:
        if self.closed or self.guard.depth > 0:
            raise self.refused()
        self.lease.call += 1
        if not isinstance(easy, Easy):
            raise MultiError(MCode.BAD_EASY_HANDLE, "not an Easy")
        if easy.multi is not None:
            raise MultiError(MCode.ADDED_ALREADY)
        if self.dead is not None:
            if self.runner.transfers:
                raise caused(MultiError(MCode.ABORTED_BY_CALLBACK, "the multi is dead"), self.dead)
            self.dead = None
            self.timer.reset()
        easy.multi = self.owner
        self.runner.add(Transfer(easy, self.svc))  # (it clears the easy's getinfo answers)
        self.finish_call()

    def remove_handle(self, easy: Any) -> None:
        if self.closed or self.guard.depth > 0:
            raise self.refused()
        self.lease.call += 1
        multi = easy.multi
        if multi is None:
            return
        if multi is not self.owner:
            raise MultiError(MCode.BAD_EASY_HANDLE, "the easy handle is in another multi")
        easy.multi = None
        self.runner.remove(easy)
        self.finish_call()

    def socket_action(self, sockfd: int, ev_bitmask: int) -> int:
        if self.closed or self.guard.depth > 0:
            raise self.refused()
        self.lease.call += 1
        if self.dead is not None:
            self.check_dead()
        runner = self.runner
        runner.in_action = True
        try:
            if sockfd == SOCKET_TIMEOUT:
                self.timer.force = True
            else:
                runner.act_on_fd(sockfd)
            runner.run_expired()
            runner.run_expired()  # one extra pass, as libcurl does, for what expired meanwhile
            self.finish_call()
        finally:
            runner.in_action = False
        return runner.alive

    def socket_all(self) -> int:
        self.enter()
        self.check_dead()
        runner = self.runner
        runner.in_action = True
        try:
            runner.collect_lookups()
            runner.run_all()
            runner.run_expired()
            self.finish_call()
        finally:
            runner.in_action = False
        return runner.alive

    def assign(self, fd: int, socketp: Any) -> None:
        if not self.pollset.assign(fd, socketp):
            raise MultiError(MCode.BAD_SOCKET, f"fd {fd} is not announced")

    def info_read(self) -> Message | None:
        messages = self.runner.messages
        for easy, result in messages.items():  # the oldest (no Easy property read here)
            del messages[easy]
            return _NEW_TUPLE(Message, (easy, result, len(messages)))  # (C, not Python)
        return None

    def timeout(self) -> int:
        self.enter()
        if self.dead is not None:
            return 0
        return self.timer.ms_until(self.deadlines.earliest())

    def easies(self) -> list[Easy]:
        """The easy handles added and not removed (close() removes each)."""
        return list(self.runner.transfers)

    def close(self) -> None:
        """Close every connection (its transfers removed first); unusable after."""
        for conn in self.pool.drain_idle():
            conn.sock.close()  # idle connections are not announced
        for shared in self.lease.drain_shared():  # HTTP/2 ones: idle now, so not announced
            shared.close()
            self.lease.close_socket(shared.conn.sock)
        self.pollset.drop_owner(self.resolver)
        self.resolver.close()
        self.closed = True

    # --- the pieces of a call -----------------------------------------------------------

    def check_dead(self) -> None:
        if self.dead is not None:
            raise caused(MultiError(MCode.ABORTED_BY_CALLBACK, "the multi is dead"), self.dead)

    def finish_call(self) -> None:
        """End of every API call: what HTTP/2 streams queued, resolver socket, timer, and a
        callback that raised."""
        self.runner.end_call()
        resolver = self.resolver
        if resolver.in_flight:
            self.pollset.sync(resolver, None, {resolver.wake_fd: POLL_IN})
        else:
            self.pollset.drop_owner(resolver)
        if self.dead is None:  # the timer callback, if the deadline moved
            try:
                self.timer.update(self.deadlines.earliest())
            except Exception as exc:
                self.die(exc)
        died = self.died_now
        self.died_now = None
        if died is not None:
            raise caused(MultiError(MCode.ABORTED_BY_CALLBACK, "a callback raised"), died)

    def announce(self, easy: Any, fd: int, what: int, socketp: Any) -> bool:
        """The socket callback, inside the guard (PollSet's Announce); False if it raised
        (the multi is dead then)."""
        function = self.socket_function
        if function is None:
            return True
        guard = self.guard
        guard.depth += 1  # guard.calling(), inlined: twice per reused connection
        try:
            function(easy, fd, what, socketp)
        except Exception as exc:
            self.die(exc)
            return False
        finally:
            guard.depth -= 1
        return True

    def die(self, exc: BaseException) -> None:
        if self.dead is None:
            self.dead = exc
        if self.died_now is None:
            self.died_now = exc

"""What a transfer does with the response: getinfo fields, callbacks, decoding, limits.

Receives the events of http1.py for one request and hands headers and body
to the application's callbacks under the re-entrancy guard. Every failure
is raised as TransferError with libcurl's code (WRITE_ERROR for a refusing
write or header callback, ABORTED_BY_CALLBACK for progress, 22, 61, 63);
the transfer turns it into its result. Redirect decisions stay with the
transfer: this module only says where a redirect points.
"""

from __future__ import annotations

from collections.abc import Callable

from hiperfifo.engine.codes import Code, TransferError, caused
from hiperfifo.engine.decoding import Decoder
from hiperfifo.engine.easy import InfoType
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.handle import Handle
from hiperfifo.engine.http1 import Data, End, Event, Head, ResponseHead, Trailers, header_value

REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))


class Response:
    """One response as it arrives, delivered to one Easy."""

    __slots__ = ("_clock", "_decoder", "_easy", "_guard", "_start", "head", "skip_body")

    def __init__(
        self, easy: Handle, guard: CallbackGuard, clock: Callable[[], float], start: float
    ) -> None:
        # The clock and the transfer's start, not the transfer: no reference cycle, so a
        # finished transfer is freed at once instead of waiting for the cyclic GC.
        self._easy = easy
        self._guard = guard
        self._clock = clock
        self._start = start
        self._decoder: Decoder | None = None
        self.head: ResponseHead | None = None
        self.skip_body = False

    def feed(self, events: list[Event]) -> bool:
        """Deliver one read's events; True when the response ended (nothing after it is ours)."""
        for event in events:
            if isinstance(event, Data):
                self.on_body(event.data)
            elif isinstance(event, End):
                self.on_end()
                return True
            elif isinstance(event, Trailers):
                self.on_trailers(event.lines)
            else:
                self.on_head(event.head, final=isinstance(event, Head))
        return False

    def on_head(self, head: ResponseHead, final: bool) -> None:
        easy = self._easy
        if not easy.starttransfer_time:
            easy.starttransfer_time = self._clock() - self._start
        easy.response_code = head.status
        easy.http_version_used = head.http_version
        if easy.debug_function is not None:  # curl's CURLINFO_HEADER_IN
            try:
                with self._guard.calling():
                    easy.debug_function(
                        InfoType.HEADER_IN, b"".join(head.lines()).decode("latin-1")
                    )
            except Exception as exc:
                raise caused(
                    TransferError(Code.ABORTED_BY_CALLBACK, f"debug callback raised: {exc!r}"), exc
                )
        if easy.header_function is not None:
            for line in head.lines():
                self._deliver(easy.header_function, line)
        if final:
            self._on_final_head(head)

    def on_trailers(self, lines: list[bytes], traced: bool = False) -> None:
        """Trailers go to the header callback, as libcurl writes them; `traced`: to the
        debug callback too (HEADER_IN), as libcurl shows HTTP/2 trailers (not chunked
        ones)."""
        easy = self._easy
        if traced and easy.debug_function is not None:
            try:
                with self._guard.calling():
                    easy.debug_function(InfoType.HEADER_IN, b"".join(lines).decode("latin-1"))
            except Exception as exc:
                raise caused(
                    TransferError(Code.ABORTED_BY_CALLBACK, f"debug callback raised: {exc!r}"), exc
                )
        function = easy.header_function
        if function is not None:
            for line in lines:
                self._deliver(function, line)

    def redirect_location(self) -> bytes | None:
        """Where to go next, when following redirects and this response is one."""
        head = self.head
        if head is None or head.status not in REDIRECT_CODES or not self._easy.follow_location:
            return None
        return header_value(head, b"location") or None  # libcurl ignores an empty Location

    def on_body(self, data: bytes) -> None:
        if self.skip_body:
            return
        easy = self._easy
        easy.size_download += len(data)
        if self._decoder is not None:
            for chunk in self._decoder.feed(data):
                self._write(chunk)
        else:
            if easy.max_filesize and easy.size_download > easy.max_filesize:
                raise TransferError(
                    Code.FILESIZE_EXCEEDED, f"Exceeded the maximum file size ({easy.max_filesize})"
                )
            self._write(data)
        self._progress()

    def on_end(self) -> None:
        if self._decoder is not None and not self.skip_body:
            self._decoder.finish()

    def _on_final_head(self, head: ResponseHead) -> None:
        easy = self._easy
        self.head = head
        if 300 <= head.status < 400:
            _check_locations(head)
        length = header_value(head, b"content-length")
        easy.content_length = int(length) if length and length.isdigit() else -1
        self.skip_body = self.redirect_location() is not None
        if self.skip_body:
            return
        if easy.fail_on_error and head.status >= 400:
            raise TransferError(
                Code.HTTP_RETURNED_ERROR, f"The requested URL returned error: {head.status}"
            )
        if easy.max_filesize and easy.content_length > easy.max_filesize:
            raise TransferError(
                Code.FILESIZE_EXCEEDED, f"Maximum file size exceeded ({easy.content_length})"
            )
        if (
            easy.accept_encoding is not None
            and header_value(head, b"content-encoding") is not None
        ):
            # Every Content-Encoding header, in order: libcurl stacks them all.
            listed = b",".join(v for k, v in head.headers if k.lower() == b"content-encoding")
            decoder = Decoder(listed.decode("latin-1"), easy.max_filesize)
            self._decoder = decoder if decoder.stages else None

    def _write(self, data: bytes) -> None:
        function = self._easy.write_function
        if function is not None:
            self._deliver(function, data)

    def _deliver(self, function: Callable[[bytes], int | None], data: bytes) -> None:
        """Call a write or header callback; a short count or an exception is WRITE_ERROR."""
        guard = self._guard
        guard.depth += 1  # guard.calling(), inlined: this runs for every block of every body
        try:
            taken = function(data)
            short = taken is not None and bool(taken != len(data))  # the callback's object
        except Exception as exc:
            raise caused(
                TransferError(Code.WRITE_ERROR, f"Failure writing output to destination: {exc!r}"),
                exc,
            )
        finally:
            guard.depth -= 1
        if short:
            raise TransferError(
                Code.WRITE_ERROR,
                "Failure writing output to destination, "
                f"passed {len(data)} returned {_shown(taken)}",
            )

    def _progress(self) -> None:
        easy = self._easy
        if easy.progress_function is None:
            return
        total = max(easy.content_length, 0)
        try:
            with self._guard.calling():
                abort = bool(easy.progress_function(total, easy.size_download, 0, 0))
        except Exception as exc:
            raise caused(
                TransferError(Code.ABORTED_BY_CALLBACK, f"Callback aborted: {exc!r}"), exc
            )
        if abort:
            raise TransferError(Code.ABORTED_BY_CALLBACK, "Callback aborted")


def _check_locations(head: ResponseHead) -> None:
    """libcurl refuses a 3xx with two different Locations (which one would it follow?);
    the same one twice is fine, an empty one is ignored."""
    found = {value for name, value in head.headers if value and name.lower() == b"location"}
    if len(found) > 1:
        raise TransferError(Code.WEIRD_SERVER_REPLY, "Multiple Location headers")


def _shown(value: object) -> str:
    """What a callback returned, for an error text, without calling its own methods."""
    return str(int(value)) if type(value) is int else type(value).__name__

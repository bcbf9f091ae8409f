"""TLS on a non-blocking socket, through ssl.MemoryBIO and SSLObject.

Why MemoryBIO rather than a non-blocking SSLSocket: the raw socket stays
ours, so readiness means what it says (an SSLSocket can hold decrypted bytes
that no poll will announce), a pooled connection can still be checked with
MSG_PEEK, and WANT_READ/WANT_WRITE become plain "bytes to send / bytes
needed" that the transfer turns into the socket's announced interest.
Handshake failures map here to libcurl's 60 and 35.
"""

from __future__ import annotations

import ssl

from hiperfifo.engine.codes import Code, TransferError, caused

_contexts: dict[tuple[bool, str | None, tuple[str, ...]], ssl.SSLContext] = {}
ALPN_H2 = ("h2", "http/1.1")  # what https offers by default, as libcurl with nghttp2
ALPN_HTTP11 = ("http/1.1",)


def client_context(
    verify: bool, ca_file: str | None, alpn: tuple[str, ...] = ALPN_HTTP11
) -> ssl.SSLContext:
    """A cached client context: system CAs (or `ca_file`), hostname check, ALPN `alpn`.

    An unusable `ca_file` is SSL_CACERT_BADFILE (77); without verification it is
    not read at all, as `curl -k --cacert` does.
    """
    ca_file = ca_file if verify else None
    key = (verify, ca_file, alpn)
    context = _contexts.get(key)
    if context is None:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise caused(
                TransferError(
                    Code.SSL_CACERT_BADFILE, f"error setting certificate file: {ca_file} ({exc})"
                ),
                exc,
            )
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(list(alpn))
        _contexts[key] = context
    return context


class TlsSession:
    """One TLS client session over memory buffers: raw bytes in and out, plaintext between."""

    __slots__ = ("_incoming", "_obj", "_outgoing")

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )

    def handshake(self) -> bool:
        """Advance the handshake; True when done. Raises TransferError(60 | 35)."""
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLCertVerificationError as exc:
            raise caused(
                TransferError(
                    Code.PEER_FAILED_VERIFICATION, f"SSL certificate problem: {exc.verify_message}"
                ),
                exc,
            )
        except ssl.SSLError as exc:
            raise caused(TransferError(Code.SSL_CONNECT_ERROR, f"TLS connect error: {exc}"), exc)
        return True

    def take_outgoing(self) -> bytes:
        """Raw bytes the session wants sent (handshake records, encrypted data)."""
        return self._outgoing.read()

    def feed(self, raw: bytes | memoryview) -> None:
        self._incoming.write(raw)

    def feed_eof(self) -> None:
        self._incoming.write_eof()

    def encrypt(self, plaintext: bytes) -> bytes:
        self._obj.write(plaintext)
        return self._outgoing.read()

    def decrypt(self) -> tuple[bytes, bool]:
        """Plaintext available now, and whether the peer closed the TLS stream."""
        chunks: list[bytes] = []
        try:
            while True:
                chunk = self._obj.read(256 * 1024)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            return b"".join(chunks), False
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b"".join(chunks), True

    def alpn(self) -> str | None:
        return self._obj.selected_alpn_protocol()

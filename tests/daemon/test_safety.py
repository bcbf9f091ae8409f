"""Safety at the daemon: forbidden networks (every hop), output files stay in DIR, no smuggling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hf_support import Daemon, spawn
from servers import HTTPServer, echo, redirect, respond


def redact_password(url: str) -> str:
    user, _, rest = url.partition("@")
    return user.rsplit(":", 1)[0] + ":***@" + rest


def stop(daemon: Daemon) -> int:
    daemon.write(b"stop\n")
    return daemon.wait()


def done_by_url(daemon: Daemon, count: int) -> dict[str, dict[str, Any]]:
    return {e["url"]: e for e in daemon.wait_for("transfer.done", count)}


@pytest.fixture
def server(serve: Callable[[HTTPServer], HTTPServer]) -> HTTPServer:
    """127.0.0.1: /ok answers; /to-2 redirects to 127.0.0.2; /echo echoes; else 404."""
    srv = serve(HTTPServer({"/ok": respond(b"fine"), "/echo": echo()}))
    srv.routes["/to-2"] = redirect(f"http://127.0.0.2:{srv.port}/ok")
    return srv


def test_denied_network_ends_with_7_and_says_why(
    run_daemon: Callable[..., Daemon], server: HTTPServer
) -> None:
    """--deny-network 127.0.0.0/8: result 7, the error names the network, no connection made."""
    daemon = run_daemon("--deny-network", "10.0.0.0/8", "--deny-network", "127.0.0.0/8")
    daemon.write(f"{server.url('/ok')}\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert (done["result"], done["result_name"], done["status"]) == (7, "COULDNT_CONNECT", None)
    assert "127.0.0.1 is in denied network 127.0.0.0/8" in done["error"]
    assert server.accepted == 0
    assert daemon.events("daemon.started")[0]["deny_network"] == ["10.0.0.0/8", "127.0.0.0/8"]
    assert stop(daemon) == 0


def test_redirect_into_a_denied_network_is_refused(
    run_daemon: Callable[..., Daemon], server: HTTPServer
) -> None:
    """127.0.0.1 allowed, 127.0.0.2 denied: a redirect hop to 127.0.0.2 ends with 7."""
    daemon = run_daemon("--deny-network", "127.0.0.2/32")
    daemon.write(f"{server.url('/to-2')}\n{server.url('/ok')}\n".encode())
    done = done_by_url(daemon, 2)
    hop = done[server.url("/to-2")]
    assert (hop["result"], hop["redirects"]) == (7, 1)
    assert "127.0.0.2 is in denied network 127.0.0.2/32" in hop["error"]
    assert done[server.url("/ok")]["result"] == 0
    assert server.paths() == ["/to-2", "/ok"] or sorted(server.paths()) == ["/ok", "/to-2"]
    assert stop(daemon) == 0


def test_allow_network_refuses_everything_else(
    run_daemon: Callable[..., Daemon], server: HTTPServer
) -> None:
    """--allow-network 127.0.0.1/32: 127.0.0.1 fetched; a redirect to 127.0.0.2 ends with 7."""
    daemon = run_daemon("--allow-network", "127.0.0.1/32")
    daemon.write(f"{server.url('/ok')}\n{server.url('/to-2')}\n".encode())
    done = done_by_url(daemon, 2)
    assert done[server.url("/ok")]["result"] == 0
    assert done[server.url("/to-2")]["result"] == 7
    assert "not in an allowed network" in done[server.url("/to-2")]["error"]
    assert stop(daemon) == 0


def test_public_only_refuses_loopback_private_and_metadata_addresses(
    run_daemon: Callable[..., Daemon], server: HTTPServer
) -> None:
    """--public-only: loopback, 10/8, 169.254.169.254, [::1], 0x7f.1 all end with 7 at once."""
    daemon = run_daemon("--public-only", "--connect-timeout", "5")
    targets = [
        server.url("/ok"),
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{server.port}/",
        f"http://0x7f.1:{server.port}/",
        f"http://[::ffff:127.0.0.1]:{server.port}/",
    ]
    daemon.write(("\n".join(targets) + "\n").encode())
    done = done_by_url(daemon, len(targets))
    assert {url: e["result"] for url, e in done.items()} == dict.fromkeys(targets, 7)
    assert all("denied network" in e["error"] for e in done.values())
    assert all(e["elapsed"] < 2 for e in done.values())
    assert server.accepted == 0
    assert stop(daemon) == 0


def test_bad_network_option_exits_2(tmp_path: Path) -> None:
    """--deny-network that is not a CIDR: exit 2 and a message naming the option."""
    proc = spawn(["--fifo", str(tmp_path / "f"), "--deny-network", "10.0.0.0/33"])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert b"--deny-network" in err
    assert b"10.0.0.0/33" in err


def test_output_files_never_leave_the_output_dir(
    run_daemon: Callable[..., Daemon], serve: Callable[[HTTPServer], HTTPServer], tmp_path: Path
) -> None:
    """Traversal-looking URLs and redirects: every file lands in DIR, nothing outside it."""
    srv = serve(HTTPServer(default=respond(b"body")))
    srv.routes["/r"] = redirect("/../../../../../tmp/escaped-by-redirect")
    srv.routes["/r2"] = redirect(f"http://127.0.0.1:{srv.port}/..%2F..%2Fescaped2")
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    daemon = run_daemon("--output", str(out))
    paths = [
        "/r",
        "/r2",
        "/..%2F..%2Foutside%2Fpwned",
        "/a/../../../../outside/pwned2",
        "/.hidden",
        "/%2e%2e",
        "/x/",
    ]
    daemon.write("".join(f"{srv.url(p)}\n" for p in paths).encode())
    done = daemon.wait_for("transfer.done", len(paths))
    assert all(e["result"] == 0 for e in done), [e["error"] for e in done]
    files = {Path(e["file"]) for e in done}
    assert len(files) == len(paths)
    assert all(f.parent == out and f.is_file() for f in files)
    assert all(not f.name.startswith(".") for f in files)
    assert sorted(os.listdir(out)) == sorted(f.name for f in files)  # no temporary left
    assert os.listdir(outside) == []
    assert not Path("/tmp/escaped-by-redirect").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", "outside", "in.fifo", "daemon0.log"]
    )
    assert stop(daemon) == 0


def test_nothing_is_smuggled_into_the_request_from_a_url(
    run_daemon: Callable[..., Daemon], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Encoded CR/LF stays encoded; raw controls never reach the server; no header is injected."""
    srv = serve(HTTPServer(default=respond(b"ok")))
    daemon = run_daemon()
    base = srv.url("")
    encoded = f"{base}/a%0D%0AX-Injected:%201%0D%0A"
    user = f"http://a%0d%0aX-Injected:%201@127.0.0.1:{srv.port}/u"
    separators = f"{base}/b\u2028X-Injected:1\u0085c"  # Unicode line breaks: one token
    daemon.write(f"{encoded}\n{user}\n{separators}\n".encode())
    daemon.write(f"{base}/p\rX-Injected: 1\n".encode())  # CR is a separator: three tokens
    done = daemon.wait_for("transfer.done", 4)
    results = {e["url"]: e["result"] for e in done}
    assert results == {encoded: 0, redact_password(user): 0, separators: 0, f"{base}/p": 0}
    assert len(daemon.wait_for("input.rejected", 2)) == 2  # "X-Injected:" and "1"
    for request in srv.requests:
        assert request.header("x-injected") is None
        assert all("\r" not in v and "\n" not in v for _, v in request.headers)
        assert request.target.isascii()
        assert not any(c in request.target for c in "\r\n\x85 ")
    targets = [r.target for r in srv.requests]
    assert "/a%0D%0AX-Injected:%201%0D%0A" in targets
    assert "/b%E2%80%A8X-Injected:1%C2%85c" in targets  # Unicode breaks: percent-encoded
    assert stop(daemon) == 0


PUBLIC_ADDRESS = "100.128.0.1"  # public: one past the end of CGNAT's 100.64.0.0/10


def private_network_namespace() -> list[str] | None:
    """The command prefix that runs a program in a fresh network namespace whose lo also has
    PUBLIC_ADDRESS, or None if this machine cannot (no user namespaces, no unshare or ip)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip") or "/usr/sbin/ip"
    if unshare is None or not Path(ip).exists():
        return None
    setup = f"{ip} link set lo up && {ip} addr add {PUBLIC_ADDRESS}/32 dev lo"
    prefix = [unshare, "--map-root-user", "--net", "sh", "-c", f'{setup} && exec "$0" "$@"']
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=20, check=False)
    return prefix if probe.returncode == 0 else None


def test_public_only_refuses_a_redirect_hop_into_loopback_private_or_metadata(
    tmp_path: Path,
) -> None:
    """--public-only: a server on a public address (in a private network namespace) is
    fetched; its 302s to 127.0.0.1 in five spellings, 169.254.169.254 and 10.1.2.3 all end
    with 7 on the second hop, and the loopback server there accepts nothing."""
    prefix = private_network_namespace()
    if prefix is None:
        pytest.skip("needs unshare (util-linux) with user namespaces and ip (iproute2)")
    script = Path(__file__).with_name("public_hop.py")
    proc = subprocess.run(
        [*prefix, sys.executable, str(script), str(tmp_path), PUBLIC_ADDRESS],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["server_errors"] == []
    done = {e["url"].rsplit("/", 1)[1]: e for e in report["done"]}
    assert (done["ok"]["result"], done["ok"]["status"]) == (0, 200)
    hops = [name for name in done if name != "ok"]
    assert len(hops) == 7
    for name in hops:
        event = done[name]
        assert (event["result"], event["redirects"]) == (7, 1), (name, event)
        assert "denied network" in event["error"], (name, event)
    assert sorted(report["public_paths"]) == sorted(f"/{name}" for name in done)
    assert report["inside_accepted"] == 0
    assert report["exit"] == 0

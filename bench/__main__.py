"""Run every benchmark in turn (`make bench`); each prints its table and writes bench/results/*.json.

.venv/bin/python -m bench [dispatch submit compose accuracy search]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = {
    "dispatch": [sys.executable, "-m", "bench.dispatch"],
    "submit": [sys.executable, "-m", "bench.submit"],
    "compose": [sys.executable, "-m", "bench.compose"],
    "accuracy": [sys.executable, "-m", "bench.accuracy"],
    "search": [sys.executable, "-m", "bench.search"],
}


def main(names: list[str]) -> int:
    failed = []
    for name in names or list(BENCHES):
        print(f"\n=== bench {name} ===", flush=True)
        if subprocess.run(BENCHES[name], cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

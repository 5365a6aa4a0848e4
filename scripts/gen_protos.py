"""Regenerate the committed gRPC stubs from proto/ (the one way they are made).

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: services/common/src)
The stubs land in `mediaflow/v1/` so their own imports (`from mediaflow.v1 import ...`) resolve.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def generate(out: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.glob("mediaflow/v1/*.proto"))
    (out / "mediaflow" / "v1").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / "mediaflow" / "v1").glob("*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "services" / "common" / "src"
    for path in generate(target):
        print(path.relative_to(target))

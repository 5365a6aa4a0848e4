"""The committed gRPC stubs are exactly what scripts/gen_protos.py makes from proto/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "services" / "common" / "src" / "mediaflow" / "v1"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_are_fresh(tmp_path: Path) -> None:
    generated = _generator().generate(tmp_path)
    names = {p.name for p in generated}
    assert {"transcriber_pb2_grpc.py", "compositor_pb2_grpc.py", "common_pb2.py"} <= names
    committed = {p.name for p in COMMITTED.glob("*.py*")}
    assert names == committed, f"stale stub set; run `make protos` (extra/missing: {names ^ committed})"
    for path in generated:
        fresh = path.read_text()
        assert (COMMITTED / path.name).read_text() == fresh, f"{path.name} is stale; run `make protos`"


def test_services_are_declared() -> None:
    from mediaflow.v1 import compositor_pb2, transcriber_pb2

    transcriber = transcriber_pb2.DESCRIPTOR.services_by_name["Transcriber"]
    compositor = compositor_pb2.DESCRIPTOR.services_by_name["Compositor"]
    assert {m.name for m in transcriber.methods} == {"Transcribe", "GetInfo"}
    assert {m.name for m in compositor.methods} == {"Probe", "GetCapabilities", "Thumbnail"}

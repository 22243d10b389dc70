"""The lab's names (bridge, container prefix, box version, ...) as ``lab/labenv.sh`` derives them:
one derivation shared by the shell scripts, the Vagrantfile and Python."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


def lab_env(root: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """``KEY=VALUE`` pairs from ``root/lab/labenv.sh`` (LAB_ID, LAB_BRIDGE, BOX_VERSION, ...); ``overrides``
    are environment variables it reads (VAGRANT_HOME, MINIKUBE_PY_BOX_CACHE, ...)."""
    out = subprocess.run(
        [str(root / "lab" / "labenv.sh")], capture_output=True, text=True, check=True, timeout=30,
        env={**os.environ, **(overrides or {})},
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

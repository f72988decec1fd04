"""A throw-away root for `systemd-analyze verify --root`: the system's unit files (for sysinit.target and
friends), /bin/kill for ExecReload, and the unit under test in /etc/systemd/system."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SYSTEM_UNITS = Path("/lib/systemd/system")


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing: run scripts/services.sh install (Debian package systemd)"
    return tool


def prepare_root(root: Path, unit: Path) -> None:
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin/kill")
    target = root / "etc/systemd/system" / unit.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.resolve() != unit.resolve():
        shutil.copy2(unit, target)


def verify(root: Path, unit_name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([systemd_analyze(), "verify", f"--root={root}", "--man=no", unit_name],
                          capture_output=True, text=True, timeout=60, check=False)

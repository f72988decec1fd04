"""deploy/burst-controller.service: `systemd-analyze verify` passes without a warning, and
`systemd-analyze security --offline=yes` rates it 2.0 or below; the options the daemon relies on are set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.deploy.systemd_root import prepare_root, systemd_analyze, verify

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "burst-controller.service"


def _stub_execstart(root: Path) -> None:
    exe = root / "opt/burst-controller/venv/bin/burstctl"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)


def test_verify_passes_without_warnings(tmp_path: Path) -> None:
    prepare_root(tmp_path, UNIT)
    _stub_execstart(tmp_path)
    result = verify(tmp_path, UNIT.name)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check can fail: a typo'd key and a missing ExecStart binary are reported."""
    prepare_root(tmp_path, UNIT)
    broken = tmp_path / "etc/systemd/system" / UNIT.name
    broken.write_text(broken.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = verify(tmp_path, UNIT.name)
    out = result.stdout + result.stderr
    assert "Unknown key 'WatchdogSecs'" in out
    assert "/opt/burst-controller/venv/bin/burstctl is not executable" in out
    assert result.returncode != 0


def _rating(unit: Path) -> tuple[float, str]:
    result = subprocess.run([systemd_analyze(), "security", "--offline=yes", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout + result.stderr)
    assert m, result.stdout[-2000:] + result.stderr
    return float(m.group(1)), m.group(2)


def test_security_rating_is_2_or_below(tmp_path: Path) -> None:
    rating, label = _rating(UNIT)
    assert rating <= 2.0, (rating, label)
    # and the rating is not a constant: the same unit without its hardening is exposed
    plain = tmp_path / "burst-controller.service"
    plain.write_text("[Service]\nType=notify\nExecStart=/opt/burst-controller/venv/bin/burstctl run\n")
    worse, _ = _rating(plain)
    assert worse > 5.0 > rating


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_options_the_daemon_relies_on() -> None:
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/opt/burst-controller/venv/bin/burstctl run --config /etc/burst-controller/controller.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and s["KillSignal"] == ["SIGTERM"]
    assert int(s["WatchdogSec"][0]) >= 30 and int(s["TimeoutStopSec"][0]) >= 60
    assert s["Restart"] == ["on-failure"]
    # the static user of deploy/burst-controller.sysusers: its group reads the root-owned config (a dynamic
    # user cannot), and the docker group comes from /etc/group only where install.sh added it
    assert s["User"] == ["burst-controller"] and s["Group"] == ["burst-controller"] and "DynamicUser" not in s
    assert "SupplementaryGroups" not in s and "LoadCredential" not in s
    sysusers = (REPO / "deploy/burst-controller.sysusers").read_text()
    assert re.search(r"^u burst-controller - .* /var/lib/burst-controller ", sysusers, re.MULTILINE), sysusers
    assert s["StateDirectory"] == ["burst-controller"] and s["ConfigurationDirectory"] == ["burst-controller"]
    assert s["StateDirectoryMode"] == ["0700"] and s["ConfigurationDirectoryMode"] == ["0750"]
    assert s["ProtectSystem"] == ["strict"] and s["CapabilityBoundingSet"] == [""] and s["UMask"] == ["0077"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    # room above the status endpoint's connection cap (1,000) and a bound on memory
    assert int(s["LimitNOFILE"][0]) >= 4096 and s["MemoryMax"] == ["1G"]
    assert "ProcSubset" not in s  # host metrics read /proc/stat, /proc/meminfo, /proc/loadavg

"""Policy reload: an invalid file is rejected with FILE:LINE:COL lines and the last good version stays;
a removed file (even the last one) removes its policies; unchanged files are not reloaded."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ruamel.yaml import YAML

from controller.loop.policyset import PolicySet
from tests.controller.fakes import policy_dict


def write(path: Path, data: dict) -> None:
    yaml = YAML()
    with path.open("w") as fh:
        yaml.dump(data, fh)
    # mtime granularity: make sure a rewrite within the same tick still looks changed
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_reload_keeps_the_last_good_version_of_an_invalid_file(tmp_path: Path) -> None:
    write(tmp_path / "web.yaml", policy_dict("web"))
    write(tmp_path / "api.yaml", policy_dict("api"))
    ps = PolicySet(tmp_path)
    first = ps.reload()
    assert sorted(first.added) == ["api", "web"] and first.problems == []
    assert not ps.changed()

    bad = policy_dict("web")
    bad["replicas"] = {"min": 5, "max": 2}
    write(tmp_path / "web.yaml", bad)
    assert ps.changed()
    second = ps.reload()
    assert second.kept == ["web"] and second.removed == [] and second.changed == []
    assert any(p.startswith(f"{tmp_path / 'web.yaml'}:") and "replicas.min" in p for p in second.problems)
    assert ps.policies["web"].replicas.max == 4  # the last good one
    assert ps.problems == second.problems

    fixed = policy_dict("web")
    fixed["replicas"] = {"min": 0, "max": 7}
    write(tmp_path / "web.yaml", fixed)
    third = ps.reload()
    assert third.changed == ["web"] and third.problems == [] and ps.policies["web"].replicas.max == 7


def test_removed_files_remove_their_policies(tmp_path: Path) -> None:
    write(tmp_path / "web.yaml", policy_dict("web"))
    write(tmp_path / "api.yaml", policy_dict("api"))
    ps = PolicySet(tmp_path)
    ps.reload()
    (tmp_path / "api.yaml").unlink()
    assert ps.reload().removed == ["api"]
    (tmp_path / "web.yaml").unlink()
    last = ps.reload()
    assert last.removed == ["web"] and last.problems == [] and ps.policies == {}


def test_an_unreadable_directory_keeps_everything(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    write(d / "web.yaml", policy_dict("web"))
    ps = PolicySet(d)
    ps.reload()
    (d / "web.yaml").unlink()
    d.rmdir()
    result = ps.reload()
    assert result.kept == ["web"] and result.removed == [] and result.problems
    _ = time

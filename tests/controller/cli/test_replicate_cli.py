"""`burstctl replicate` as users run it (a real process): --json, the per-layer log when stdout is not a
terminal, the progress bar on a terminal, clean errors, and a copy killed mid-way then resumed."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures_registry import REGISTRY_USERS

MB = 1 << 20
ROOT = Path(__file__).resolve().parents[3]


def burstctl(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command in-process through controller.cli.main.main (argument parsing, error handling, exit
    code) with captured, non-terminal stdout; the kill and terminal tests below use real processes."""
    from controller.cli.main import main

    rc = main(["replicate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_output(capsys, src_registry, dst_registry, src_pusher, repo_name):
    img = src_pusher.image(repo_name, "v1", [MB, MB], seed=201)
    rc, out, err = burstctl(capsys, f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}",
                            "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert set(result) == {"digest", "copied_blobs", "skipped_blobs", "mounted_blobs", "bytes_copied", "seconds"}
    assert result["digest"] == img.digest
    assert (result["copied_blobs"], result["skipped_blobs"], result["mounted_blobs"]) == (3, 0, 0)
    assert result["bytes_copied"] == sum(n for _, n in img.blobs) and 0 < result["seconds"] < 60
    rc, out, _ = burstctl(capsys, f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1",
                          "--json")
    again = json.loads(out)
    assert (rc, again["digest"], again["copied_blobs"], again["skipped_blobs"]) == (0, img.digest, 0, 3)


def test_plain_log_when_not_a_terminal(capsys, monkeypatch, src_registry, auth_registry, src_pusher, repo_name):
    img = src_pusher.image(repo_name, "v1", [2 * MB, MB], seed=202)
    monkeypatch.setenv("TEST_REG_CREDS", f"alice:{REGISTRY_USERS['alice']}")
    rc, out, err = burstctl(capsys, f"{src_registry.address}/{repo_name}:v1", f"{auth_registry.address}/{repo_name}:v1",
                            "--dst-creds-env", "TEST_REG_CREDS")
    assert rc == 0, err
    lines = out.splitlines()
    assert sorted(lines[:-1]) == sorted(f"copied   {d} {n / 1e6:.1f} MB" if n >= 1000 else f"copied   {d} {n} B"
                                        for d, n in img.blobs)
    assert lines[-1].startswith(f"{auth_registry.address}/{repo_name}:v1 is {img.digest}: 3 copied, 0 already present")
    assert "\x1b[" not in out  # no terminal control codes in a log
    assert REGISTRY_USERS["alice"] not in out + err


def test_errors_are_one_clean_line(capsys, src_registry, auth_registry, src_pusher, repo_name):
    src_pusher.image(repo_name, "v1", [MB], seed=203)
    rc, out, err = burstctl(capsys, f"{src_registry.address}/{repo_name}:v1", f"{auth_registry.address}/{repo_name}:v1",
                            "--dst-creds", "alice:not-the-password")
    assert rc == 1
    assert err.startswith(f"burstctl replicate: error: registry {auth_registry.address} rejected the credentials "
                          "of user 'alice'")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "not-the-password" not in err + out

    rc, out, err = burstctl(capsys, f"{src_registry.address}/{repo_name}:nope", f"{auth_registry.address}/{repo_name}:v1",
                            "--json")
    assert rc == 1 and out == ""
    assert f"not found on {src_registry.address}" in err and "Traceback" not in err

    rc, _, err = burstctl(capsys, f"{src_registry.address}/{repo_name}:v1", "plain-name:1")
    assert rc == 2 and "must name a registry" in err


def test_killed_copy_resumes_with_only_missing_blobs(src_registry, make_registry, src_pusher, repo_name):
    dst = make_registry()
    img = src_pusher.image(repo_name, "v1", [6 * MB] * 4, seed=204)
    args = [sys.executable, "-m", "controller.cli.main", "replicate", f"{src_registry.address}/{repo_name}:v1",
            f"{dst.address}/{repo_name}:v1", "--concurrency", "1"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("copied"), first + proc.stderr.read()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)  # mid-copy, no chance to clean up
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    rerun = subprocess.run([*args[:-2], "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           check=True)
    result = json.loads(rerun.stdout)
    assert result["digest"] == img.digest
    assert result["skipped_blobs"] >= 1 and result["copied_blobs"] >= 1  # at least one layer landed, not all
    assert result["skipped_blobs"] + result["copied_blobs"] == 5


def test_progress_bar_on_a_terminal(src_registry, dst_registry, src_pusher, repo_name):
    src_pusher.image(repo_name, "v1", [2 * MB, MB], seed=205)
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout is the pty
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "controller.cli.main", "replicate",
                                   f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1"],
                  {**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "layers 3 done" in text and "MB" in text  # rich's bar: layer count and bytes
    assert "3 copied" in text

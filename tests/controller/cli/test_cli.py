"""The `burstctl` entry point: lazy command loading and clean errors (never a traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controller.cli import main as cli


def test_only_the_chosen_command_module_is_imported():
    code = (
        "import sys; from controller.cli.main import build_parser; "
        "build_parser(['pki', 'init', '--dir', '/tmp/x']); "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'matplotlib', 'controller.daemon') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv,module", [
    (["events", "--json"], "status"),
    (["--log-level", "INFO", "policy", "validate", "x"], "policy"),
    (["-h"], None),
    (["nosuch"], None),
])
def test_chosen_module(argv, module):
    assert cli._chosen_module(argv) == module


def test_every_command_registers():
    parser = cli.build_parser()
    words = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert set(cli.COMMANDS) <= words
    assert set(cli.ALIASES) <= words


def test_config_error_is_problem_lines_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: Web!\n")
    rc = cli.main(["policy", "validate", str(bad)])
    out = capsys.readouterr()
    assert rc == 2
    assert f"{bad}:1:" in out.out + out.err
    assert "Traceback" not in out.out + out.err


def test_unexpected_error_has_no_traceback(monkeypatch, capsys):
    from controller.cli import pki

    def boom(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pki, "_init", boom)
    rc = cli.main(["pki", "init", "--dir", "/nonexistent"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "internal error: RuntimeError: disk on fire" in err
    assert "Traceback" not in err

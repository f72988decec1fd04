"""`burstctl policy validate` and `burstctl policy schema`: exit codes, output lines, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli.main import main
from policies.schema import REFERENCE_BEGIN, REFERENCE_END, policy_reference_markdown, policy_schema_text
from tests.policies.test_policy_errors import BASE

ROOT = Path(__file__).resolve().parents[2]
BURSTCTL = [sys.executable, "-m", "controller.cli.main"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BURSTCTL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_validate_shipped_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(ROOT / "deploy" / "policies.d")]) == 0
    out = capsys.readouterr()
    assert out.out == "OK: 3 policies in 3 files (api, batch, web)\n"
    assert out.err == ""


def test_validate_problems_in_a_subprocess(tmp_path: Path) -> None:
    """The real entry point, as ops and CI run it: exit 2, problem lines on stdout, summary on stderr."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("  min: 0", "  min: 9").replace("  max_per_hour: 5", "  max_per_hour: 5\n  cap: 1"))
    good = tmp_path / "good.yaml"
    good.write_text(BASE.replace("name: web", "name: other"))
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(b"name: [\xff\n")
    proc = _run("policy", "validate", str(bad), str(good), str(broken))
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"{bad}:12:8: replicas.min: min (9) is above max (4)",
        f"{bad}:27:3: budget.cap: unknown field 'cap' (fields here: max_per_hour, prices)",
        f"{broken}:1:8: not valid UTF-8 (byte 0xff): save the file as UTF-8",
    ]
    assert proc.stderr == "burstctl policy validate: 3 problems in 2 files (1 policy valid)\n"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_validate_quiet_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert main(["policy", "validate", "-q", str(good)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["policy", "validate", str(tmp_path / "missing.yaml")]) == 2
    out = capsys.readouterr()
    assert out.out == f"{tmp_path / 'missing.yaml'}:1:1: cannot read: No such file or directory\n"
    assert out.err == "burstctl policy validate: 1 problem in 0 files (0 policies valid)\n"


def test_validate_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["policy", "validate"])
    assert exc.value.code == 2
    assert "PATH" in capsys.readouterr().err


def test_schema_to_stdout_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == policy_schema_text()
    schema = json.loads(printed)
    assert schema["title"] == "burst-controller policy" and "name" in schema["required"]
    out = tmp_path / "schema.json"
    assert main(["policy", "schema", "--output", str(out)]) == 0
    assert out.read_text() == printed
    assert main(["policy", "schema", "--markdown"]) == 0
    assert capsys.readouterr().out == policy_reference_markdown()


def test_schema_update_doc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(f"# Guide\n\n{REFERENCE_BEGIN}\nold text\n{REFERENCE_END}\n\nafter\n")
    assert main(["policy", "schema", "--update-doc", str(doc)]) == 0
    text = doc.read_text()
    assert "old text" not in text and "| `max_per_hour` |" in text and text.endswith(f"{REFERENCE_END}\n\nafter\n")
    assert main(["policy", "schema", "--update-doc", str(doc)]) == 0
    assert doc.read_text() == text  # idempotent
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers\n")
    assert main(["policy", "schema", "--update-doc", str(plain)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"burstctl policy: error: cannot update {plain}: the markers") and "Traceback" not in err
    assert main(["policy", "schema", "--output", str(tmp_path / "no" / "dir" / "s.json")]) == 1
    assert "cannot write" in capsys.readouterr().err

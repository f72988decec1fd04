"""`burstctl simulate`: JSON keys and sane values, the table, --plot PNG, bad policy files (FILE:LINE:COL,
exit 2) and bad traces (FILE:LINE, exit 2). Runs the real CLI on short slices of the shipped traces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "deploy/policies.d/web.yaml"
TRACES = Path("/work/shared/traces")
KEYS = {"unserved_fraction", "overload_minutes", "instance_hours", "launches", "max_replicas", "penalized_cost"}


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    """Three days of the ELB trace (it has 10-minute gaps)."""
    lines = (TRACES / "nab_elb_request_count_8c0756.csv").read_text().splitlines()[:865]
    path = tmp_path / "elb.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["simulate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_has_every_key_with_sane_values(capsys, trace):
    rc, out, err = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert KEYS <= data.keys()
    assert KEYS <= data["baselines"]["hpa"].keys() and KEYS <= data["baselines"]["step"].keys()
    for figures in (data, data["baselines"]["hpa"], data["baselines"]["step"]):
        assert 0 <= figures["unserved_fraction"] < 1
        assert figures["instance_hours"] >= 0 and figures["launches"] >= 0 and figures["max_replicas"] >= 0
        assert 0 <= figures["overload_minutes"] <= 3 * 24 * 60 + 5
        # penalized cost = instance-hours + 10 x unserved replica-hours, never below the instance-hours
        assert figures["penalized_cost"] >= figures["instance_hours"]
    # the oracle serves everything with the least capacity: nobody serving everything uses less
    assert data["oracle_instance_hours"] > 0
    assert data["baselines"]["hpa"]["instance_hours"] >= data["oracle_instance_hours"] * 0.5
    s = data["settings"]
    assert s["replica_capacity"] == pytest.approx(s["onprem_capacity"] / 10)
    assert s["steps"] >= 864 * 5  # 864 five-minute samples (and two ten-minute gaps), every minute


def test_penalty_and_capacity_options_change_the_figures(capsys, trace):
    _, out, _ = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--json")
    base = json.loads(out)
    _, out, _ = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--json", "--unserved-penalty", "0")
    free = json.loads(out)
    assert free["penalized_cost"] == pytest.approx(free["instance_hours"])
    assert free["instance_hours"] == pytest.approx(base["instance_hours"])
    _, out, _ = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--json", "--onprem-capacity", "1000")
    big = json.loads(out)
    assert big["unserved_fraction"] == 0 and big["baselines"]["hpa"]["instance_hours"] == 0
    assert big["oracle_instance_hours"] == 0


def test_table_output(capsys, trace):
    rc, out, _ = run(capsys, "--policy", str(WEB), "--trace", str(trace))
    assert rc == 0
    for word in ("policy", "hpa", "step", "oracle", "penalized"):
        assert word in out


def test_plot_writes_a_png(capsys, trace, tmp_path):
    png = tmp_path / "out.png"
    rc, out, err = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--plot", str(png))
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_bad_policy_gives_file_line_col_and_exit_2(capsys, trace, tmp_path):
    bad = tmp_path / "web.yaml"
    text = WEB.read_text()
    bad.write_text(text.replace("strategy:\n", "strategy:\n  scale_in_bellow: 3\n", 1))
    rc, out, err = run(capsys, "--policy", str(bad), "--trace", str(trace))
    assert rc == 2
    line = text.splitlines().index("strategy:") + 2
    assert f"{bad}:{line}:3: strategy" in err and "scale_in_bellow" in err
    assert "Traceback" not in err


def test_bad_trace_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("timestamp,value\n2014-04-10 00:04:00,94\n2014-04-10 00:09:00,lots\n")
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(bad))
    assert rc == 2
    assert f"{bad}:3: demand 'lots' is not a number" in err
    bad.write_text("timestamp,value\n2014-04-10 00:09:00,1\n2014-04-10 00:04:00,2\n")
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(bad))
    assert rc == 2 and f"{bad}:3: timestamp" in err and "increasing time order" in err
    bad.write_text("timestamp,value\nyesterday,3\n")
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(bad))
    assert rc == 2 and f"{bad}:2: 'yesterday' is not a timestamp" in err
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(tmp_path / "missing.csv"))
    assert rc == 2 and "missing.csv: no such trace file" in err


def test_bad_option_values_are_usage_errors(capsys, trace):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--policy", str(WEB), "--trace", str(trace), "--boot-delay", "soon"])
    assert exc.value.code == 2
    assert "--boot-delay" in capsys.readouterr().err


def test_console_script_runs(trace):
    exe = shutil.which("burstctl", path=str(Path(sys.executable).parent))
    assert exe, "the burstctl console script is installed in the venv"
    proc = subprocess.run([exe, "simulate", "--policy", str(WEB), "--trace", str(trace), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert KEYS <= json.loads(proc.stdout).keys()


def test_report_is_one_self_contained_html_file(capsys, trace, tmp_path):
    page = tmp_path / "report.html"
    rc, out, err = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--report", str(page))
    assert rc == 0, err
    text = page.read_text()
    assert text.startswith("<!doctype html>") and '<svg id="chart"' in text and "<script>" in text
    # nothing to fetch: no external scripts, styles or images
    assert "src=" not in text and "href=" not in text and "http" not in text
    data = json.loads(text.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert len(data["t"]) == len(data["demand"]) == len(data["replicas"]) == len(data["hpa_capacity"]) > 4000
    assert "policy web" in text and "penalized cost" in text


def _policy_file(tmp_path: Path, **overrides) -> Path:
    from ruamel.yaml import YAML

    from tests.controller.fakes import policy_dict

    path = tmp_path / "ops.yaml"
    with path.open("w") as fh:
        YAML().dump(policy_dict("ops", **overrides), fh)
    return path


def test_capacities_come_from_the_policy_and_cost_from_its_prices(capsys, tmp_path, trace):
    cpu = tmp_path / "cpu.csv"  # the ELB counts scaled to a CPU percentage peaking near 160
    rows = [r.split(",") for r in trace.read_text().splitlines()[1:]]
    peak = max(float(v) for _, v in rows)
    cpu.write_text("timestamp,cpu\n" + "".join(f"{t},{160 * float(v) / peak:.2f}\n" for t, v in rows))
    policy = _policy_file(tmp_path, metric={"source": "workload_cpu", "window": "1m"},
                          strategy={"type": "target", "target": 70, "onprem_replicas": 4})
    rc, out, err = run(capsys, "--policy", str(policy), "--trace", str(cpu), "--json")
    assert rc == 0, err
    data = json.loads(out)
    # a CPU percentage of on-prem: on-prem saturates at 100; a replica is a quarter of it (onprem_replicas 4)
    assert data["settings"]["onprem_capacity"] == 100 and data["settings"]["replica_capacity"] == 25
    assert data["price_per_replica_hour"] == 0.62  # budget.prices of the first instance type
    assert data["cost"] == pytest.approx(data["instance_hours"] * 0.62)
    assert data["baselines"]["hpa"]["cost"] == pytest.approx(data["baselines"]["hpa"]["instance_hours"] * 0.62)
    assert data["verdict"].startswith(("verdict: PASS: ", "verdict: FAIL: "))

    rc, out, _ = run(capsys, "--policy", str(policy), "--trace", str(cpu))
    assert rc == 0
    assert "X=100 (the metric (workload_cpu) is a percentage of on-prem capacity)" in out
    assert "Y=25 (X / strategy.onprem_replicas 4)" in out and "cost at 0.62 per replica-hour" in out
    verdicts = [line for line in out.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1 and verdicts[0] == data["verdict"]


def test_a_csv_with_several_value_columns_needs_column(capsys, tmp_path, trace):
    rows = [r.split(",") for r in trace.read_text().splitlines()[1:]]
    wide = tmp_path / "wide.csv"
    wide.write_text("timestamp,requests,errors\n" + "".join(f"{t},{v},1\n" for t, v in rows))
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(wide), "--json")
    assert rc == 2
    assert f"{wide}:1: the trace has 2 value columns (requests, errors): choose one with --column" in err
    rc, out, err = run(capsys, "--policy", str(WEB), "--trace", str(wide), "--json", "--column", "requests")
    assert rc == 0, err
    by_name = json.loads(out)
    rc, out, _ = run(capsys, "--policy", str(WEB), "--trace", str(wide), "--json", "--column", "2")
    assert rc == 0 and json.loads(out) == by_name
    rc, out, _ = run(capsys, "--policy", str(WEB), "--trace", str(trace), "--json")
    assert json.loads(out)["instance_hours"] == by_name["instance_hours"]  # the same demand as the 2-column file
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(wide), "--column", "latency")
    assert rc == 2 and "--column 'latency': no such column (columns: requests, errors)" in err
    rc, _, err = run(capsys, "--policy", str(WEB), "--trace", str(wide), "--column", "9")
    assert rc == 2 and "--column 9: the value columns are 2 to 3" in err

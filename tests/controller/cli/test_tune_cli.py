"""`burstctl tune`: writes a policy that validates, with its $schema line and its comments; fits on the earlier
part of the history only and scores the later part from the cut on; clear errors. Runs the real CLI and the
real simulator on short synthetic histories."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.cli.tune import SCHEMA_MARK
from controller.sim.simulator import default_settings, run_hpa, run_policy
from controller.sim.trace import Trace
from controller.sim.tuning import score, split_trace, tune
from policies.loader import load_policies
from tests.policies.enginekit import BASE

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "deploy/policies.d/web.yaml"
sys.path.insert(0, str(ROOT / "bench"))

from synthetic_traces import write_csv

START = 1_700_006_400.0


def daily(days: int, seed: int, peak: float = 80.0) -> Trace:
    """Per-minute load: 100 at night, a midday bump of ``peak``, 5% noise."""
    rng = random.Random(seed)
    values = []
    for m in range(days * 1440):
        phase = (m % 1440) / 1440
        bump = peak * max(0.0, math.sin(math.pi * (phase - 0.3) / 0.5)) if 0.3 <= phase <= 0.8 else 0.0
        values.append((100 + bump) * (1 + 0.05 * rng.gauss(0, 1)))
    return Trace.from_samples([START + 60.0 * i for i in range(len(values))], values, "daily")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "web.csv"
    write_csv(daily(4, seed=1), path)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["tune", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_tune_writes_a_valid_policy_with_its_schema_line(capsys, tmp_path, history):
    out_path = tmp_path / "tuned" / "web.yaml"
    out_path.parent.mkdir()
    rc, out, err = run(capsys, str(WEB), "--history", str(history), "--output", str(out_path), "--report")
    assert rc == 0, err
    assert "held-back part:" in out and "before" in out and "after" in out and "hpa" in out
    assert "candidates on the fitting part" in out
    text = out_path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith(SCHEMA_MARK)
    # the $schema reference still points at the shipped schema from where the tuned file is
    assert (out_path.parent / first[len(SCHEMA_MARK):]).resolve() == (ROOT / "deploy/policy.schema.json").resolve()
    assert "# The storefront web tier" in text  # comments are kept
    result = load_policies([str(out_path)])
    assert result.problems == []
    tuned = result.policies["web"]
    assert tuned.strategy.type == "forecast"
    original = load_policies([str(WEB)]).policies["web"]
    # only strategy fields change
    assert tuned.model_dump(exclude={"strategy"}) == original.model_dump(exclude={"strategy"})


def test_the_fit_never_sees_the_held_back_part():
    policy = load_policies([str(WEB)]).policies["web"]
    a = daily(4, seed=2)
    b = daily(4, seed=2, peak=200.0)  # the same first two days, a different later part
    half = len(a.times) // 2
    b = Trace.from_samples(a.times, a.values[:half] + b.values[half:], "b")
    s = default_settings(a, 100.0, 10.0)
    ra, rb = tune(policy, a, s), tune(policy, b, s)
    fit_part, split = split_trace(a, 0.5, s.interval)
    assert max(fit_part.times) < split <= a.times[half]
    assert ra.split == rb.split == split
    assert ra.after == rb.after
    assert [t.outcome for t in ra.trials] == [t.outcome for t in rb.trials]
    # but the scores on the held-back part differ, and count only from the cut on
    sa, sb = score(ra, policy, a, s), score(rb, policy, b, s)
    assert sb.hpa.penalized_cost > sa.hpa.penalized_cost
    whole = run_hpa(a, s)
    assert sa.hpa.instance_hours < whole.instance_hours and sa.hpa.launches < whole.launches


def test_scoring_from_the_cut_counts_nothing_before_it():
    """A peak only in the first half: everything it costs falls before the cut."""
    values = [150.0 if 300 <= m < 600 else 50.0 for m in range(2 * 1440)]
    trace = Trace.from_samples([START + 60.0 * i for i in range(len(values))], values, "early-peak")
    policy = load_policies([str(WEB)]).policies["web"]
    s = default_settings(trace, 100.0, 10.0)
    whole = run_policy(policy, trace, s)
    later = run_policy(policy, trace, s, score_from=START + 1440 * 60.0)
    assert whole.launches > 0 and whole.instance_hours > 0
    assert later.launches == 0 and later.instance_hours == 0.0 and later.unserved_fraction == 0.0


@pytest.mark.parametrize(("args", "message"), [
    (["--fit-share", "1.5"], "must be between 0 and 1"),
    (["--fit-share", "half"], "is not a number"),
])
def test_bad_options_are_refused_by_name(capsys, history, args, message):
    with pytest.raises(SystemExit) as exc:
        run(capsys, str(WEB), "--history", str(history), *args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_history_is_named(capsys, tmp_path):
    rc, _, err = run(capsys, str(WEB), "--history", str(tmp_path / "none.csv"))
    assert rc == 2
    assert f"{tmp_path / 'none.csv'}: no such trace file" in err
    assert "Traceback" not in err


def test_a_history_too_short_to_split_is_refused(capsys, tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("timestamp,value\n1700000000,5\n1700000060,6\n", encoding="utf-8")
    rc, _, err = run(capsys, str(WEB), "--history", str(path), "--output", str(tmp_path / "out.yaml"))
    assert rc == 2
    assert "too few to fit on one part and score on another" in err
    assert not (tmp_path / "out.yaml").exists()


def test_a_threshold_policy_is_refused_with_the_types_that_tune(capsys, tmp_path, history):
    path = tmp_path / "threshold.yaml"
    path.write_text(json.dumps(BASE), encoding="utf-8")  # JSON is YAML; BASE has a threshold strategy
    rc, _, err = run(capsys, str(path), "--history", str(history))
    assert rc == 2
    assert "tune fits forecast, target, predictive strategies" in err

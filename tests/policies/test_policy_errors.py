"""Every class of policy-file mistake, with the exact FILE:LINE:COL and field path it is reported at.

Each case edits one line of a small valid policy (BASE) and lists the problems expected, as
"LINE:COL: path: message" where the message may be cut short with "..." (the rest is free text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.loader import load_policies

BASE = """\
name: web
workload:
  selector: {app: web}
  service_port: 80
metric:
  source: workload_cpu
strategy:
  type: threshold
  scale_out_above: 75
  scale_in_below: 40
replicas:
  min: 0
  max: 4
cloud:
  region: cn-hangzhou
  zones: [cn-hangzhou-h]
  instance_types: [ecs.c6.large]
  image_id: img-1
  vswitches: {cn-hangzhou-h: vsw-1}
  security_group: sg-1
registry:
  target: registry.example.com/team/web
traffic:
  haproxy: {socket: /run/haproxy/admin.sock, backend: web}
budget:
  max_per_hour: 5
  prices: {ecs.c6.large: 0.5}
"""

# (case id, line to replace (exact text of a BASE line, or "" to append), replacement, expected problems)
CASES: list[tuple[str, str, str, list[str]]] = [
    ("unknown top-level key with did-you-mean", "", "replicaz: 3",
     ["28:1: replicaz: unknown field 'replicaz'; did you mean 'replicas'?"]),
    ("unknown nested key, and the field it was meant as is missing", "  service_port: 80", "  service_prot: 80",
     ["2:1: workload.service_port: required field 'service_port' is missing",
      "4:3: workload.service_prot: unknown field 'service_prot'; did you mean 'service_port'?"]),
    ("unknown key without a close match lists the fields", "  max_per_hour: 5", "  max_per_hour: 5\n  currency: EUR",
     ["27:3: budget.currency: unknown field 'currency' (fields here: max_per_hour, prices)"]),
    ("unknown key inside the strategy union", "  scale_in_below: 40", "  scale_in_below: 40\n  sustaned_in: 5m",
     ["11:3: strategy.sustaned_in: unknown field 'sustaned_in'; did you mean 'sustained_in'?"]),
    ("wrong type", "  max: 4", "  max: four", ["13:8: replicas.max: expected a whole number, got 'four'"]),
    ("empty value points at its key", "  max: 4", "  max:",
     ["13:3: replicas.max: expected a whole number, got nothing (the value is empty)"]),
    ("mapping expected", "registry:", "registry: registry.example.com/team/web\nold_registry:",
     ["21:11: registry: expected a mapping (indented key: value lines), got 'registry.example.com/team/web'",
      "22:1: old_registry: unknown field..."]),
    ("scalar where a list is expected", "  zones: [cn-hangzhou-h]", "  zones: cn-hangzhou-h",
     ["16:10: cloud.zones: expected a list, got 'cn-hangzhou-h': write [cn-hangzhou-h] for a list of one"]),
    ("min above max", "  min: 0", "  min: 9", ["12:8: replicas.min: min (9) is above max (4)"]),
    ("min above max reported together with another bad field of the block", "  min: 0", "  min: 9\n  max_step_up: 0",
     ["12:8: replicas.min: min (9) is above max (4)", "13:16: replicas.max_step_up: must be at least 1, got 0"]),
    ("missing prometheus block reported together with a bad window", "  source: workload_cpu",
     "  source: prometheus\n  window: 5x",
     ["5:1: metric: source is prometheus: add a 'prometheus:' block saying what to read",
      "7:11: metric.window: '5x' is not a duration..."]),
    ("no block check from a default standing in for a bad value", "  service_port: 80",
     "  service_port: 80\n  health: {interval: bad, timeout: 7s}",
     ["5:22: workload.health.interval: 'bad' is not a duration..."]),
    ("bad duration", "  source: workload_cpu", "  source: workload_cpu\n  window: 5x",
     ["7:11: metric.window: '5x' is not a duration..."]),
    ("negative duration", "  source: workload_cpu", "  source: workload_cpu\n  window: -5",
     ["7:11: metric.window: a duration cannot be negative"]),
    ("scale-in threshold above scale-out", "  scale_in_below: 40", "  scale_in_below: 80",
     ["10:19: strategy.scale_in_below: must be below scale_out_above (75)..."]),
    ("unknown strategy type with did-you-mean", "  type: threshold", "  type: treshold",
     ["8:3: strategy: unknown type 'treshold': expected one of threshold, target, predictive, forecast; "
      "did you mean 'threshold'?"]),
    ("strategy without a type", "  type: threshold", "  # type: threshold",
     ["7:1: strategy.type: required field 'type' is missing: one of threshold, target, predictive, forecast"]),
    ("merge of something that is not a mapping", "budget:", "budget:\n  <<: [1]",
     ["26:8: budget: '<<' merges only mappings (an alias to key: value lines)"]),
    ("enum value with did-you-mean", "  source: workload_cpu", "  source: workload-cpu",
     ["6:11: metric.source: expected one of host_cpu, workload_cpu, prometheus, haproxy; got 'workload-cpu'; "
      "did you mean 'workload_cpu'?"]),
    ("prometheus source without its block", "  source: workload_cpu", "  source: prometheus",
     ["5:1: metric: source is prometheus: add a 'prometheus:' block saying what to read"]),
    ("haproxy metric block with another source", "  source: workload_cpu",
     "  source: workload_cpu\n  haproxy: {socket: /run/haproxy/admin.sock, backend: web}",
     ["7:3: metric.haproxy: only used when source is haproxy, but source is workload_cpu..."]),
    ("no traffic target", "  haproxy: {socket: /run/haproxy/admin.sock, backend: web}", "  haproxy: null",
     ["23:1: traffic: give exactly one of haproxy: or slb:"]),
    ("two traffic targets", "  haproxy: {socket: /run/haproxy/admin.sock, backend: web}",
     "  haproxy: {socket: /run/haproxy/admin.sock, backend: web}\n  slb: {load_balancer_id: lb-1, port: 80}",
     ["25:3: traffic.slb: give exactly one of haproxy: or slb:, not both"]),
    ("zone without a vswitch", "  zones: [cn-hangzhou-h]", "  zones: [cn-hangzhou-h, cn-hangzhou-i]",
     ["19:3: cloud.vswitches: no vSwitch for zone cn-hangzhou-i (every zone in cloud.zones needs one)"]),
    ("vswitch for a mistyped zone", "  vswitches: {cn-hangzhou-h: vsw-1}",
     "  vswitches: {cn-hangzhou-h: vsw-1, cn-hangzhuo-i: vsw-2}",
     ["19:37: cloud.vswitches[\"cn-hangzhuo-i\"]: zone cn-hangzhuo-i is not listed in cloud.zones..."]),
    ("zone outside the region", "  zones: [cn-hangzhou-h]", "  zones: [cn-shanghai-b]",
     ["16:11: cloud.zones[0]: zone cn-shanghai-b is not in region cn-hangzhou",
      "19:3: cloud.vswitches: no vSwitch for zone cn-shanghai-b...",
      "19:15: cloud.vswitches[\"cn-hangzhou-h\"]: zone cn-hangzhou-h is not listed in cloud.zones..."]),
    ("instance type without a price", "  instance_types: [ecs.c6.large]",
     "  instance_types: [ecs.c6.large, ecs.c5.large]",
     ["27:3: budget.prices: no price for instance type ecs.c5.large: every type in cloud.instance_types needs one"]),
    ("price under a mistyped instance type", "  prices: {ecs.c6.large: 0.5}", "  prices: {ecs.c6.larg: 0.5}",
     ["27:3: budget.prices: no price for instance type ecs.c6.large (is ecs.c6.larg a typo for it?)..."]),
    ("budget below the cheapest price", "  max_per_hour: 5", "  max_per_hour: 0.1",
     ["26:17: budget.max_per_hour: 0.1 per hour is below the cheapest instance type's price (0.5)..."]),
    ("bad instance type", "  instance_types: [ecs.c6.large]", "  instance_types: [c6.large]",
     ["17:20: cloud.instance_types[0]: 'c6.large' is not an ECS instance type: write it like ecs.c6.large"]),
    ("health timeout not below interval", "  service_port: 80",
     "  service_port: 80\n  health: {interval: 2s, timeout: 5s}",
     ["5:35: workload.health.timeout: must be below interval (2s), otherwise probes overlap: got 5s"]),
    ("health interval below the default timeout", "  service_port: 80",
     "  service_port: 80\n  health:\n    interval: 1s",
     ["5:3: workload.health.timeout: must be below interval (1s), otherwise probes overlap: got 2s"]),
    ("drain signal misspelt", "", "drain: {signal: SIGTREM}",
     ["28:17: drain.signal: 'SIGTREM' is not a signal name; did you mean SIGTERM?"]),
    ("drain with SIGKILL", "", "drain:\n  signal: KILL",
     ["29:11: drain.signal: SIGKILL cannot be handled, so open requests would be cut..."]),
    ("policy name", "name: web", "name: Web_Tier",
     ["1:7: name: 'Web_Tier' is not a valid policy name: use lowercase letters, digits and dashes "
      "(not at the start or end), like 'web-tier'"]),
    ("spot price limit missing", "  security_group: sg-1",
     "  security_group: sg-1\n  spot: {strategy: SpotWithPriceLimit}",
     ["21:3: cloud.spot: strategy SpotWithPriceLimit needs a price_limit"]),
    ("schedule floor above max", "",
     "schedule:\n  - {days: [mon], start: '09:00', end: '11:00', min: 6}",
     ["29:54: schedule[0].min: floor of 6 replicas is above replicas.max (4)"]),
    ("unknown key in a list item", "",
     "schedule:\n  - {days: [mon], start: '09:00', end: '11:00', minimum: 2}",
     ["29:5: schedule[0].min: required field 'min' is missing",
      "29:49: schedule[0].minimum: unknown field 'minimum'; did you mean 'min'?"]),
    ("registry target with scheme and tag", "  target: registry.example.com/team/web",
     "  target: https://registry.example.com/team/web:1",
     ["22:11: registry.target: 'https://registry.example.com/team/web:1': drop the scheme..."]),
    ("docker host without scheme", "  selector: {app: web}",
     "  selector: {app: web}\n  hosts: [/var/run/docker.sock]",
     ["4:11: workload.hosts[0]: '/var/run/docker.sock' needs a scheme: write unix:///var/run/docker.sock"]),
    ("relative mount destination", "  selector: {app: web}", "  selector: {app: web}\n  mounts: {data: drop}",
     ["4:12: workload.mounts.data: 'data' is not a mount destination..."]),
    ("mount action misspelt", "  selector: {app: web}",
     "  selector: {app: web}\n  mounts: {/etc/app.conf: copy, /run/secrets/db: copy-secrte}",
     [('4:50: workload.mounts["/run/secrets/db"]: expected one of drop, tmpfs, copy, copy-secret; '
       "got 'copy-secrte'; did you mean 'copy-secret'?")]),
    ("neither selector nor names", "  selector: {app: web}", "  selector: {}",
     ["2:1: workload: give a label selector or container names (or both)..."]),
    ("missing section", "budget:", "old_budget:",
     ["1:1: budget: required field 'budget' is missing", "25:1: old_budget: unknown field..."]),
    ("duplicate key", "", "name: web2", ["28:1: name: duplicate key 'name' (first at line 1, column 1)"]),
    ("unsupported tag", "  max: 4", "  max: !!python/object:os.system 4",
     ["13:8: replicas.max: unsupported YAML tag !!python/object:os.system..."]),
    ("YAML syntax error", "  zones: [cn-hangzhou-h]", "  zones: [cn-hangzhou-h",
     ["17:17: YAML syntax error: expected ',' or ']', but got ':'..."]),
    ("tab indentation", "  max: 4", "\tmax: 4", ["13:1: YAML syntax error: ...(indent with spaces, not tabs)"]),
]


def _expect(problem: str, expected: str) -> bool:
    return problem == expected or (expected.endswith("...") and problem.startswith(expected[:-3])) or (
        "..." in expected and problem.startswith(expected.split("...")[0]) and problem.endswith(expected.split("...")[1]))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_problem_is_reported_at_the_right_place(tmp_path: Path, case: tuple[str, str, str, list[str]]) -> None:
    _, old, new, expected = case
    lines = BASE.splitlines()
    if old:
        assert lines.count(old) == 1, f"test bug: {old!r} is not one BASE line"
        lines[lines.index(old)] = new
    else:
        lines.append(new)
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    result = load_policies([path])
    got = [str(p) for p in result.problems]
    prefix = f"{path}:"
    assert all(g.startswith(prefix) for g in got), got
    got = [g[len(prefix):] for g in got]
    assert len(got) == len(expected), "\n".join(got)
    for g, e in zip(got, expected, strict=True):
        assert _expect(g, e), f"\n got: {g}\nwant: {e}"
    assert not result.policies


def test_base_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE)
    result = load_policies([path])
    assert result.problems == []
    policy = result.policies["web"]
    assert policy.replicas.max == 4
    assert policy.cooldown.scale_in == 600.0
    assert policy.cloud.instance_types == ("ecs.c6.large",)
    assert policy.traffic.slb is None and policy.traffic.haproxy is not None
    assert policy.budget.prices["ecs.c6.large"] == 0.5
    assert policy.drain.signal == "SIGTERM"
    assert result.origins == {"web": f"{path}:1"}


def _per_node(tmp_path: Path, *replace: tuple[str, str]) -> list[str]:
    text = BASE.replace("  service_port: 80\n", "  service_port: 80\n  replicas_per_node: 2\n")
    for old, new in replace:
        assert old in text, f"test bug: {old!r}"
        text = text.replace(old, new)
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return [str(p)[len(f"{path}:"):] for p in load_policies([path]).problems]


def test_several_replicas_per_instance_need_haproxy(tmp_path: Path) -> None:
    got = _per_node(tmp_path, ("  haproxy: {socket: /run/haproxy/admin.sock, backend: web}",
                               "  slb: {load_balancer_id: lb-1, port: 80}"))
    want = ("5:22: workload.replicas_per_node: 2 replicas per instance need traffic.haproxy: an SLB backend "
            "is a whole instance, so it cannot address several replicas on one")
    assert got == [want], got


def test_minimum_replicas_cost_whole_instances_of_replicas_per_node(tmp_path: Path) -> None:
    # 4 replicas, 2 per instance: 2 instances at 0.5 fit a cap of 1.5 (4 instances would not)
    assert _per_node(tmp_path, ("  min: 0", "  min: 4"), ("  max_per_hour: 5", "  max_per_hour: 1.5")) == []
    got = _per_node(tmp_path, ("  min: 0", "  min: 4"), ("  max_per_hour: 5", "  max_per_hour: 0.9"))
    assert got == ["13:8: replicas.min: 4 replicas cost at least 1 per hour, above budget.max_per_hour (0.9)"], got


@pytest.mark.parametrize("strategy", ["target", "predictive", "forecast"])
def test_a_sizing_strategy_on_haproxy_sessions_is_refused_at_its_type(tmp_path: Path, strategy: str) -> None:
    """target, predictive and forecast read the metric as a percent of capacity; HAProxy sessions are a count,
    so such a policy would size the fleet from nonsense. The threshold strategy on sessions stays valid."""
    text = BASE.replace("  source: workload_cpu\n", "  source: haproxy\n  haproxy: {socket: /run/haproxy/admin.sock, "
                        "backend: web}\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    assert load_policies([path]).problems == []
    path.write_text(text.replace("  type: threshold\n  scale_out_above: 75\n  scale_in_below: 40\n",
                                 f"  type: {strategy}\n  target: 80\n  onprem_replicas: 10\n"))
    got = [str(p)[len(f"{path}:"):] for p in load_policies([path]).problems]
    assert len(got) == 1 and got[0].startswith(f"9:9: strategy.type: the {strategy} strategy sizes the fleet from a "
                                               "utilisation"), got
    assert "use type: threshold with its lines in sessions" in got[0]

"""Generated and mutated policy YAML for fuzzing the loader (tests/policies/test_policy_fuzz.py and
bench/fuzz_policies.py). Starts from the shipped examples and breaks them the ways people and tools do."""

from __future__ import annotations

import copy
import io
import random
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from policies.loader import LoadResult, Problem

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [p.read_text() for p in sorted((ROOT / "deploy" / "policies.d").glob("*.yaml"))]

_YAML_CHARS = ":-[]{}#&*!|>'\"%@`,? \t\n\\"
_VALUES: list[Any] = [
    -1, 0, 1, 3.5, 1e309, -0.0, "", None, True, False, "5x", "90s", "-5m", "09:00", "25:99", [], {}, [1, "a"],
    {"a": {"b": None}}, "ecs.c6.large", "cn-hangzhou-h", "SIGTERM", "x" * 300, "ü日本", "unix:///x", "\x00", "{{x}}",
    "lb-1", "sg-", "tcp://:0", 2**70, "threshold", "target", "predictive", "prometheus", "haproxy",
]
_TEXT_VALUES = ["-1", "~", "null", "''", '""', "[]", "{}", "*a", "&a x", "!!binary aGk=", "!Ref x", "1e999", "0x1f",
                "0o17", ".nan", ".inf", "2024-01-01", "12:30:00", "'unterminated", '"\\u0000"', "[a, [b, {c: d}]]",
                "|\n  block", ">-\n  folded", "? complex", "<<: {}", "y" * 200]
_KEYS = ["name", "workload", "metric", "strategy", "schedule", "replicas", "cloud", "budget", "traffic", "min",
         "max", "type", "source", "zones", "prices", "signal", "bogus", "nmae", "replica", "<<", "1", ""]


def _scalar_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines()) if ": " in line and not line.lstrip().startswith("#")]


def mutate_text(text: str, rng: random.Random) -> str:
    """1-5 text edits: characters, lines, indentation, values, keys, document markers."""
    for _ in range(rng.randint(1, 5)):
        lines = text.split("\n")
        kind = rng.randrange(9)
        if kind == 0 and text:
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(_YAML_CHARS) + text[i:]
        elif kind == 1 and text:
            i = rng.randrange(len(text))
            text = text[:i] + text[i + rng.randint(1, 8):]
        elif kind == 2 and lines:
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif kind == 3 and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif kind == 4 and lines:
            i = rng.randrange(len(lines))
            delta = rng.choice([-4, -2, -1, 1, 2, 4])
            lines[i] = " " * delta + lines[i] if delta > 0 else lines[i][-delta:]
            text = "\n".join(lines)
        elif kind == 5 and (candidates := _scalar_lines(text)):
            i = rng.choice(candidates)
            key = lines[i].split(": ", 1)[0]
            lines[i] = f"{key}: {rng.choice(_TEXT_VALUES)}"
            text = "\n".join(lines)
        elif kind == 6 and (candidates := _scalar_lines(text)):
            i = rng.choice(candidates)
            key, value = lines[i].split(": ", 1)
            stripped = key.lstrip()
            if stripped:
                j = rng.randrange(len(stripped))
                typo = stripped[:j] + stripped[j + 1:] + rng.choice("aeiostz_")
                lines[i] = key[: len(key) - len(stripped)] + typo + ": " + value
                text = "\n".join(lines)
        elif kind == 7:
            i = rng.randrange(len(lines) + 1)
            lines.insert(i, rng.choice(["---", "...", "--- !!map", "%YAML 1.1", "---\n---", "\t", "#"]))
            text = "\n".join(lines)
        else:
            text = text + "---\n" + rng.choice(SEEDS)
    return text


def _walk(data: Any, rng: random.Random) -> tuple[Any, Any] | None:
    """A random (container, key) inside ``data``."""
    spots: list[tuple[Any, Any]] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                spots.append((node, key))
                visit(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                spots.append((node, i))
                visit(value)

    visit(data)
    return rng.choice(spots) if spots else None


def mutate_data(data: Any, rng: random.Random) -> Any:
    """1-4 structural edits: drop a key, set a wrong value, add an unknown key, wrap a value in a list."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 4)):
        spot = _walk(data, rng)
        if spot is None:
            return data
        container, key = spot
        kind = rng.randrange(4)
        if kind == 0 and isinstance(container, dict):
            del container[key]
        elif kind == 1:
            container[key] = copy.deepcopy(rng.choice(_VALUES))
        elif kind == 2 and isinstance(container, dict):
            container[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_VALUES))
        else:
            container[key] = [container[key]]
    return data


def dump(data: Any) -> str:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()


@cache
def seed_data() -> list[Any]:
    yaml = YAML(typ="safe", pure=True)
    return [doc for text in SEEDS for doc in yaml.load_all(text)]


def generated_document(rng: random.Random) -> str:
    """One fuzz input: a mutated example (text or structure), or raw YAML-ish noise."""
    kind = rng.randrange(10)
    if kind < 5:
        return mutate_text(rng.choice(SEEDS), rng)
    if kind < 9:
        return dump(mutate_data(rng.choice(seed_data()), rng))
    return "".join(rng.choice(_YAML_CHARS + "abcxyz019") for _ in range(rng.randint(0, 200)))


def check_result(text: str, filename: str, result: LoadResult) -> None:
    """What the loader promises for any input: only clean, located problems."""
    lines = text.count("\n") + 2
    assert isinstance(result, LoadResult)
    for problem in result.problems:
        assert isinstance(problem, Problem)
        assert 1 <= problem.line <= lines and problem.col >= 1, problem
        assert problem.message and "Traceback" not in problem.message, problem
        assert str(problem).startswith(f"{filename}:{problem.line}:{problem.col}: "), problem
    names = [p.name for p in result.policies.values()]
    assert names == list(result.policies) and len(set(names)) == len(names)
    if not result.problems:
        assert result.policies, "no problem and no policy"


Check = Callable[[str, str, LoadResult], None]

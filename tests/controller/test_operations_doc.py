"""docs/operations.md stays true: its policy reference is the text generated from the policy model
(`burstctl policy schema --update-doc docs/operations.md` refreshes it), and every `burstctl` command and
option it shows exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from controller.cli.main import build_parser
from policies.schema import REFERENCE_BEGIN, REFERENCE_END, policy_reference_markdown, with_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_policy_reference_is_the_generated_text() -> None:
    document = DOC.read_text(encoding="utf-8")
    assert document.count(REFERENCE_BEGIN) == 1 and document.count(REFERENCE_END) == 1
    assert policy_reference_markdown().strip() in document
    assert with_reference(document) == document, (
        "docs/operations.md has a stale policy reference: run "
        "`.venv/bin/burstctl policy schema --update-doc docs/operations.md`")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_burstctl_command_and_option_shown_exists() -> None:
    commands = _subcommands(build_parser())
    shown = re.findall(r"burstctl ((?:[a-z]+\|)*[a-z]+)((?: +(?:--?[a-z-]+|[A-Z/.a-z0-9=_-]+))*)",
                       DOC.read_text(encoding="utf-8"))
    assert len(shown) > 10
    for names, rest in shown:
        for name in names.split("|"):
            assert name in commands, f"docs/operations.md shows `burstctl {name}`, which does not exist"
            sub = commands[name]
            words = rest.split()
            nested = _subcommands(sub)
            if nested and words and words[0] in nested:
                sub = nested[words[0]]
            options = {o for a in sub._actions for o in a.option_strings}
            for word in words:
                if word.startswith("--"):
                    assert word.split("=")[0] in options, f"`burstctl {name}` has no option {word}"

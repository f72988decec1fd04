"""The loader over files and directories: every problem in a file, many documents, duplicate names across
files, encodings, unreadable and pathological input (never an exception, never a hang)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from policies.loader import Problem, load_policies, load_policy_text
from tests.policies.test_policy_errors import BASE


def _named(name: str, text: str = BASE) -> str:
    return text.replace("name: web", f"name: {name}", 1)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_problem_in_a_file_is_reported_in_order(tmp_path: Path) -> None:
    text = (BASE.replace("  service_port: 80", "  service_port: http")
            .replace("  min: 0", "  min: 9")
            .replace("  source: workload_cpu", "  source: cpu")
            .replace("  max_per_hour: 5", "  max_per_hour: 5\n  monthly: 100"))
    path = _write(tmp_path / "p.yaml", text)
    result = load_policies([path])
    assert [f"{p.line}:{p.col}:{p.path}" for p in result.problems] == [
        "4:17:workload.service_port", "6:11:metric.source", "12:8:replicas.min", "27:3:budget.monthly"]
    assert result.policies == {}
    assert result.files == [str(path)]
    assert not result.ok


def test_many_documents_in_one_file(tmp_path: Path) -> None:
    broken = _named("api").replace("  max: 4", "  max: -1")
    text = BASE + "---\n" + broken + "---\n" + _named("batch")
    path = _write(tmp_path / "all.yaml", text)
    result = load_policies([path])
    # the second document starts on line 29: its `max:` value sits at 28 + 13
    assert [str(p) for p in result.problems] == [f"{path}:41:8: replicas.max: must be at least 0, got -1"]
    assert sorted(result.policies) == ["batch", "web"]
    assert result.origins["batch"] == f"{path}:57"


def test_duplicate_names_across_files_point_at_the_second(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.yaml", BASE)
    second = _write(tmp_path / "b.yaml", "# the same policy again\n" + BASE)
    result = load_policies([first, second])
    assert [str(p) for p in result.problems] == [
        f"{second}:2:7: name: duplicate policy name 'web': first defined at {first}:1"]
    assert list(result.policies) == ["web"]
    assert result.origins["web"] == f"{first}:1"


def test_duplicate_names_in_one_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.yaml", BASE + "---\n" + BASE)
    result = load_policies([path])
    assert [str(p) for p in result.problems] == [
        f"{path}:29:7: name: duplicate policy name 'web': first defined at {path}:1"]


def test_directory_means_its_yaml_files_sorted(tmp_path: Path) -> None:
    _write(tmp_path / "b.yml", _named("bee"))
    _write(tmp_path / "a.yaml", _named("ay"))
    _write(tmp_path / "notes.txt", "not: a policy")
    _write(tmp_path / ".web.yaml.swp", "editor junk")
    (tmp_path / "loop.yaml").symlink_to(tmp_path)  # a directory named like a policy file is not entered
    _write(tmp_path / "c.yaml", _named("cee").replace("  max: 4", "  max: lots"))
    result = load_policies([tmp_path])
    assert result.files == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"), str(tmp_path / "c.yaml")]
    assert sorted(result.policies) == ["ay", "bee"]
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'c.yaml'}:13:8: replicas.max: expected a whole number, got 'lots'"]


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.yaml", BASE)
    result = load_policies([path, tmp_path, str(path)])
    assert result.problems == [] and result.files == [str(path)]


@pytest.mark.parametrize("text,expected", [
    ("", ["1:1: no policy in this file (it is empty or only comments)"]),
    ("# nothing yet\n", ["1:1: no policy in this file (it is empty or only comments)"]),
    ("---\n", ["1:1: empty document: expected a policy..."]),
    (BASE + "---\n", ["28:1: empty document: expected a policy..."]),
    ("---\n---\n" + BASE, ["1:1: empty document: expected a policy..."]),
    ("- web\n- api\n", ["1:1: a policy document must be a mapping of key: value lines (name:, workload:, ...), "
                        "not a list"]),
    ("\n\njust some words\n", ["3:1: a policy document must be a mapping..."]),
    ("name: [web\n", ["2:1: YAML syntax error: expected ',' or ']', but got '<stream end>'..."]),
    ("a: b: c\n", [("1:5: YAML syntax error: mapping values are not allowed here (hint: this line is indented "
                   "deeper than the key above it, or a value holds ': ' and needs quotes)")]),
    ("name: web\n  x: 1\n", ["2:4: YAML syntax error: mapping values are not allowed here (hint: ..."]),
    ("a:\n  b: 1\n c: 2\n", [("3:2: YAML syntax error: expected <block end>, but found '<block mapping "
                               "start>' (hint: this line's indentation matches none of the keys above it; keys "
                               "of one block start in the same column)...")]),
    ("a:\n\tb: 1\n", [("2:1: YAML syntax error: found character '\\t' that cannot start any token (indent "
                      "with spaces, not tabs)")]),
    ("name: \"unterminated\n", [("2:1: YAML syntax error: found unexpected end of stream (hint: a quote or "
                                "bracket that is not closed)...")]),
    ("{a: 1, a: 2}\n", ["1:8: a: duplicate key 'a' (first at line 1, column 2)", "1:1: ..."]),
    ("*nothing\n", ["1:1: YAML syntax error: found undefined alias 'nothing'"]),
    ("? [a, b]\n: c\n", ["1:3: a key must be a plain word, not a list or mapping"]),
])
def test_document_level_problems(text: str, expected: list[str]) -> None:
    result = load_policy_text(text, "f.yaml")
    got = [str(p).removeprefix("f.yaml:") for p in result.problems]
    for want in expected:
        assert any(g == want or (want.endswith("...") and g.startswith(want[:-3])) for g in got), (want, got)
    assert got, "a problem must be reported"
    assert list(result.policies) == (["web"] if BASE in text else [])


def test_paths_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it would block forever: it must be refused without opening
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    result = load_policies([missing, fifo, empty_dir])
    assert [str(p) for p in result.problems] == [
        f"{missing}:1:1: cannot read: No such file or directory",
        f"{fifo}:1:1: not a regular file",
        f"{empty_dir}:1:1: no *.yaml or *.yml files in this directory",
    ]
    # tests run as root, where chmod 000 does not stop reads: make open() fail as it would for ops
    locked = _write(tmp_path / "locked.yaml", BASE)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(locked))

    monkeypatch.setattr("policies.loader.open", refuse, raising=False)
    assert [str(p) for p in load_policies([locked]).problems] == [f"{locked}:1:1: cannot read: Permission denied"]
    assert [str(p) for p in load_policies([]).problems] == ["<arguments>:1:1: no policy file or directory given"]


def test_encodings(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(BASE.replace("description", "x").encode() + "# café\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(BASE.encode("utf-16"))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + _named("bom").encode())
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"name: web\x00\n")
    result = load_policies([latin1, utf16, bom, nul])
    assert [str(p) for p in result.problems][:2] == [
        f"{latin1}:28:6: not valid UTF-8 (byte 0xe9): save the file as UTF-8",
        f"{utf16}:1:1: the file is UTF-16: save it as UTF-8",
    ]
    assert str(result.problems[2]) == (f"{nul}:1:10: YAML error: unacceptable character #x0000: "
                                       "special characters are not allowed")
    assert list(result.policies) == ["bom"]


@pytest.mark.parametrize("text,message", [
    # billion laughs: ten levels of ten aliases would expand to 10**10 values
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)),
     "document too large: more than 100000 values once aliases are expanded"),
    ("a: &a [*a]\n", "an alias refers to the node that contains it"),
    ("a: &a {b: *a}\n", "an alias refers to the node that contains it"),
    ("a: &a {<<: *a}\n", "a '<<' merge refers to the mapping that contains it"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested more than 50 levels deep"),
    ("a: " + "{b: " * 2000 + "1" + "}" * 2000 + "\n", "nested more than 50 levels deep"),
    ("a: " + "[" * 100_000 + "\n", "nested more than 50 levels deep"),
])
def test_pathological_yaml_is_a_problem_not_a_crash(text: str, message: str) -> None:
    started = time.monotonic()
    result = load_policy_text(text, "bomb.yaml")
    assert time.monotonic() - started < 20
    assert result.problems and all(isinstance(p, Problem) for p in result.problems)
    assert any(message in p.message for p in result.problems), [str(p) for p in result.problems]


def test_too_many_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real limit (30000) takes seconds to reach with the pure-Python reader; the check is the same.
    # Node 501 (mapping, key, list, then items) is the 498th item, at column 5 + 497 * 3
    monkeypatch.setattr("policies.yamltree.MAX_NODES", 500)
    result = load_policy_text("a: [" + "1, " * 600 + "]\n", "many.yaml")
    assert [str(p) for p in result.problems] == ["many.yaml:1:1496: too many values: more than 500 in one file (split it)"]


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (9 * 1024 * 1024) + "\n")
    result = load_policies([path])
    assert len(result.problems) == 1 and "too large" in result.problems[0].message


def test_merge_keys_and_anchors_work() -> None:
    text = BASE.replace("drain:", "") + "defaults: &d {timeout: 1m}\n"
    assert "defaults" in str(load_policy_text(text).problems[0])  # an unknown top-level key, as it should
    text = BASE + "drain: &d {timeout: 1m}\n"
    text = text.replace("traffic:\n", "traffic:\n  <<: {}\n")
    result = load_policy_text(text)
    assert result.problems == [] and result.policies["web"].drain.timeout == 60.0


def test_label_values_written_unquoted_are_strings() -> None:
    result = load_policy_text(BASE.replace("{app: web}", "{app: web, version: 2, canary: false}"))
    assert result.policies["web"].workload.selector == {"app": "web", "version": "2", "canary": "false"}


def test_problem_str_without_path() -> None:
    assert str(Problem("f.yaml", 3, 1, "", "empty document")) == "f.yaml:3:1: empty document"
    assert str(Problem("f.yaml", 3, 5, "replicas.min", "bad")) == "f.yaml:3:5: replicas.min: bad"

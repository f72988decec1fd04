"""Policy files -> validated ``Policy`` models, or every problem as ``FILE:LINE:COL: field.path: message``.

Called by `burstctl policy validate` and by the daemon when it (re)loads /etc/burst-controller/policies.d.
Never raises on bad input: unreadable files, YAML syntax errors, wrong values and duplicate names all
come back as ``Problem`` lines.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from policies.checks import PROBLEM_ERROR_TYPE, cross_section_problems
from policies.messages import block_checks_despite_errors, locate_errors
from policies.model import Policy
from policies.yamltree import MAX_TEXT, Document, Pos, parse_documents

__all__ = ["LoadResult", "Problem", "format_path", "load_policies", "load_policy_text"]

_MAX_BYTES = MAX_TEXT * 4  # UTF-8 is at most 4 bytes per character


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong in a policy file. ``line`` and ``col`` are 1-based; ``path`` is the dotted field
    path (``replicas.min``, ``schedule[0].start``, ``budget.prices["ecs.c6.large"]``), empty when the
    problem is with the file or document itself."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        # one problem, one line: a value quoted in the message may hold a newline (a YAML block scalar)
        message = self.message.replace("\r", "\\r").replace("\n", "\\n")
        return f"{where}: {self.path}: {message}" if self.path else f"{where}: {message}"


@dataclass(slots=True)
class LoadResult:
    """The valid policies by name, every problem found (sorted by file, line, column), the files read,
    and where each policy is defined (``FILE:LINE``)."""

    policies: dict[str, Policy] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif elem.isidentifier():
            out += f".{elem}" if out else elem
        else:
            out += '["' + elem.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


@cache
def _section_adapter(name: str) -> TypeAdapter[Any]:
    annotation: Any = Policy.model_fields[name].annotation
    return TypeAdapter(annotation)


def _partial_cross_checks(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Cross-section checks on the sections that are valid on their own, for a document that failed
    elsewhere (pydantic runs the Policy-level validator only when every field is valid)."""
    sections: dict[str, Any] = {}
    for name in ("cloud", "budget", "replicas", "schedule"):
        if name not in data:
            continue
        try:
            sections[name] = _section_adapter(name).validate_python(data[name])
        except ValidationError:
            sections[name] = None
    return cross_section_problems(SimpleNamespace(**sections))


class _FileLoader:
    """Accumulates policies and problems over many files, tracking names for the duplicate check."""

    def __init__(self) -> None:
        self.result = LoadResult()
        self._names: dict[str, str] = {}  # policy name -> "FILE:LINE" of its first definition
        self._read: set[Path] = set()  # a file named twice (or by its directory too) is read once

    def problem(self, file: str, pos: Pos, path: Sequence[str | int], message: str) -> None:
        self.result.problems.append(Problem(file, pos.line, pos.col, format_path(path), message))

    def text(self, text: str, file: str) -> None:
        self.result.files.append(file)
        documents, yaml_problems = parse_documents(text)
        for yp in yaml_problems:
            self.problem(file, yp.pos, yp.path, yp.message)
        if not documents and not yaml_problems:
            self.problem(file, Pos(1, 1), (), "no policy in this file (it is empty or only comments)")
        for doc in documents:
            self._document(doc, file)

    def _document(self, doc: Document, file: str) -> None:
        if doc.data is None:
            self.problem(file, doc.start, (), "empty document: expected a policy (name:, workload:, ...); "
                                              "remove the stray '---' if there is one")
            return
        if not isinstance(doc.data, dict):
            self.problem(file, doc.start, (), "a policy document must be a mapping of key: value lines "
                                              f"(name:, workload:, ...), not {_kind(doc.data)}")
            return
        name = doc.data.get("name")
        duplicate = False
        if isinstance(name, str) and name:
            pos = doc.values.get(("name",), doc.start)
            first = self._names.get(name)
            if first is not None:
                duplicate = True
                self.problem(file, pos, ("name",), f"duplicate policy name '{name}': first defined at {first}")
            else:
                self._names[name] = f"{file}:{pos.line}"
        try:
            policy = Policy.model_validate(doc.data)
        except ValidationError as exc:
            errors = [dict(e) for e in exc.errors()]
            located = locate_errors(Policy, doc.data, errors)
            checked_across = any(e["type"] == PROBLEM_ERROR_TYPE and not e["loc"] for e in errors)
            if not checked_across:
                for sub, message, anchor in _partial_cross_checks(doc.data):
                    located.append((sub, sub, anchor, message))
            located += block_checks_despite_errors(Policy, doc.data, errors)
            seen: set[tuple[Any, ...]] = set()
            for shown, where, anchor, message in located:
                pos = _position(doc, where, anchor)
                if (pos, shown, message) not in seen:
                    seen.add((pos, shown, message))
                    self.problem(file, pos, shown, message)
            return
        except Exception as exc:  # noqa: BLE001 - a validator bug must not become a traceback for ops
            self.problem(file, doc.start, (), f"internal error while validating: {type(exc).__name__}: {exc}")
            return
        if not duplicate and not doc.flawed:
            self.result.policies[policy.name] = policy
            self.result.origins[policy.name] = self._names[policy.name]

    def path(self, path: Path) -> None:
        shown = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            self.problem(shown, Pos(1, 1), (), f"cannot read: {exc.strerror or exc}")
            return
        if stat.S_ISDIR(st.st_mode):
            try:
                # not recursive: a sub-directory (or a symlink loop) named x.yaml is skipped
                entries = sorted(p for p in path.iterdir()
                                 if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and not p.is_dir())
            except OSError as exc:
                self.problem(shown, Pos(1, 1), (), f"cannot list directory: {exc.strerror or exc}")
                return
            if not entries:
                self.problem(shown, Pos(1, 1), (), "no *.yaml or *.yml files in this directory")
            for entry in entries:
                self.path(entry)
            return
        real = path.resolve()
        if real in self._read:
            return
        self._read.add(real)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            self.problem(shown, Pos(1, 1), (), "not a regular file")
            return
        if st.st_size > _MAX_BYTES:
            self.problem(shown, Pos(1, 1), (), f"file too large ({st.st_size} bytes; policy files are small)")
            return
        try:
            with open(path, "rb") as fh:
                data = fh.read(_MAX_BYTES + 1)
        except OSError as exc:
            self.problem(shown, Pos(1, 1), (), f"cannot read: {exc.strerror or exc}")
            return
        text = _decode(data, shown, self)
        if text is not None:
            self.text(text, shown)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text '{value[:40]}'"
    return f"the value {value!r}"


def _decode(data: bytes, file: str, loader: _FileLoader) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        loader.problem(file, Pos(1, 1), (), "the file is UTF-16: save it as UTF-8")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
        loader.problem(file, Pos(before.count(b"\n") + 1, col), (),
                       f"not valid UTF-8 (byte 0x{data[exc.start]:02x}): save the file as UTF-8")
        return None


def _value_at(data: Any, path: tuple[str | int, ...]) -> Any:
    for elem in path:
        try:
            data = data[elem]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _position(doc: Document, path: tuple[str | int, ...], anchor: str) -> Pos:
    """Where to point for ``path``: its key (unknown or misplaced keys, missing fields) or its value; for a
    path not in the file (a defaulted field), the key of the nearest enclosing block that is."""
    if path and anchor == "value" and path in doc.values:
        # an empty value has no text of its own: ruamel marks it where the next token starts
        return doc.keys[path] if _value_at(doc.data, path) is None and path in doc.keys else doc.values[path]
    for cut in range(len(path), 0, -1):
        sub = path[:cut]
        if sub in doc.keys:
            return doc.keys[sub]
        if sub in doc.values:  # a list item has no key
            return doc.values[sub]
    return doc.start


def load_policy_text(text: str, filename: str = "<string>") -> LoadResult:
    """Validate the policies in ``text`` (one per YAML document). Never raises on bad input."""
    loader = _FileLoader()
    loader.text(text, filename)
    loader.result.problems.sort(key=lambda p: (p.line, p.col))
    return loader.result


def load_policies(paths: Sequence[str | os.PathLike[str]]) -> LoadResult:
    """Validate every policy in ``paths`` (files, or directories meaning their *.yaml and *.yml files,
    sorted). Problems come sorted by file (in the order read), line and column. Never raises on bad input."""
    loader = _FileLoader()
    if not paths:
        loader.problem("<arguments>", Pos(1, 1), (), "no policy file or directory given")
    for path in paths:
        loader.path(Path(path))
    order = {f: i for i, f in enumerate(dict.fromkeys(p.file for p in loader.result.problems))}  # as read
    loader.result.problems.sort(key=lambda p: (order[p.file], p.line, p.col))
    return loader.result

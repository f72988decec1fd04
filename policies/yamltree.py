"""YAML text -> plain Python documents plus the line and column of every key and value.

Used by `policies.loader`. Composes with ruamel.yaml (so every node, scalars included, carries its mark)
and builds the values itself, which lets it report duplicate keys, unsupported tags and alias bombs as
located problems and keep going, instead of stopping at the first.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scanner import Scanner

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_TEXT", "MAX_VALUES", "Document", "Pos", "YamlProblem", "parse_documents"]

# The pure-Python YAML reader handles some tens of kilobytes a second on a busy host, so these bound the
# time any input can take to a few seconds. A policy file is a few kilobytes and a few hundred values.
MAX_TEXT = 256 * 1024  # characters per file
MAX_NODES = 30_000  # YAML nodes per file, as written
MAX_VALUES = 100_000  # values per document after alias expansion: stops "billion laughs"
MAX_DEPTH = 50  # nesting levels; a policy needs about five

Path = tuple[str | int, ...]
_MERGE = "tag:yaml.org,2002:merge"
_KNOWN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}


@dataclass(frozen=True, slots=True)
class Pos:
    """1-based line and column."""

    line: int
    col: int


@dataclass(frozen=True, slots=True)
class YamlProblem:
    pos: Pos
    path: Path
    message: str


@dataclass(slots=True)
class Document:
    """One YAML document: its value, where it starts, and where each key and value sits (by path)."""

    data: Any
    start: Pos
    flawed: bool = False  # the YAML itself had problems (duplicate keys, tags): never a valid policy
    keys: dict[Path, Pos] = field(default_factory=dict)
    values: dict[Path, Pos] = field(default_factory=dict)


class _Abort(Exception):
    """The document cannot be built (too big, too deep, recursive); carries the located reason."""

    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


def _tag(node: Node) -> str:
    return str(node.tag).replace("tag:yaml.org,2002:", "!!")


def _pos(node: Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_pos(mark: Any) -> Pos:
    return Pos(int(getattr(mark, "line", 0)) + 1, int(getattr(mark, "column", 0)) + 1)


class _LimitError(MarkedYAMLError):
    """Input beyond what a policy file can need; raised while scanning, before the work explodes."""


class _BoundedScanner(Scanner):
    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        # each open flow level makes every later token slower: deep [[[[...]]]] would take minutes
        if len(self.flow_context) >= MAX_DEPTH:
            raise _LimitError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class _BoundedComposer(Composer):
    _nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _LimitError(problem=f"too many values: more than {MAX_NODES} in one file (split it)",
                              problem_mark=self.parser.peek_event().start_mark)
        return super().compose_node(parent, index)


# the parser's words for the usual slips, and what to look at
_HINTS = (
    ("mapping values are not allowed", (" (hint: this line is indented deeper than the key above it, or a "
                                        "value holds ': ' and needs quotes)")),
    ("expected <block end>", (" (hint: this line's indentation matches none of the keys above it; keys of "
                              "one block start in the same column)")),
    ("did not find expected key", (" (hint: this line's indentation matches none of the keys above it, or "
                                   "a list item '- ' is mixed with keys)")),
    ("could not find expected ':'", " (hint: a key without its ':', or a quote that is not closed)"),
    ("found unexpected end of stream", " (hint: a quote or bracket that is not closed)"),
)


def _syntax_message(exc: MarkedYAMLError) -> str:
    if isinstance(exc, _LimitError):
        return str(exc.problem)
    problem = (exc.problem or exc.context or "malformed YAML").strip()
    if "\\t" in problem or "'\\t'" in problem or "\t" in problem:
        problem += " (indent with spaces, not tabs)"
    else:
        problem += next((hint for key, hint in _HINTS if key in problem), "")
    context = (exc.context or "").strip()
    if context and exc.problem and exc.context_mark is not None and exc.context_mark is not exc.problem_mark:
        where = _mark_pos(exc.context_mark)
        problem += f" ({context} at line {where.line}, column {where.col})"
    return f"YAML syntax error: {problem}"


class _Builder:
    """Builds one document's values from its node graph, recording positions and problems."""

    def __init__(self, yaml: YAML, doc: Document, problems: list[YamlProblem]) -> None:
        self._constructor = yaml.constructor
        self._doc = doc
        self._problems = problems
        self._budget = MAX_VALUES
        self._open: set[int] = set()  # nodes being built: reaching one again means a recursive alias

    def build(self, node: Node, path: Path, depth: int = 0) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _Abort(_pos(node), f"document too large: more than {MAX_VALUES} values once aliases are "
                                     "expanded (a policy needs a few dozen)")
        if depth > MAX_DEPTH:
            raise _Abort(_pos(node), f"nested more than {MAX_DEPTH} levels deep")
        self._doc.values.setdefault(path, _pos(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            raise _Abort(_pos(node), "an alias refers to the node that contains it (recursive structure)")
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._tag_check(node, path, "tag:yaml.org,2002:seq")
                return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self._tag_check(node, path, "tag:yaml.org,2002:map")
                return self._mapping(node, path, depth)
        finally:
            self._open.discard(id(node))
        raise _Abort(_pos(node), f"unsupported YAML node {type(node).__name__}")

    def _tag_check(self, node: Node, path: Path, expected: str) -> None:
        if node.tag not in (expected, None) and not str(node.tag).startswith("tag:yaml.org,2002:"):
            self._problem(_pos(node), path, f"unsupported YAML tag {_tag(node)}: policy files use plain values")

    def _problem(self, pos: Pos, path: Path, message: str) -> None:
        self._problems.append(YamlProblem(pos, path, message))

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        if node.tag not in _KNOWN_TAGS:
            self._problem(_pos(node), path, f"unsupported YAML tag {_tag(node)}: policy files use plain values")
            return node.value
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception as exc:  # noqa: BLE001 - any value ruamel cannot construct is a located problem
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._problem(_pos(node), path, f"cannot read this value: {reason}")
            return node.value

    def _pairs(self, node: MappingNode, path: Path, depth: int) -> Iterator[tuple[Node, Node, bool]]:
        """Key/value node pairs with `<<` merges expanded; the flag says whether the pair was merged in."""
        merges: list[Node] = []
        for key, value in node.value:
            if key.tag == _MERGE:
                merges.extend(value.value if isinstance(value, SequenceNode) else [value])
            else:
                yield key, value, False
        for source in merges:
            if not isinstance(source, MappingNode):
                self._problem(_pos(source), path, "'<<' merges only mappings (an alias to key: value lines)")
                continue
            if id(source) in self._open or depth > MAX_DEPTH:
                raise _Abort(_pos(source), "a '<<' merge refers to the mapping that contains it")
            self._open.add(id(source))
            try:
                for key, value, _ in self._pairs(source, path, depth + 1):
                    yield key, value, True
            finally:
                self._open.discard(id(source))

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node, merged in self._pairs(node, path, depth):
            if not isinstance(key_node, ScalarNode):
                self._problem(_pos(key_node), path, "a key must be a plain word, not a list or mapping")
                continue
            key = key_node.value if key_node.tag != "tag:yaml.org,2002:null" else ""
            if key == "":
                self._problem(_pos(key_node), path, "empty key")
                continue
            if key in out:
                if not merged:  # an explicit key overrides a merged one: that is what `<<` is for
                    first = self._doc.keys[(*path, key)]
                    self._problem(_pos(key_node), (*path, key),
                                  f"duplicate key '{key}' (first at line {first.line}, column {first.col})")
                continue
            self._doc.keys[(*path, key)] = _pos(key_node)
            out[key] = self.build(value_node, (*path, key), depth + 1)
        return out


def _empty_document_pos(lines: list[str], node: Node) -> Pos:
    """An empty document's node sits where the next one starts; point at its own `---` instead."""
    line, col = node.start_mark.line, node.start_mark.column
    at_marker = col == 0 and line < len(lines) and re.match(r"(---|\.\.\.)(\s|$)", lines[line])
    for i in range(line - 1 if at_marker else min(line, len(lines) - 1), -1, -1):
        if re.match(r"---(\s|$)", lines[i]):
            return Pos(i + 1, 1)
    return Pos(1, 1)


def parse_documents(text: str) -> tuple[list[Document], list[YamlProblem]]:
    """Every document of ``text`` that could be built, and every problem found. Never raises."""
    problems: list[YamlProblem] = []
    documents: list[Document] = []
    if len(text) > MAX_TEXT:
        return [], [YamlProblem(Pos(1, 1), (), f"file too large ({len(text)} characters; the limit is {MAX_TEXT})")]
    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = _BoundedScanner
    yaml.Composer = _BoundedComposer
    lines = text.splitlines()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ruamel warns on re-used anchors; the values are still right
        stream = yaml.compose_all(text)
        while True:
            try:
                node = next(stream)
            except StopIteration:
                break
            except MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                problems.append(YamlProblem(_mark_pos(mark), (), _syntax_message(exc)))
                break
            except YAMLError as exc:  # the reader's errors carry a character offset instead of a mark
                offset = getattr(exc, "position", None)
                pos = Pos(1, 1)
                if isinstance(offset, int) and 0 <= offset <= len(text):
                    pos = Pos(text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset))
                problems.append(YamlProblem(pos, (), f"YAML error: {str(exc).splitlines()[0]}"))
                break
            except RecursionError:
                problems.append(YamlProblem(Pos(1, 1), (), f"nested more than {MAX_DEPTH} levels deep"))
                break
            except Exception as exc:  # noqa: BLE001 - ruamel on pathological input; never a traceback
                problems.append(YamlProblem(Pos(1, 1), (), f"YAML could not be read: {type(exc).__name__}: {exc}"))
                break
            if node is None:
                continue
            if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null" and node.value == "":
                documents.append(Document(None, _empty_document_pos(lines, node)))
                continue
            doc = Document(None, _pos(node))
            before = len(problems)
            try:
                doc.data = _Builder(yaml, doc, problems).build(node, ())
                doc.flawed = len(problems) > before
            except _Abort as exc:
                problems.append(YamlProblem(exc.pos, (), exc.message))
                continue
            except RecursionError:
                problems.append(YamlProblem(doc.start, (), f"nested more than {MAX_DEPTH} levels deep"))
                continue
            documents.append(doc)
    return documents, problems

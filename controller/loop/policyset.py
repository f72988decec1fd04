"""The policies in force, reloaded from the policy directory: a file with problems is rejected (its
FILE:LINE:COL lines are kept for the log and the status endpoint) and the last good version of each policy
it defined stays in force; a policy whose file is gone (or no longer defines it) is reported as removed.
Used by the daemon on start-up, on SIGHUP and when a file's mtime changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.loader import load_policies

__all__ = ["PolicySet", "ReloadResult"]

logger = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # last good version kept because its file is invalid
    unloaded: list[str] = field(default_factory=list)  # invalid files with no last good version: nothing loaded
    problems: list[str] = field(default_factory=list)

    @property
    def touched(self) -> bool:
        return bool(self.added or self.changed or self.removed)


class PolicySet:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.policies: dict[str, Any] = {}
        self.files: dict[str, str] = {}  # policy name -> file it came from
        self.problems: list[str] = []
        self._signature: tuple[tuple[str, int, int], ...] | None = None

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """Names, mtimes and sizes of the policy files: a change means reload."""
        out = []
        try:
            for p in sorted(self.directory.iterdir()):
                if p.suffix in (".yaml", ".yml") and p.is_file():
                    st = p.stat()
                    out.append((p.name, st.st_mtime_ns, st.st_size))
        except OSError:
            return (("<unreadable>", 0, 0),)
        return tuple(out)

    def changed(self) -> bool:
        return self.signature() != self._signature

    def reload(self) -> ReloadResult:
        self._signature = self.signature()
        empty = self._signature == () and self.directory.is_dir()
        result = load_policies([self.directory])
        if empty:
            # every file removed on purpose: not a problem, the policies are removed (and drained)
            result.problems = [p for p in result.problems if str(Path(p.file)) != str(self.directory)]
        bad_files = {str(Path(p.file)) for p in result.problems}
        whole_dir_bad = str(self.directory) in bad_files or not self.directory.is_dir()
        out = ReloadResult(problems=[str(p) for p in result.problems])
        new: dict[str, Any] = {}
        files: dict[str, str] = {}
        for name, policy in result.policies.items():
            origin = result.origins.get(name, "")
            files[name] = str(Path(origin.rsplit(":", 1)[0])) if origin else ""
            new[name] = policy
        for name, old in self.policies.items():
            if name in new:
                continue
            if whole_dir_bad or self.files.get(name) in bad_files:
                new[name], files[name] = old, self.files[name]  # its file is invalid: the last good one stays
                out.kept.append(name)
            else:
                out.removed.append(name)
        for name, policy in new.items():
            if name not in self.policies:
                out.added.append(name)
            elif name not in out.kept and policy != self.policies[name]:
                out.changed.append(name)
        kept_files = {files[name] for name in out.kept}
        out.unloaded = sorted(f for f in bad_files if f not in kept_files and f != str(self.directory))
        self.policies, self.files, self.problems = new, files, out.problems
        for line in out.problems:
            logger.error("policy rejected: %s", line)
        if out.kept:
            logger.warning("kept the last good version of %s (file invalid)", ", ".join(out.kept))
        return out

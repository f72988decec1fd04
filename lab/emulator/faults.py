"""Fault injection for the local cloud API emulators: throttling, 5xx, latency, sold-out offerings,
and "time out after creating". Set from CLI flags or ``POST /_admin/faults``; read by ``rpc.py`` (for the
faults every API shares) and by the product handlers (for the product-specific ones)."""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultBox", "Faults"]


@dataclass
class Faults:
    """What to break. Rates are probabilities per request in [0, 1]; ``actions`` limits the generic
    faults (throttle, 5xx, latency) to those API actions (empty: every action)."""

    throttle_rate: float = 0.0
    error_rate: float = 0.0  # answered with InternalError 500 or ServiceUnavailable 503
    latency_s: float = 0.0  # added to every request
    spike_rate: float = 0.0  # probability of an extra spike_s delay
    spike_s: float = 2.0
    actions: list[str] = field(default_factory=list)
    sold_out: list[str] = field(default_factory=list)  # instance types or zone ids with no stock
    unsupported: list[str] = field(default_factory=list)  # instance types answered NotSupported
    # RunInstances creates the instances, then delays its answer beyond the client's read timeout
    timeout_after_create: int = 0  # for the next N RunInstances calls
    timeout_after_create_rate: float = 0.0
    timeout_delay_s: float = 30.0

    def applies_to(self, action: str) -> bool:
        return not self.actions or action in self.actions

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(Faults)}


class FaultBox:
    """The emulator's current faults, changed atomically; decisions use one seeded RNG."""

    def __init__(self, faults: Faults | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._rng = random.Random(seed)

    def get(self) -> Faults:
        with self._lock:
            return dataclasses.replace(self._faults)

    def update(self, changes: dict[str, Any]) -> Faults:
        """Merge ``changes`` (field -> value); unknown fields or wrong types raise ValueError."""
        with self._lock:
            current = dataclasses.asdict(self._faults)
            for key, value in changes.items():
                if key not in _FIELDS:
                    raise ValueError(f"unknown fault {key!r}; known: {', '.join(sorted(_FIELDS))}")
                current[key] = _coerce(key, value)
            self._faults = Faults(**current)
            return dataclasses.replace(self._faults)

    def reset(self) -> Faults:
        with self._lock:
            self._faults = Faults()
            return dataclasses.replace(self._faults)

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def choice(self, options: list[Any]) -> Any:
        with self._lock:
            return self._rng.choice(options)

    def take_timeout_after_create(self) -> bool:
        """Whether this RunInstances should time out after creating (consumes one of the next-N)."""
        with self._lock:
            if self._faults.timeout_after_create > 0:
                self._faults.timeout_after_create -= 1
                return True
            rate = self._faults.timeout_after_create_rate
            return rate > 0 and self._rng.random() < rate


def _coerce(key: str, value: Any) -> Any:
    kind = _FIELDS[key].type
    if kind in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"fault {key!r} must be a number, got {value!r}")
        if key.endswith("_rate") and not 0 <= value <= 1:
            raise ValueError(f"fault {key!r} must be within 0..1, got {value!r}")
        if value < 0:
            raise ValueError(f"fault {key!r} must not be negative, got {value!r}")
        return float(value)
    if kind in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"fault {key!r} must be a non-negative integer, got {value!r}")
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"fault {key!r} must be a list of strings, got {value!r}")
    return list(value)

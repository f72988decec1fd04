"""Which replicas leave first on scale-in: table-driven, fixed ``now``."""

from __future__ import annotations

import pytest

from policies.scale_in import ReplicaView, choose_scale_in

NOW = 10_000.0


def r(id: str, age: float, sessions: int = 0, serving: bool = True) -> ReplicaView:
    return ReplicaView(id=id, launched_at=NOW - age, sessions=sessions, serving=serving)


@pytest.mark.parametrize("replicas, count, min_lifetime, keep, expected", [
    # least busy first
    ([r("a", 900, 5), r("b", 900, 1), r("c", 900, 3)], 2, 600, 1, ("b", "c")),
    # ties: the youngest first
    ([r("old", 5000, 2), r("young", 700, 2), r("mid", 2000, 2)], 1, 600, 1, ("young",)),
    # not serving goes first, however busy the others are not
    ([r("a", 900, 0), r("sick", 900, 0, serving=False)], 1, 600, 1, ("sick",)),
    # younger than the minimum lifetime: never
    ([r("a", 100, 0), r("b", 900, 9)], 2, 600, 0, ("b",)),
    # never the last serving one while traffic needs it
    ([r("a", 900, 0), r("b", 900, 1)], 2, 600, 1, ("a",)),
    ([r("a", 900, 0)], 1, 600, 1, ()),
    # scaling to zero (traffic no longer needs the cloud): all may go, least busy first
    ([r("a", 900, 4), r("b", 900, 1)], 2, 600, 0, ("b", "a")),
    # a non-serving replica does not count towards keeping one serving
    ([r("sick", 900, serving=False), r("a", 900)], 2, 600, 1, ("sick",)),
    ([], 3, 0, 1, ()),
    ([r("a", 900)], 0, 0, 0, ()),
])
def test_choose_scale_in(replicas, count, min_lifetime, keep, expected):
    assert choose_scale_in(replicas, count, NOW, min_lifetime, keep) == expected


def test_deterministic_on_full_ties():
    reps = [r("b", 900), r("a", 900), r("c", 900)]
    assert choose_scale_in(reps, 2, NOW, 0, 0) == ("a", "b")
    assert choose_scale_in(list(reversed(reps)), 2, NOW, 0, 0) == ("a", "b")


def on(id: str, node: str, age: float = 900, sessions: int = 0) -> ReplicaView:
    return ReplicaView(id=id, launched_at=NOW - age, sessions=sessions, node=node)


@pytest.mark.parametrize("replicas, count, expected", [
    # two per instance: both of one instance go, so it can be released (not one of each)
    ([on("a1", "i-a", sessions=0), on("b1", "i-b", sessions=1), on("a2", "i-a", sessions=5),
      on("b2", "i-b", sessions=2)], 2, ("a1", "a2")),
    # a replica alone on its instance frees it by itself: it goes before the busier pair's least busy one
    ([on("a1", "i-a", sessions=0), on("a2", "i-a", sessions=0), on("c1", "i-c", sessions=3)], 1, ("c1",)),
    # then the least busy, as without sharing
    ([on("a1", "i-a", sessions=4), on("b1", "i-b", sessions=1)], 1, ("b1",)),
])
def test_replicas_sharing_an_instance_leave_together(replicas, count, expected):
    assert choose_scale_in(replicas, count, NOW, 0.0, keep_serving=1) == expected

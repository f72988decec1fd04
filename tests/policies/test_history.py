"""policies/history.py: the compact per-policy history and its copy-free views, and `Series` reading a view
exactly as it reads the same samples as a list of pairs."""

from __future__ import annotations

import random

import pytest

from policies.history import History, HistoryView
from policies.series import Series


def filled(span: float, n: int, step: float = 15.0, maxlen: int = 200_000) -> tuple[History, list[tuple[float, float]]]:
    rng = random.Random(3)
    h = History(span, maxlen=maxlen)
    pairs = []
    for k in range(n):
        p = (1000.0 + k * step, rng.uniform(0.0, 120.0))
        h.append(*p)
        pairs.append(p)
    return h, pairs


def test_keeps_only_the_span_and_reads_as_pairs() -> None:
    h, pairs = filled(span=600.0, n=500)
    last = pairs[-1][0]
    kept = [p for p in pairs if p[0] >= last - 600.0]
    assert len(h) == len(kept) == 41
    view = h.view()
    assert list(view) == kept and len(view) == 41
    assert view[0] == kept[0] and view[-1] == kept[-1] and view[3:6] == kept[3:6]
    with pytest.raises(IndexError):
        view[41]


def test_view_before_leaves_out_the_current_reading() -> None:
    h, pairs = filled(span=3600.0, n=100)
    view = h.view(before=pairs[-1][0])
    assert list(view) == pairs[:-1]
    assert list(h.view(before=pairs[-1][0] + 1)) == pairs


def test_maxlen_bounds_the_samples_held() -> None:
    h, pairs = filled(span=1e9, n=3000, maxlen=1000)
    assert list(h.view()) == pairs[-1000:]


def test_a_view_keeps_its_samples_while_the_history_moves_on() -> None:
    h, pairs = filled(span=3000.0, n=300)
    view = h.view()
    before = list(view)
    for k in range(5000):  # enough to drop every sample of the view and replace the columns several times
        h.append(pairs[-1][0] + 15.0 * (k + 1), float(k))
    assert list(view) == before
    assert len(h) == 201  # 3000 s of 15 s samples, both ends included
    assert len(h._times) < 4 * 201 + 1100  # the dropped samples are let go, not kept forever


@pytest.mark.parametrize("ready", [(), ((900.0, 2), (1500.0, 5), (4000.0, 3), (4010.0, 7))])
def test_series_reads_a_view_as_it_reads_the_pairs(ready: tuple[tuple[float, int], ...]) -> None:
    h, pairs = filled(span=5000.0, n=800)
    now_t, now_v = pairs[-1]
    view = h.view(before=now_t)
    assert isinstance(view, HistoryView) and view.lo > 0  # a window into the columns, not their start
    a = Series(view, now_t, now_v, ready, 4, onprem=10.0)
    b = Series(list(view), now_t, now_v, ready, 4, onprem=10.0)
    n = len(a)
    assert n == len(b) == len(view) + 1 and a.oldest == b.oldest
    for i in (0, 1, n // 2, n - 1):
        assert (a.time(i), a.value(i), a.load(i)) == (b.time(i), b.value(i), b.load(i))
    for t in (0.0, a.oldest, a.time(17) + 1.0, a.time(200), now_t, now_t + 5.0):
        assert a.index_at_or_after(t) == b.index_at_or_after(t)
        assert a.index_at_or_before(t) == b.index_at_or_before(t)
    for lo, hi in ((0, n), (5, 20), (100, 101), (n - 3, n), (n - 1, n), (40, 40), (0, 300)):
        assert a.times(lo, hi) == b.times(lo, hi)
        assert a.loads(lo, hi) == b.loads(lo, hi)
        assert a.max_load(lo, hi) == b.max_load(lo, hi)
    assert a.window(600.0) == b.window(600.0)

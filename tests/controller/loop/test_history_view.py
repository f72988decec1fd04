"""The runtime's in-memory history (controller/loop/tick.py over policies/history.py): the engine gets a view
of the samples before the current one, pruned to the policy's span, which later samples leave untouched, and
a restarted runtime reloads the same samples from the journal."""

from __future__ import annotations

from pathlib import Path

from controller.loop.edges import LoopOptions
from controller.loop.tick import PolicyRuntime
from controller.store.state import StateStore, sqlite_url
from policies.history import HistoryView
from tests.controller.fakes import World, make_policy

OPTIONS = LoopOptions(controller_id="dc1", evaluate_interval=0, step_interval=1)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_the_engine_reads_a_pruned_view_of_the_samples_before_the_current_one(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(sqlite_url(tmp_path / "state.db"), clock=clock)
    world = World(clock)
    rt = PolicyRuntime(make_policy(), store=store, edges=world.edges, options=OPTIONS, clock=clock)
    span = rt.history_span()
    taken: list[tuple[float, float]] = []
    try:
        for k in range(200):  # 200 minutes of samples, past the policy's span (an hour)
            clock.t += 60.0
            world.metrics.value = float(k % 37)
            if k == 150:
                world.metrics.value = None  # a failed reading is not history
            else:
                taken.append((clock.t, float(k % 37)))
            rt.sample(serving=0)
            if k == 100:
                early = rt.observation(clock.t).history
                early_samples = list(early)
        history = rt.observation(clock.t).history
        assert isinstance(history, HistoryView)
        assert list(history) == [p for p in taken[:-1] if p[0] >= clock.t - span]
        assert len(history) == 59  # an hour of minute samples, without the current one and the failed one
        assert list(early) == early_samples == [p for p in taken[:100] if p[0] >= taken[100][0] - span]
        restarted = PolicyRuntime(rt.policy, store=store, edges=world.edges, options=OPTIONS, clock=clock)
        clock.t += 60.0
        restarted.sample(serving=0)
        assert list(restarted.observation(clock.t).history) == [
            p for p in taken if p[0] >= clock.t - span]
    finally:
        store.close()

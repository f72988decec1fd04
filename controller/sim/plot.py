"""`burstctl simulate --plot`: a PNG of demand, capacity and replicas over time (matplotlib, Agg backend,
so it works without a display). Called by controller/cli/simulate.py."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.errors import BurstError
from controller.sim.simulator import Report

__all__ = ["write_png"]


def write_png(report: Report, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl, hpa = report.policy.timeline, report.hpa.timeline
    if tl is None or hpa is None:
        raise ValueError("the report was simulated without record=True")
    when = [datetime.fromtimestamp(t, UTC) for t in tl.t]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 7), sharex=True, height_ratios=[3, 1])
    top.step(when, tl.demand, where="post", color="#222222", lw=0.7, label="demand", zorder=3)
    top.step(when, tl.capacity, where="post", color="#1f77b4", lw=0.9, label="capacity (policy)")
    top.step(when, hpa.capacity, where="post", color="#ff7f0e", lw=0.6, alpha=0.7, label="capacity (hpa)")
    top.axhline(report.settings.onprem_capacity, color="#2ca02c", lw=0.8, ls="--", label="on-prem capacity")
    top.set_ylabel("load units")
    top.legend(loc="upper right", fontsize=8)
    p, h = report.policy, report.hpa
    top.set_title(f"{title}\npolicy: unserved {p.unserved_fraction:.2%}, {p.instance_hours:.0f} instance-h, "
                  f"{p.launches} launches | hpa: unserved {h.unserved_fraction:.2%}, {h.instance_hours:.0f} "
                  f"instance-h, {h.launches} launches", fontsize=9)
    bottom.step(when, tl.replicas, where="post", color="#1f77b4", lw=0.9, label="policy")
    bottom.step(when, hpa.replicas, where="post", color="#ff7f0e", lw=0.6, alpha=0.7, label="hpa")
    bottom.set_ylabel("cloud replicas")
    bottom.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise BurstError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)

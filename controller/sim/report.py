"""`burstctl simulate --report report.html`: one self-contained HTML file (data, CSS and a small inline SVG
chart script; nothing fetched from the network) with the figures table and an interactive chart of demand,
capacity and replicas: drag to zoom, double-click to reset, hover for the moment's figures and the
decision's reason. Called by controller/cli/simulate.py."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from controller.errors import BurstError
from controller.sim.simulator import Report

__all__ = ["write_html"]

_KEYS = ("unserved_fraction", "overload_minutes", "instance_hours", "launches", "max_replicas", "penalized_cost")

_SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const svg = document.getElementById('chart'), tip = document.getElementById('tip');
const W = 1100, H = 420, L = 60, R = 60, T = 10, B = 30;
let lo = 0, hi = D.t.length - 1, drag = null;
const fmt = t => new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 16);
function path(xs, ys, x, y) {
  const step = Math.max(1, Math.floor((hi - lo) / 2000)); let d = '';
  for (let i = lo; i <= hi; i += step) {
    let v = ys[i]; for (let k = i; k < Math.min(i + step, hi + 1); k++) v = Math.max(v, ys[k]);
    d += (d ? 'L' : 'M') + x(xs[i]).toFixed(1) + ',' + y(v).toFixed(1) + 'H' + x(xs[Math.min(i + step, hi)]).toFixed(1);
  }
  return d;
}
function draw() {
  const t0 = D.t[lo], t1 = D.t[hi] || t0 + 1;
  let top = 1, rtop = 1;
  for (let i = lo; i <= hi; i++) { top = Math.max(top, D.demand[i], D.capacity[i], D.hpa_capacity[i]);
    rtop = Math.max(rtop, D.replicas[i], D.hpa_replicas[i]); }
  const x = t => L + (t - t0) / (t1 - t0 || 1) * (W - L - R), y = v => H - B - v / top * (H - T - B);
  const yr = v => H - B - v / rtop * (H - T - B) * 0.35;
  let s = '';
  for (let k = 0; k <= 4; k++) { const v = top * k / 4;
    s += `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>` +
         `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(0)}</text>`; }
  for (let k = 0; k <= 4; k++) { const t = t0 + (t1 - t0) * k / 4;
    s += `<text x="${x(t)}" y="${H - 8}" text-anchor="middle">${fmt(t)}</text>`; }
  s += `<text x="${W - R + 6}" y="${yr(rtop) + 4}">${rtop} repl.</text>`;
  s += `<line x1="${L}" x2="${W - R}" y1="${y(D.onprem)}" y2="${y(D.onprem)}" stroke="#2ca02c" stroke-dasharray="4 3"/>`;
  s += `<path d="${path(D.t, D.hpa_replicas, x, yr)}" fill="none" stroke="#ff7f0e" stroke-opacity=".35"/>`;
  s += `<path d="${path(D.t, D.replicas, x, yr)}" fill="none" stroke="#1f77b4" stroke-opacity=".45"/>`;
  s += `<path d="${path(D.t, D.hpa_capacity, x, y)}" fill="none" stroke="#ff7f0e" stroke-width="1"/>`;
  s += `<path d="${path(D.t, D.capacity, x, y)}" fill="none" stroke="#1f77b4" stroke-width="1.3"/>`;
  s += `<path d="${path(D.t, D.demand, x, y)}" fill="none" stroke="#222" stroke-width="1"/>`;
  s += `<rect id="sel" y="${T}" height="${H - T - B}" fill="#1f77b4" fill-opacity=".12" width="0"/>`;
  svg.innerHTML = s; svg.__x = x;
}
function index(px) { const r = svg.getBoundingClientRect(), f = (px - r.left) / r.width * W;
  const t = D.t[lo] + (f - L) / (W - L - R) * ((D.t[hi] - D.t[lo]) || 1);
  let a = lo, b = hi; while (a < b) { const m = (a + b + 1) >> 1; if (D.t[m] <= t) a = m; else b = m - 1; } return a; }
function reason(i) { let k = i; while (k >= 0 && !(k in D.reasons)) k--; return k >= 0 ? D.reasons[k] : ''; }
svg.addEventListener('mousemove', e => {
  const i = index(e.clientX);
  tip.textContent = `${fmt(D.t[i])}  demand ${D.demand[i].toFixed(1)}  capacity ${D.capacity[i].toFixed(1)}` +
    ` (hpa ${D.hpa_capacity[i].toFixed(1)})  replicas ${D.replicas[i]} (hpa ${D.hpa_replicas[i]})\nlast decision: ${reason(i)}`;
  if (drag !== null) { const sel = document.getElementById('sel'), r = svg.getBoundingClientRect();
    const a = (Math.min(drag, e.clientX) - r.left) / r.width * W, b = (Math.max(drag, e.clientX) - r.left) / r.width * W;
    sel.setAttribute('x', a); sel.setAttribute('width', b - a); }
});
svg.addEventListener('mousedown', e => { drag = e.clientX; });
svg.addEventListener('mouseup', e => { if (drag !== null && Math.abs(e.clientX - drag) > 5) {
    const a = index(Math.min(drag, e.clientX)), b = index(Math.max(drag, e.clientX)); if (b > a) { lo = a; hi = b; } }
  drag = null; draw(); });
svg.addEventListener('dblclick', () => { lo = 0; hi = D.t.length - 1; draw(); });
draw();
"""

_CSS = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; } svg { width: 100%; max-width: 1100px; user-select: none; cursor: crosshair; }
svg text { font-size: 11px; fill: #555; } #tip { white-space: pre-wrap; font-family: monospace; min-height: 3em; }
.legend span { margin-right: 16px; } .muted { color: #666; }
"""


def write_html(report: Report, path: str, policy_name: str, trace_name: str, notes: Sequence[str] = ()) -> None:
    """``notes``: lines shown under the title (where the capacities came from, the verdict)."""
    tl, hpa = report.policy.timeline, report.hpa.timeline
    if tl is None or hpa is None:
        raise ValueError("the report was simulated without record=True")
    # reasons only where the policy changed the fleet, so a 90,000-step run stays a few megabytes
    reasons = {i: r for i, r in enumerate(tl.reasons) if r and not r.startswith("hold")}
    data = {"t": tl.t, "demand": [round(v, 3) for v in tl.demand], "capacity": [round(v, 3) for v in tl.capacity],
            "replicas": tl.replicas, "hpa_capacity": [round(v, 3) for v in hpa.capacity],
            "hpa_replicas": hpa.replicas, "onprem": report.settings.onprem_capacity, "reasons": reasons}
    rows = []
    for label, o in (("policy " + policy_name, report.policy), ("hpa", report.hpa), ("step", report.step)):
        d = o.as_dict()
        cells = "".join(f"<td>{d[k]:.4f}</td>" if k == "unserved_fraction" else
                        f"<td>{d[k]:.1f}</td>" if isinstance(d[k], float) else f"<td>{d[k]}</td>" for k in _KEYS)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    rows.append(f"<tr><td>oracle</td><td></td><td></td><td>{report.oracle_instance_hours:.1f}</td>"
                "<td></td><td></td><td></td></tr>")
    s = report.settings
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(policy_name)} on {html.escape(trace_name)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(policy_name)} on {html.escape(trace_name)}</h1>
<p class="muted">X = {s.onprem_capacity:g} on-prem, Y = {s.replica_capacity:g} per replica, boot {s.boot_delay:g} s, drain {s.drain_time:g} s,
evaluated every {s.interval:g} s, unserved penalty {s.unserved_penalty:g}; {report.steps} steps.</p>
{"".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)}
<table><tr><th>run</th>{"".join(f"<th>{k.replace('_', ' ')}</th>" for k in _KEYS)}</tr>{"".join(rows)}</table>
<p class="legend"><span style="color:#222">&#9632; demand</span><span style="color:#1f77b4">&#9632; capacity and
replicas (policy)</span><span style="color:#ff7f0e">&#9632; hpa</span><span style="color:#2ca02c">- - on-prem</span>
<span class="muted">drag to zoom, double-click to reset</span></p>
<svg id="chart" viewBox="0 0 1100 420"></svg>
<div id="tip"></div>
<script type="application/json" id="data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        raise BurstError(f"cannot write {path}: {exc.strerror or exc}") from exc

"""`burstctl status`, `burstctl events` and `burstctl pause|resume|drain POLICY`: clients of a running
controller's status endpoint, rendered for a terminal with rich (or ``--json`` for scripts)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from controller.cli.output import wide_console
from controller.config import (
    CONFIG_ENV,
    DEFAULT_PATH,
    add_config_argument,
    load_config,
)
from controller.errors import AuthError, BurstError, ConfigError, FencedError, NotFoundError, TransientError
from controller.secret_files import read_secret_file, status_token
from controller.status.models import (
    POLICY_NAME_PATTERN,
    ControllerStatus,
    DecisionStatus,
    Event,
    EventPage,
    PolicyStatus,
)

DEFAULT_URL = "http://127.0.0.1:9180"


def add_parser(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help=f"status endpoint (default: status.listen from --config, else {DEFAULT_URL})")
        add_config_argument(p, "controller config, for the URL and token")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")

    st = sub.add_parser("status", help="what the running controller is doing and why")
    common(st)
    st.add_argument("--json", action="store_true", help="print the raw status document")
    st.add_argument("--policy", help="only this policy")
    st.add_argument("--instances", action="store_true", help="also list each cloud instance")
    st.set_defaults(func=_status)

    ev = sub.add_parser("events", help="the controller's audit log: what it did and why")
    common(ev)
    ev.add_argument("--json", action="store_true", help="one JSON object per event (JSON lines)")
    ev.add_argument("--policy", help="only this policy's events")
    ev.add_argument("--limit", type=int, default=100, help="how many events (1-1000, default %(default)s)")
    ev.add_argument("--cursor", type=int, help="events after this id (default: the latest)")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events (Ctrl-C stops)")
    ev.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")
    ev.set_defaults(func=_events)

    for action, text in (("pause", "stop making decisions for a policy (replicas stay)"),
                         ("resume", "resume a paused or drained policy"),
                         ("drain", "drain a policy's cloud replicas to zero now")):
        p = sub.add_parser(action, help=text)
        common(p)
        p.add_argument("policy", metavar="POLICY")
        p.add_argument("--token-file", help="file holding the status token (default: from --config)")
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
        p.set_defaults(func=_mutate, action=action)


# --------------------------------------------------------------------------- talking to the endpoint


def _config(args: argparse.Namespace) -> Any:
    """The config if it can be read; a missing default config is fine (the CLI may run elsewhere)."""
    if not os.path.exists(args.config):
        if args.config != DEFAULT_PATH and args.config != os.environ.get(CONFIG_ENV):
            raise ConfigError(f"{args.config}: not found", [f"{args.config}: no such file"])
        return None
    return load_config(args.config)


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    cfg = _config(args)
    return cfg.status.url if cfg is not None else DEFAULT_URL


def _request(args: argparse.Namespace, method: str, path: str, *, params: dict[str, Any] | None = None,
             token: str | None = None) -> Any:
    url = _base_url(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, timeout=args.timeout, trust_env=False) as client:
            resp = client.request(method, path, params=params, headers=headers)
    except httpx.ConnectError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else str(exc) or "cannot connect"
        raise TransientError(f"cannot reach the controller at {url}: {reason} "
                             "(is burst-controller running? try: systemctl status burst-controller)") from None
    except httpx.TimeoutException:
        raise TransientError(f"the controller at {url} did not answer within {args.timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"request to {url}{path} failed: {exc}") from None
    if resp.status_code < 400:
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.text
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = resp.text[:200]
    if isinstance(detail, list):  # FastAPI validation errors: say which parameter
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
    message = f"{method} {path}: {detail or resp.reason_phrase} (HTTP {resp.status_code})"
    if resp.status_code in (401, 403):
        raise AuthError(message)
    if resp.status_code == 404:
        raise NotFoundError(message)
    if resp.status_code == 409:
        raise FencedError(message)
    if resp.status_code == 503:
        raise TransientError(message)
    raise BurstError(message)


# --------------------------------------------------------------------------- status


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


_ORDER = ["planned", "replicating", "launching", "booting", "starting", "healthy", "serving", "draining",
          "stopping", "releasing", "failed"]


def _replicas(counts: dict[str, int]) -> str:
    items = sorted(((s, n) for s, n in counts.items() if n), key=lambda kv: (
        _ORDER.index(kv[0]) if kv[0] in _ORDER else len(_ORDER), kv[0]))
    return " ".join(f"{s}={n}" for s, n in items) or "none"


def _policy_row(p: PolicyStatus) -> list[Text | str]:
    m = p.metric
    if m is None:
        metric, age = Text("no sample", style="dim"), "-"
    elif not m.ok or m.value is None:
        metric, age = Text("FAILED", style="bold red"), _ago(m.age_seconds)
    else:
        metric, age = Text(f"{m.value:.4g} {m.source}"), _ago(m.age_seconds)
    d = p.decision
    if d is None:
        decision = Text("-", style="dim")
    else:
        style = "cyan" if p.draining else {"out": "bold yellow", "in": "cyan", "hold": ""}.get(d.direction, "")
        decision = Text(_decision_words(p, d), style=style)
    spend_style = "bold red" if p.budget_per_hour and p.spend_per_hour >= p.budget_per_hour else ""
    spend = Text(f"{p.spend_per_hour:.2f}/h of {p.budget_per_hour:.2f}/h", style=spend_style)
    state = "draining" if p.draining else ("paused" if p.paused else "active")
    if p.mode == "shadow":  # decides, acts on nothing: says so wherever the state is read
        state = "shadow" if state == "active" else f"shadow, {state}"
    state_text = Text(state, style="bold yellow" if state != "active" else "green")
    replicas = _replicas(p.replicas)
    if p.warm_pool.warm:  # the stopped nodes the next burst starts first, and the oldest one's age
        oldest = max(n.age_seconds for n in p.warm_pool.nodes)
        replicas += f" warm={p.warm_pool.warm}/{p.warm_pool.size} (oldest {_ago(oldest)})"
    return [Text(p.name, style="bold"), metric, age, decision, replicas, spend,
            f"{p.spent_today:.2f}", state_text]


def _decision_words(p: PolicyStatus, d: DecisionStatus) -> str:
    if p.draining:
        return "operator drain to 0"
    words = {"out": f"scale out to {d.desired}", "in": f"scale in to {d.desired}"}.get(d.direction,
                                                                                      f"hold at {d.desired}")
    return f"would {words} (shadow)" if p.mode == "shadow" else words


def _policy_notes(p: PolicyStatus, now: float) -> list[Text]:
    """The why: decision reason, metric failure, last error; one line each, below the table."""
    notes = []
    if p.decision is not None:
        d = p.decision
        why = (f"all cloud replicas leave and stay at 0 until `burstctl resume {p.name}`" if p.draining
               else d.reason)
        notes.append(Text.assemble((p.name, "bold"), f": {_decision_words(p, d)}: {why} ({_ago(now - d.at)} ago)"))
    if p.metric is not None and (not p.metric.ok or p.metric.value is None):
        notes.append(Text.assemble((p.name, "bold"), (f": metric {p.metric.source} failed: {p.metric.error or 'no value'}", "red")))
    for err in p.last_errors[:3]:
        notes.append(Text.assemble((p.name, "bold"), (f": error {_ago(now - err.at)} ago: {err.message}", "red")))
    return notes


def render_status(status: ControllerStatus, console: Console, *, instances: bool = False) -> None:
    now = time.time()
    role = Text(status.role, style="bold green" if status.role == "active" else "bold yellow")
    ready = Text("ready" if status.ready else f"not ready: {status.ready_reason}",
                 style="green" if status.ready else "bold red")
    head = Text.assemble(("controller ", ""), (status.controller_id, "bold"), "  ", role, "  ", ready,
                         f"  version {status.version}  up {_ago(now - status.started_at)}")
    console.print(head)
    for line in status.policy_errors:
        console.print(Text(f"policy error: {line}", style="bold red"))
    if not status.policies:
        console.print(Text("no policies loaded", style="yellow"))
        return
    table = Table(header_style="bold")
    for col in ("POLICY", "METRIC", "AGE", "DECISION", "REPLICAS", "SPEND RATE", "SPENT TODAY", "STATE"):
        table.add_column(col, overflow="fold", no_wrap=col in ("AGE", "DECISION", "STATE"))
    for p in status.policies:
        table.add_row(*_policy_row(p))
    console.print(table)
    for p in status.policies:
        for note in _policy_notes(p, now):
            console.print(note)
    if instances:
        inst = Table(header_style="bold", title="cloud instances")
        for col in ("POLICY", "INSTANCE", "ZONE", "TYPE", "STATE", "AGE", "SPEND", "ADDRESS"):
            inst.add_column(col, overflow="fold")
        for p in status.policies:
            for i in p.instances:
                inst.add_row(p.name, i.id, i.zone, i.type + (" (spot)" if i.spot else ""), i.state,
                             _ago(i.age_seconds), f"{i.spend:.2f}", i.address or "-")
        console.print(inst)


def _status(args: argparse.Namespace) -> int:
    if args.policy:
        if not re.fullmatch(POLICY_NAME_PATTERN, args.policy):
            raise ConfigError("bad name", [f"burstctl status: '{args.policy}' is not a policy name"])
        doc = _request(args, "GET", f"/v1/policies/{args.policy}")
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        full = ControllerStatus.model_validate(_request(args, "GET", "/v1/status"))
        status = full.model_copy(update={"policies": [PolicyStatus.model_validate(doc)]})
    else:
        doc = _request(args, "GET", "/v1/status")
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        status = ControllerStatus.model_validate(doc)
    render_status(status, wide_console(), instances=args.instances)
    return 0


# --------------------------------------------------------------------------- events


def _event_line(e: Event) -> Text:
    style = {"error": "red", "orphan": "bold yellow", "launch": "yellow", "release": "cyan",
             "drain": "cyan", "reload": "magenta"}.get(e.kind, "")
    return Text.assemble(_clock(e.at), " ", (f"{e.policy or '-':<12}", "bold"), " ",
                         (f"{e.kind:<10}", style), " ", e.message)


def _events(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise ConfigError("--limit", ["burstctl events: --limit must be from 1 to 1000"])
    if args.cursor is not None and args.cursor < 0:
        raise ConfigError("--cursor", ["burstctl events: --cursor must be 0 or more"])
    console = wide_console()
    params: dict[str, Any] = {"limit": args.limit}
    if args.policy:
        params["policy"] = args.policy
    if args.cursor is not None:
        params["cursor"] = args.cursor
    page = EventPage.model_validate(_request(args, "GET", "/v1/events", params=params))
    if args.json:
        for e in page.events:
            print(e.model_dump_json(), flush=True)
    elif not args.follow and not console.is_terminal:
        # piped or redirected (grep, less, a file): one whole line per event, never a message folded
        # into a narrow column
        for e in page.events:
            print(f"{e.id}\t{_clock(e.at)}\t{e.policy or '-'}\t{e.kind}\t{e.message}")
    elif not args.follow:
        table = Table(header_style="bold")
        for col in ("ID", "TIME", "POLICY", "KIND", "MESSAGE"):
            table.add_column(col, overflow="fold")
        for e in page.events:
            table.add_row(str(e.id), _clock(e.at), e.policy or "-", e.kind, e.message)
        console.print(table if page.events else Text("no events", style="dim"))
    else:
        for e in page.events:
            console.print(_event_line(e))
    if not args.follow:
        return 0
    cursor = page.next_cursor if page.next_cursor is not None else 0
    while True:
        time.sleep(args.interval)
        params["cursor"] = cursor
        params["limit"] = 1000
        try:
            page = EventPage.model_validate(_request(args, "GET", "/v1/events", params=params))
        except TransientError as exc:  # the controller restarting: keep following
            print(f"burstctl events: {exc}; retrying", file=sys.stderr)
            continue
        for e in page.events:
            if args.json:
                print(e.model_dump_json(), flush=True)
            else:
                console.print(_event_line(e))
        if page.next_cursor is not None:
            cursor = page.next_cursor


# --------------------------------------------------------------------------- pause / resume / drain


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        return read_secret_file(args.token_file, "status token")
    cfg = _config(args)
    token = status_token(cfg) if cfg is not None else None
    if not token:
        raise ConfigError("no token", [
            f"burstctl {args.action}: no status token: pass --token-file FILE or --config with status.token_file"])
    return token


def _mutate(args: argparse.Namespace) -> int:
    if not re.fullmatch(POLICY_NAME_PATTERN, args.policy):
        raise ConfigError("bad name", [f"burstctl {args.action}: '{args.policy}' is not a policy name"])
    doc = _request(args, "POST", f"/v1/policies/{args.policy}/{args.action}", token=_token(args))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(doc.get("message", doc) if isinstance(doc, dict) else doc)
    return 0

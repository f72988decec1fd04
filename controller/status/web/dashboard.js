/* The burst-controller dashboard: polls the status API of this origin and renders, per policy, the
   decision and its reason, the load chart, the fleet and the errors, plus the event log; pause, resume and
   drain send the operator's token as a Bearer header. Served by controller/status/dashboard.py; no build step.
   Text from the controller is only ever set with textContent (never parsed as HTML). */
"use strict";

(function () {
  const STATUS_EVERY = 2000;
  const EVENTS_EVERY = 2000;
  const HISTORY_EVERY = 10000;
  const MAX_EVENTS = 500;
  const TOKEN_KEY = "burst-controller.status-token";
  const RANGE_KEY = "burst-controller.chart-range";
  const HISTORY_PAGE = 5000; // the endpoint's largest history answer (controller/status/app.py)
  const { fmtNumber, fmtClock } = window.BurstChartFormat;

  const state = {
    status: null,
    lastOk: 0,
    failingSince: 0,
    cursor: null,
    events: [],
    cards: new Map(),      // policy name -> card object
    history: new Map(),    // policy name -> {points, lastAt}
    range: Number(localStorage.getItem(RANGE_KEY)) || 0,  // seconds; 0: fit the data (up to FIT_MAX)
    token: sessionStorage.getItem(TOKEN_KEY) || null,
    pending: null,         // {policy, action} awaiting the token dialog
  };

  const $ = (id) => document.getElementById(id);
  const FIT_MAX = 86400, FIT_MIN = 300;  // "fit the data": from the oldest sample of the last day, 5 min at least

  /* h("td", {class: "x"}, "text", childNode, ...): DOM built without innerHTML. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function fmtMoney(v) {
    return v === null || v === undefined ? "–" : v.toFixed(v >= 100 ? 0 : 2);
  }

  function isoTime(t) {
    return new Date(t * 1000).toISOString().replace(".000Z", "Z");
  }

  function timeEl(t) {
    return h("time", { datetime: isoTime(t), title: isoTime(t) }, fmtClock(t, true));
  }

  /* One word for the colour and text of a replica or instance state. */
  function stateClass(s) {
    if (s === "serving" || s === "healthy") return "ok";
    if (["planned", "replicating", "launching", "booting", "starting"].includes(s)) return "progress";
    if (["draining", "stopping", "releasing"].includes(s)) return "leaving";
    if (s === "failed" || s === "orphan") return "bad";
    return "neutral";
  }

  function eventClass(kind) {
    if (kind === "scale-out") return "progress";
    if (kind === "scale-in") return "leaving";
    if (/error|fail|orphan|timeout|sold|throttl|budget/.test(kind)) return "bad";
    if (/launch|admit|serv|start|healthy/.test(kind)) return "ok";
    if (/drain|release|stop|remove/.test(kind)) return "leaving";
    if (/pause|resume|reload|policy/.test(kind)) return "info";
    return "neutral";
  }

  async function getJSON(url) {
    const res = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${res.status} ${detail}`);
    }
    return res.json();
  }

  function toast(message, kind) {
    const t = $("toast");
    t.textContent = message;
    t.className = "toast toast-" + (kind || "info");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, kind === "error" ? 12000 : 6000);
  }

  // ------------------------------------------------------------------ controller header and banners

  function renderHeader(st) {
    $("controller-id").textContent = st.controller_id;
    document.title = `burst-controller ${st.controller_id}`;
    const badge = $("ready-badge");
    if (st.role === "standby") {
      badge.textContent = "standby";
      badge.className = "badge badge-leaving";
    } else if (st.ready) {
      badge.textContent = "active · ready";
      badge.className = "badge badge-ok";
    } else {
      badge.textContent = "not ready";
      badge.className = "badge badge-bad";
    }
    badge.title = st.ready_reason || "";
    const now = Date.now() / 1000;
    const why = st.ready ? "" : ` · not ready: ${st.ready_reason || "unknown"}`;
    $("controller-facts").textContent =
      `version ${st.version} · up ${fmtAge(now - st.started_at)} · ${st.policies.length} ` +
      `polic${st.policies.length === 1 ? "y" : "ies"} · updated ${fmtClock(now, true)}${why}`;
    const errs = st.policy_errors || [];
    $("policy-errors").hidden = errs.length === 0;
    const list = $("policy-errors-list");
    list.replaceChildren(...errs.map((e) => h("li", { text: e })));
    $("no-policies").hidden = st.policies.length > 0;
    $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  function setConnection(ok, error) {
    const banner = $("connection-banner");
    if (ok) {
      state.failingSince = 0;
      banner.hidden = true;
      return;
    }
    if (!state.failingSince) state.failingSince = Date.now() / 1000;
    banner.hidden = false;
    banner.textContent = `Cannot reach the controller's status endpoint since ${fmtClock(state.failingSince, true)} ` +
      `(${error}). Retrying; the figures below are from ${state.lastOk ? fmtClock(state.lastOk, true) : "never"}.`;
  }

  // ------------------------------------------------------------------ policy cards

  function makeCard(name) {
    const id = "policy-" + name;
    const chartBox = h("div", { class: "chart" });
    const card = {
      root: h("article", { class: "card policy", "data-policy": name, "aria-labelledby": id + "-title" }),
      badge: h("span", { class: "badge" }),
      decision: h("div", { class: "decision" }),
      metric: h("dd", { class: "metric" }),
      replicas: h("dd", { class: "replica-chips" }),
      spend: h("dd", { class: "spend" }),
      spentToday: h("dd", { class: "spent-today" }),
      fleetBody: h("tbody"),
      fleetEmpty: h("p", { class: "empty", text: "No cloud instances." }),
      fleetCount: h("span", { class: "muted" }),
      errors: h("ul", { class: "errors mono" }),
      errorsBox: h("div", { class: "errors-box", hidden: true }),
      buttons: {},
      capacityKey: h("span", { class: "key key-capacity", hidden: true }, "capacity: the scale-out line or target"),
    };
    const actions = h("div", { class: "actions", role: "group", "aria-label": `Operator actions for ${name}` });
    for (const [action, label, cls] of [["pause", "Pause", ""], ["resume", "Resume", ""], ["drain", "Drain", "danger"]]) {
      const b = h("button", { type: "button", class: cls, "data-action": action, "aria-label": `${label} policy ${name}` }, label);
      b.addEventListener("click", () => askToken(name, action));
      card.buttons[action] = b;
      actions.appendChild(b);
    }
    card.root.append(
      h("div", { class: "card-head" }, h("h2", { id: id + "-title" }, name), card.badge, actions),
      card.decision,
      h("dl", { class: "facts-grid" },
        h("div", {}, h("dt", {}, "Load"), card.metric),
        h("div", {}, h("dt", {}, "Cloud replicas"), card.replicas),
        h("div", {}, h("dt", {}, "Spend rate"), card.spend),
        h("div", {}, h("dt", {}, "Spent today (UTC)"), card.spentToday)),
      h("figure", { class: "chart-figure" },
        chartBox,
        h("figcaption", { class: "legend" },
          h("span", { class: "key key-load" }, "load"),
          card.capacityKey,
          h("span", { class: "key key-replicas" }, "cloud replicas (right axis)"))),
      card.errorsBox,
      h("h3", {}, "Fleet ", card.fleetCount),
      h("div", { class: "table-wrap" },
        h("table", { class: "fleet" },
          h("caption", { class: "visually-hidden" }, `Cloud instances of ${name}`),
          h("thead", {}, h("tr", {}, ...["Instance", "Zone", "Type", "State", "Age", "Spend", "Address"]
            .map((c) => h("th", { scope: "col" }, c)))),
          card.fleetBody)),
      card.fleetEmpty);
    card.errorsBox.append(h("h3", {}, "Recent errors"), card.errors);
    card.chart = new window.BurstChart(chartBox, "load");
    return card;
  }

  function renderPolicy(card, p) {
    let label = "active", cls = "ok";
    if (p.draining) { label = "draining"; cls = "leaving"; }
    else if (p.paused) { label = "paused"; cls = "warn"; }
    // shadow mode: it decides and records, and acts on nothing; said in the badge and the decision
    const shadow = p.mode === "shadow";
    if (shadow) { label = label === "active" ? "shadow" : "shadow · " + label; cls = "shadow"; }
    if (p.metric && !p.metric.ok) { label += " · metric failing"; cls = "bad"; }
    card.badge.textContent = label;
    card.badge.className = "badge badge-" + cls;
    card.root.dataset.paused = String(p.paused);
    card.root.dataset.mode = p.mode || "active";
    card.buttons.pause.disabled = p.paused;
    card.buttons.resume.disabled = !p.paused && !p.draining;

    const d = p.decision;
    const now = Date.now() / 1000;
    if (d) {
      const words = p.draining ? "▼ Operator drain"
        : (shadow ? { out: "▲ Would scale out", in: "▼ Would scale in", hold: "● Would hold" }
          : { out: "▲ Scale out", in: "▼ Scale in", hold: "● Hold" })[d.direction] || d.direction;
      const desired = p.draining ? " to 0 cloud replicas, kept there until resumed"
        : ` ${d.direction === "hold" ? "at" : "to"} ${d.desired} cloud replica${d.desired === 1 ? "" : "s"}`;
      card.decision.className = "decision dir-" + (p.draining ? "in" : d.direction);
      card.decision.replaceChildren(
        h("span", { class: "direction" }, words),
        h("span", { class: "desired" }, desired + (shadow && !p.draining ? " (shadow mode: nothing launched or drained)" : "")),
        h("p", { class: "reason", text: d.reason }),
        h("span", { class: "muted when" }, "decided ", timeEl(d.at), ` (${fmtAge(now - d.at)} ago)`));
    } else {
      card.decision.className = "decision dir-none";
      card.decision.replaceChildren(h("span", { class: "muted" }, "No decision yet: waiting for the first evaluation."));
    }

    const m = p.metric;
    if (!m) card.metric.replaceChildren(h("span", { class: "muted" }, "no sample yet"));
    else {
      card.metric.replaceChildren(
        h("strong", { class: m.ok ? "" : "text-bad" }, fmtNumber(m.value)),
        h("span", { class: "muted" }, ` ${m.source} · ${fmtAge(m.age_seconds)} old`),
        ...(m.ok ? [] : [h("span", { class: "text-bad block" }, m.error ? `failing: ${m.error}` : "stale")]));
    }

    const order = ["planned", "replicating", "launching", "booting", "starting", "healthy", "serving",
      "draining", "stopping", "releasing", "failed"];
    const entries = Object.entries(p.replicas || {}).sort((a, b) => order.indexOf(a[0]) - order.indexOf(b[0]));
    card.replicas.replaceChildren(...(entries.length
      ? entries.map(([s, n]) => h("span", { class: "chip chip-" + stateClass(s) }, `${n} ${s}`))
      : [h("span", { class: "muted" }, "none")]));
    const pool = p.warm_pool || { size: 0, warm: 0, nodes: [] };
    if (pool.size > 0 || pool.warm > 0) {  // stopped nodes kept for the next burst, with their ages
      const ages = (pool.nodes || []).map((n) => `${n.id}: launched ${fmtAge(n.age_seconds)} ago, stopped ` +
        `${fmtAge(n.stopped_seconds)}`).join("\n");
      card.replicas.append(h("span", { class: "chip chip-info", title: ages || "no stopped node",
        "data-warm": String(pool.warm) }, `${pool.warm}/${pool.size} warm`));
    }

    const budget = p.budget_per_hour || 0;
    const share = budget > 0 ? Math.min(1, p.spend_per_hour / budget) : 0;
    const meter = h("meter", { min: 0, max: 1, low: 0.7, high: 0.9, optimum: 0, value: share.toFixed(3),
      "aria-label": "share of the hourly budget" });
    card.spend.replaceChildren(
      h("strong", {}, fmtMoney(p.spend_per_hour) + "/h"),
      h("span", { class: "muted" }, budget > 0 ? ` of ${fmtMoney(budget)}/h budget` : " (no budget)"), meter);
    card.spentToday.replaceChildren(h("strong", {}, fmtMoney(p.spent_today || 0)),
      h("span", { class: "muted" }, " since 00:00 UTC"));

    const rows = (p.instances || []).map((i) => h("tr", { "data-instance": i.id },
      h("td", { class: "mono" }, i.id),
      h("td", {}, i.zone),
      h("td", {}, i.type + (i.spot ? " (spot)" : "")),
      h("td", {}, h("span", { class: "chip chip-" + stateClass(i.state) }, i.state)),
      h("td", { class: "num" }, fmtAge(i.age_seconds)),
      h("td", { class: "num" }, fmtMoney(i.spend)),
      h("td", { class: "mono" }, i.address || "–")));
    card.fleetBody.replaceChildren(...rows);
    card.fleetEmpty.hidden = rows.length > 0;
    card.fleetCount.textContent = `(${rows.length} instance${rows.length === 1 ? "" : "s"})`;

    const errs = p.last_errors || [];
    card.errorsBox.hidden = errs.length === 0;
    card.errors.replaceChildren(...errs.map((e) => h("li", {}, timeEl(e.at), " ", e.message)));
  }

  function renderPolicies(st) {
    const container = $("policies");
    const names = new Set(st.policies.map((p) => p.name));
    for (const [name, card] of state.cards) {
      if (!names.has(name)) { card.root.remove(); state.cards.delete(name); state.history.delete(name); }
    }
    for (const p of st.policies) {
      let card = state.cards.get(p.name);
      if (!card) {
        card = makeCard(p.name);
        state.cards.set(p.name, card);
        container.appendChild(card.root);
        refreshHistory(p.name);
      }
      renderPolicy(card, p);
    }
    const filter = $("events-filter");
    const have = new Set([...filter.options].map((o) => o.value));
    for (const name of names) if (!have.has(name)) filter.appendChild(h("option", { value: name }, name));
  }

  // ------------------------------------------------------------------ polling

  async function pollStatus() {
    try {
      const st = await getJSON("/v1/status");
      state.status = st;
      state.lastOk = Date.now() / 1000;
      setConnection(true);
      renderHeader(st);
      renderPolicies(st);
    } catch (e) {
      setConnection(false, e.message);
    }
  }

  async function refreshHistory(name) {
    const now = Date.now() / 1000;
    const fit = state.range === 0;
    const from = now - (fit ? FIT_MAX : state.range);
    const h0 = state.history.get(name) || { points: [], lastAt: 0, range: state.range };
    if (h0.range !== state.range) { h0.points = []; h0.lastAt = 0; h0.range = state.range; }
    try {
      // pages of at most HISTORY_PAGE points, oldest first: a full page means more follow
      for (let page = 0; page < 10; page += 1) {
        const since = h0.lastAt > from ? h0.lastAt + 0.001 : from;
        const fresh = await getJSON(
          `/v1/policies/${encodeURIComponent(name)}/history?since=${since.toFixed(3)}&limit=${HISTORY_PAGE}`);
        h0.points = h0.points.concat(fresh.filter((p) => p.at > h0.lastAt)).filter((p) => p.at >= from);
        if (h0.points.length) h0.lastAt = h0.points[h0.points.length - 1].at;
        if (fresh.length < HISTORY_PAGE) break;
      }
      state.history.set(name, h0);
    } catch (e) {
      if (!String(e.message).startsWith("404")) console.warn("history of", name, e.message);
    }
    const card = state.cards.get(name);
    if (card) {
      const pol = state.status && state.status.policies.find((x) => x.name === name);
      card.chart.label = pol && pol.metric && pol.metric.source ? `load · ${pol.metric.source}` : "load";
      // fitted: the chart starts at the first sample, so a burst of minutes is not a sliver of a fixed window
      const shown = fit ? Math.min(now - FIT_MIN, h0.points.length ? h0.points[0].at : now) : from;
      card.chart.update(h0.points, { from: shown, to: now, unit: "" });
      card.capacityKey.hidden = !card.chart.hasCapacity;
    }
  }

  async function pollHistory() {
    await Promise.all([...state.cards.keys()].map(refreshHistory));
  }

  function renderEvents() {
    const filter = $("events-filter").value;
    const shown = state.events.filter((e) => !filter || e.policy === filter).slice(-200).reverse();
    $("events-table").tBodies[0].replaceChildren(...shown.map((e) => h("tr", { "data-event": e.id },
      h("td", { class: "nowrap" }, timeEl(e.at)),
      h("td", {}, e.policy || "—"),
      h("td", {}, h("span", { class: "chip chip-" + eventClass(e.kind) }, e.kind)),
      h("td", { class: "message" }, e.message))));
    $("events-empty").hidden = shown.length > 0;
  }

  async function pollEvents() {
    const url = state.cursor === null ? "/v1/events?limit=200" : `/v1/events?cursor=${state.cursor}&limit=200`;
    try {
      const page = await getJSON(url);
      if (page.events.length) {
        state.events = state.events.concat(page.events).slice(-MAX_EVENTS);
        renderEvents();
      }
      if (page.next_cursor !== null && page.next_cursor !== undefined) state.cursor = page.next_cursor;
      // a full page means there is more right now: fetch it without waiting
      if (page.events.length === 200) return pollEvents();
    } catch (e) {
      setConnection(false, e.message);
    }
  }

  function every(ms, fn) {
    const loop = async () => {
      if (!document.hidden) await fn();
      setTimeout(loop, ms);
    };
    loop();
  }

  // ------------------------------------------------------------------ operator actions

  const EXPLAIN = {
    pause: "Pause policy {p}: it makes no scaling decisions until resumed; its cloud replicas stay as they are.",
    resume: "Resume policy {p}: its decisions start again (and an operator drain ends).",
    drain: "Drain policy {p}: ALL its cloud replicas are taken out of traffic and released, and it stays at zero until resumed.",
  };

  function askToken(policy, action) {
    state.pending = { policy, action };
    $("token-title").textContent = `${action[0].toUpperCase()}${action.slice(1)} ${policy}?`;
    $("token-explain").textContent = EXPLAIN[action].replace("{p}", policy);
    $("token-confirm").textContent = `${action[0].toUpperCase()}${action.slice(1)} ${policy}`;
    $("token-confirm").className = action === "drain" ? "danger" : "";
    const input = $("token-input");
    input.value = state.token || "";
    $("token-remember").checked = !!sessionStorage.getItem(TOKEN_KEY);
    $("token-error").hidden = true;
    $("token-dialog").showModal();
    (input.value ? $("token-confirm") : input).focus();
  }

  async function submitAction(evt) {
    evt.preventDefault();
    const pending = state.pending;
    if (!pending) return;
    const token = $("token-input").value.trim();
    const errorBox = $("token-error");
    if (!token) {
      errorBox.textContent = "Enter the status token.";
      errorBox.hidden = false;
      return;
    }
    const confirm = $("token-confirm");
    confirm.disabled = true;
    try {
      const res = await fetch(`/v1/policies/${encodeURIComponent(pending.policy)}/${pending.action}`, {
        method: "POST", headers: { Authorization: "Bearer " + token, Accept: "application/json" }, cache: "no-store",
      });
      let body = {};
      try { body = await res.json(); } catch (e) { /* not JSON */ }
      if (res.ok) {
        if ($("token-remember").checked) sessionStorage.setItem(TOKEN_KEY, token);
        else sessionStorage.removeItem(TOKEN_KEY);
        state.token = $("token-remember").checked ? token : null;
        $("token-dialog").close();
        toast(body.message || `${pending.action} of ${pending.policy} accepted`, "ok");
        state.pending = null;
        pollStatus();
        pollEvents();
        return;
      }
      const why = body.detail || res.statusText;
      let text;
      if (res.status === 401) text = `401 Unauthorized: ${why}`;
      else if (res.status === 403) text = `403 Forbidden: the token was refused (${why}). Check the controller's status.token_file.`;
      else if (res.status === 409) text = `409 Conflict: ${why}`;
      else if (res.status === 503) text = `503 Unavailable: ${why}`;
      else text = `${res.status}: ${why}`;
      if (res.status === 401 || res.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        state.token = null;
        $("token-input").select();
      }
      errorBox.textContent = text;
      errorBox.hidden = false;
    } catch (e) {
      errorBox.textContent = `The request did not reach the controller: ${e.message}`;
      errorBox.hidden = false;
    } finally {
      confirm.disabled = false;
      $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
    }
  }

  function init() {
    $("token-form").addEventListener("submit", submitAction);
    $("token-cancel").addEventListener("click", () => { state.pending = null; $("token-dialog").close(); });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      $("forget-token").hidden = true;
      toast("Token forgotten in this tab.", "info");
    });
    const range = $("range-select");
    range.value = String(state.range);
    if (range.value !== String(state.range)) { state.range = 0; range.value = "0"; }
    range.addEventListener("change", () => {
      state.range = Number(range.value);
      localStorage.setItem(RANGE_KEY, range.value);
      pollHistory();
    });
    $("events-filter").addEventListener("change", renderEvents);
    every(STATUS_EVERY, pollStatus);
    every(EVENTS_EVERY, pollEvents);
    setTimeout(() => every(HISTORY_EVERY, pollHistory), HISTORY_EVERY);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) { pollStatus(); pollHistory(); } });
  }

  init();
})();

// The owner's page: plain DOM, no build step. Data is only ever written with textContent.
"use strict";

const API = "/api/owner/queues";
const state = {
  token: sessionStorage.getItem("tq-admin-token") || "",
  queues: new Map(), // name -> summary as GET /api/owner/queues gives it
  view: null, // {kind: "queues"} | {kind: "queue", queue, tab} | {kind: "job", queue, id}
  cursors: {},
  stream: null, // AbortController of the live stream
  lastEventId: "",
  refreshTimers: new Map(),
};

const $ = (id) => document.getElementById(id);
const q = encodeURIComponent;

function say(text) {
  $("message").textContent = text || "";
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (r.status === 401) {
    signOut((data.error && data.error.message) || "signed out");
    throw new Error("unauthorized");
  }
  if (!r.ok) {
    const message = (data.error && data.error.message) || r.statusText;
    say(message);
    throw new Error(message);
  }
  return data;
}

// ---- sign in / out ---------------------------------------------------------------------------
function signOut(reason) {
  state.token = "";
  sessionStorage.removeItem("tq-admin-token");
  if (state.stream) state.stream.abort();
  state.stream = null;
  setLive(false);
  for (const id of ["queues", "queue", "job"]) $(id).hidden = true;
  $("login").hidden = false;
  $("signout").hidden = true;
  say(reason || "");
}

async function signIn(token) {
  state.token = token;
  try {
    const queues = await api("GET", API);
    setQueues(queues);
  } catch (e) {
    return;
  }
  sessionStorage.setItem("tq-admin-token", token);
  $("login").hidden = true;
  $("signout").hidden = false;
  say("");
  startStream();
  route();
}

// ---- live events -----------------------------------------------------------------------------
function setLive(on, text) {
  $("live").textContent = text || (on ? "live" : "offline");
  $("live").className = on ? "on" : "";
}

async function startStream() {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  while (state.token && state.stream === ctl) {
    try {
      const headers = { Authorization: "Bearer " + state.token };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const r = await fetch("/api/realtime/queue-events", { headers, signal: ctl.signal });
      if (r.status === 401) return signOut("your token was refused");
      if (!r.ok || !r.body) throw new Error("stream answered " + r.status);
      setLive(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    setLive(false, "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function onFrame(block) {
  const frame = { event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const name = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (name === "id") frame.id = value;
    else if (name === "event") frame.event = value;
    else if (name === "data") frame.data += value;
  }
  if (!frame.data) return;
  if (frame.id) state.lastEventId = frame.id;
  const data = JSON.parse(frame.data);
  if (frame.event === "heartbeat") return setLive(true, "live " + when(data.at).slice(11));
  if (frame.event === "state") return setQueues(data.queues);
  if (frame.event === "resync") return api("GET", API).then(setQueues);
  if (frame.event === "queue.stats" && state.queues.has(data.queue)) {
    state.queues.get(data.queue).stats = data.data;
    renderQueueRow(data.queue);
  }
  if (data.queue && state.queues.has(data.queue)) refreshSoon(data.queue, frame.event);
}

function refreshSoon(queue, event) {
  // bursts of job events become one read of the queue's counts (and of the open table)
  const key = queue + (event.startsWith("dlq.") ? "|dlq" : "");
  if (state.refreshTimers.has(key)) return;
  state.refreshTimers.set(
    key,
    setTimeout(async () => {
      state.refreshTimers.delete(key);
      const summary = await api("GET", `${API}/${q(queue)}/stats`).catch(() => null);
      if (summary) {
        state.queues.set(queue, summary);
        renderQueueRow(queue);
        if (state.view && state.view.kind === "queue" && state.view.queue === queue) renderQueueHeader();
      }
      const v = state.view;
      if (v && v.kind === "queue" && v.queue === queue && v.tab === "dlq" && event.startsWith("dlq.")) loadDlq(false);
    }, 200),
  );
}

// ---- queue list ------------------------------------------------------------------------------
const COUNT_FIELDS = ["waiting", "active", "delayed", "completed", "dead"];

function setQueues(queues) {
  state.queues = new Map(queues.map((s) => [s.queue, s]));
  const body = $("queue-table").tBodies[0];
  body.replaceChildren();
  for (const s of queues) {
    const tr = el("tr", null, { "data-queue": s.queue });
    const th = el("th", null, { scope: "row" });
    th.append(el("a", s.queue, { href: "#/queue/" + q(s.queue) }));
    tr.append(th, el("td", s.family), el("td", "", { "data-field": "paused" }));
    for (const f of COUNT_FIELDS) tr.append(el("td", "", { "data-field": f, class: "num" }));
    tr.append(el("td", "", { "data-field": "rate", class: "num" }));
    body.append(tr);
    renderQueueRow(s.queue);
  }
  if (state.view && state.view.kind === "queue") renderQueueHeader();
}

function renderQueueRow(queue) {
  const s = state.queues.get(queue);
  const tr = document.querySelector(`#queue-table tr[data-queue="${CSS.escape(queue)}"]`);
  if (!s || !tr) return;
  const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
  cell("paused").textContent = s.counts.paused ? "paused" : "no";
  for (const f of COUNT_FIELDS) cell(f).textContent = String(s.counts[f]);
  cell("rate").textContent = s.stats ? Number(s.stats.rate).toFixed(2) : "-";
}

// ---- one queue -------------------------------------------------------------------------------
const TABS = ["jobs", "failed", "dlq", "metrics"];

function renderQueueHeader() {
  const v = state.view;
  const s = state.queues.get(v.queue);
  $("queue-title").textContent = v.queue;
  if (!s) return;
  const c = s.counts;
  $("queue-summary").textContent =
    `${s.family} - ${s.description} - waiting ${c.waiting}, active ${c.active}, delayed ${c.delayed}, ` +
    `completed ${c.completed}, dead ${c.dead}`;
  $("pause-toggle").textContent = c.paused ? "Resume" : "Pause";
}

function showTab(tab) {
  state.view.tab = tab;
  for (const t of TABS) {
    $("tab-" + t).setAttribute("aria-selected", String(t === tab));
    $("panel-" + t).hidden = t !== tab;
  }
  if (tab === "jobs") loadJobs("jobs", false);
  if (tab === "failed") loadJobs("failed", false);
  if (tab === "dlq") loadDlq(false);
  if (tab === "metrics") loadMetrics();
}

function heads(table, names) {
  const tr = el("tr");
  for (const n of names) tr.append(el("th", n, { scope: "col" }));
  table.tHead.replaceChildren(tr);
}

async function loadJobs(kind, more) {
  const queue = state.view.queue;
  const params = new URLSearchParams({ state: $(kind + "-state").value, limit: "50" });
  const search = $(kind + "-search").value.trim();
  if (search) params.set("search", search);
  if (more && state.cursors[kind]) params.set("cursor", state.cursors[kind]);
  const page = await api("GET", `${API}/${q(queue)}/jobs?${params}`);
  const table = $(kind + "-table");
  heads(table, ["id", "name", "state", "attempts", "enqueued", "error"]);
  if (!more) table.tBodies[0].replaceChildren();
  for (const j of page.items) {
    const tr = el("tr", null, { "data-job": j.id });
    const td = el("td");
    td.append(el("a", j.id, { href: `#/queue/${q(queue)}/job/${q(j.id)}` }));
    tr.append(td, el("td", j.name), el("td", j.state), el("td", j.attempts, { class: "num" }));
    tr.append(el("td", when(j.enqueued_at)), el("td", (j.error || "").slice(0, 80)));
    table.tBodies[0].append(tr);
  }
  state.cursors[kind] = page.next_cursor;
  $(kind + "-more").hidden = !page.next_cursor;
}

function dlqFilters() {
  const f = {};
  const errorType = $("dlq-error-type").value.trim();
  const text = $("dlq-text").value.trim();
  if (errorType) f.error_type = errorType;
  if (text) f.text = text;
  return f;
}

async function loadDlq(more) {
  const queue = state.view.queue;
  const params = new URLSearchParams({ limit: "50", ...dlqFilters() });
  if (more && state.cursors.dlq) params.set("cursor", state.cursors.dlq);
  const page = await api("GET", `${API}/${q(queue)}/dlq?${params}`);
  const table = $("dlq-table");
  heads(table, ["DLQ id", "job", "name", "error type", "error", "attempts", "failed at", "actions"]);
  if (!more) table.tBodies[0].replaceChildren();
  for (const d of page.items) {
    const tr = el("tr", null, { "data-dlq": d.dlq_id });
    const job = el("td");
    job.append(el("a", d.job_id, { href: `#/queue/${q(queue)}/job/${q(d.job_id)}` }));
    tr.append(el("td", d.dlq_id), job, el("td", d.name), el("td", d.error_type), el("td", d.error.slice(0, 80)));
    tr.append(el("td", d.attempts, { class: "num" }), el("td", when(d.failed_at)));
    const actions = el("td");
    const replay = el("button", "Replay", { type: "button", "aria-label": "Replay " + d.dlq_id });
    replay.addEventListener("click", () => act(() => api("POST", `${API}/${q(queue)}/dlq/${q(d.dlq_id)}/replay`), tr));
    const del = el("button", "Delete", { type: "button", "aria-label": "Delete " + d.dlq_id });
    del.addEventListener("click", () => {
      if (confirm(`Delete DLQ entry ${d.dlq_id}?`)) act(() => api("DELETE", `${API}/${q(queue)}/dlq/${q(d.dlq_id)}`), tr);
    });
    actions.append(replay, " ", del);
    tr.append(actions);
    table.tBodies[0].append(tr);
  }
  state.cursors.dlq = page.next_cursor;
  $("dlq-more").hidden = !page.next_cursor;
}

async function act(call, row) {
  try {
    await call();
    if (row) row.remove();
    say("");
  } catch (e) {
    /* the message is shown by api() */
  }
}

async function loadMetrics() {
  const rows = await api("GET", `${API}/${q(state.view.queue)}/metrics?hours=24`);
  const table = $("metrics-table");
  heads(table, ["bucket", "enqueued", "completed", "failed", "dead", "avg ms", "p95 ms", "max waiting"]);
  table.tBodies[0].replaceChildren();
  for (const m of rows) {
    const tr = el("tr");
    tr.append(el("td", m.bucket_start.replace("T", " ").slice(0, 16)));
    for (const f of ["enqueued", "completed", "failed", "dead"]) tr.append(el("td", m[f], { class: "num" }));
    for (const f of ["avg_duration_ms", "p95_duration_ms"])
      tr.append(el("td", m[f] === null ? "-" : Number(m[f]).toFixed(1), { class: "num" }));
    tr.append(el("td", m.max_waiting, { class: "num" }));
    table.tBodies[0].append(tr);
  }
  const svg = $("metrics-chart");
  svg.replaceChildren();
  const max = Math.max(1, ...rows.map((m) => m.completed + m.failed));
  const width = 600 / Math.max(rows.length, 1);
  rows.forEach((m, i) => {
    const ok = (m.completed / max) * 150;
    const failed = (m.failed / max) * 150;
    const ns = "http://www.w3.org/2000/svg";
    for (const [h, y, cls] of [[ok, 160 - ok, "bar-ok"], [failed, 160 - ok - failed, "bar-failed"]]) {
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", String(i * width));
      r.setAttribute("y", String(y));
      r.setAttribute("width", String(Math.max(width - 1, 1)));
      r.setAttribute("height", String(h));
      r.setAttribute("class", cls);
      svg.append(r);
    }
  });
}

// ---- one job ---------------------------------------------------------------------------------
async function loadJob(queue, id) {
  $("job-title").textContent = `${queue} / ${id}`;
  $("job-back").setAttribute("href", "#/queue/" + q(queue));
  const j = await api("GET", `${API}/${q(queue)}/jobs/${q(id)}`);
  const dl = $("job-fields");
  dl.replaceChildren();
  for (const k of ["name", "state", "attempts", "max_attempts", "error_type", "error", "trace_id", "replay_of", "replayed_as", "dlq_id"]) {
    if (j[k] === null || j[k] === undefined || j[k] === "") continue;
    dl.append(el("dt", k), el("dd", j[k]));
  }
  $("job-payload").textContent = JSON.stringify(j.payload, null, 2);
  $("job-stack").textContent = j.stack || j.error || "none";
  const ol = $("job-timeline");
  ol.replaceChildren();
  for (const t of j.timeline) {
    const what = [t.event, t.type || "", t.message || ""].join(" ").trim();
    ol.append(el("li", `${when(t.at)} ${what}`));
  }
}

// ---- routing ---------------------------------------------------------------------------------
function route() {
  if (!state.token) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const id of ["queues", "queue", "job"]) $(id).hidden = true;
  if (parts[0] === "queue" && parts[1] && parts[2] === "job" && parts[3]) {
    state.view = { kind: "job", queue: parts[1], id: parts[3] };
    $("job").hidden = false;
    loadJob(parts[1], parts[3]).catch(() => {});
  } else if (parts[0] === "queue" && parts[1]) {
    state.view = { kind: "queue", queue: parts[1], tab: "jobs" };
    $("queue").hidden = false;
    $("purge-confirm").value = "";
    $("purge-button").disabled = true;
    renderQueueHeader();
    showTab("jobs");
  } else {
    state.view = { kind: "queues" };
    $("queues").hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value.trim());
    $("token").value = "";
  });
  $("signout").addEventListener("click", () => signOut("signed out"));
  for (const t of TABS) $("tab-" + t).addEventListener("click", () => showTab(t));
  for (const kind of ["jobs", "failed"]) {
    $(kind + "-form").addEventListener("submit", (e) => {
      e.preventDefault();
      loadJobs(kind, false).catch(() => {});
    });
    $(kind + "-more").addEventListener("click", () => loadJobs(kind, true).catch(() => {}));
  }
  $("dlq-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadDlq(false).catch(() => {});
  });
  $("dlq-more").addEventListener("click", () => loadDlq(true).catch(() => {}));
  $("dlq-replay-all").addEventListener("click", async () => {
    if (!confirm("Replay every matching DLQ entry?")) return;
    await act(() => api("POST", `${API}/${q(state.view.queue)}/dlq/replay`, { all: true, ...dlqFilters() }));
    loadDlq(false).catch(() => {});
  });
  $("purge-confirm").addEventListener("input", () => {
    $("purge-button").disabled = $("purge-confirm").value !== state.view.queue;
  });
  $("purge-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const confirmName = $("purge-confirm").value;
    await act(() => api("POST", `${API}/${q(state.view.queue)}/dlq/purge`, { confirm: confirmName }));
    $("purge-confirm").value = "";
    $("purge-button").disabled = true;
    loadDlq(false).catch(() => {});
  });
  $("pause-toggle").addEventListener("click", async () => {
    const s = state.queues.get(state.view.queue);
    const paused = s && s.counts.paused;
    await act(() => api("POST", `${API}/${q(state.view.queue)}/${paused ? "resume" : "pause"}`));
  });
  $("job-retry").addEventListener("click", async () => {
    const v = state.view;
    const r = await api("POST", `${API}/${q(v.queue)}/jobs/${q(v.id)}/retry`).catch(() => null);
    if (r) location.hash = `#/queue/${q(v.queue)}/job/${q(r.job_id)}`;
  });
  $("job-remove").addEventListener("click", async () => {
    const v = state.view;
    if (!confirm(`Remove job ${v.id}?`)) return;
    const r = await api("DELETE", `${API}/${q(v.queue)}/jobs/${q(v.id)}`).catch(() => null);
    if (r) location.hash = "#/queue/" + q(v.queue);
  });
  window.addEventListener("hashchange", route);
  if (state.token) signIn(state.token);
});

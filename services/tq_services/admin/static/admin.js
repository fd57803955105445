// The owner's page: plain DOM, no build step. Data is only ever written with textContent.
// Charts are uPlot (vendored, see VENDOR.md). Every navigation bumps state.nav: a view is cleared
// before it loads, and an answer that arrives after the operator moved on is dropped, so no view
// ever shows another view's (or another job's, or another queue's) data.
"use strict";

const API = "/api/owner";
const QUEUES = API + "/queues";
const JOB_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const VIEWS = ["overview", "queues", "queue", "job", "workers", "schedules"];
const TABS = ["overview", "jobs", "dlq"];
const LIVE_POINTS = 300; // 10 minutes of 2-second samples
const RATE_WINDOW_S = 60; // jobs/s is taken over the last minute of samples, not one interval

const state = {
  token: sessionStorage.getItem("tq-admin-token") || "",
  queues: new Map(), // name -> summary as GET /api/owner/queues gives it
  view: { kind: "none" },
  nav: 0, // bumped by every navigation; loaders drop answers of an older one
  stream: null, // AbortController of the live stream
  lastEventId: "",
  viewTimers: [], // intervals of the current view, cleared on navigation
  charts: [], // uPlot instances of the current view, destroyed on navigation
  samples: new Map(), // queue -> [[t, completed]] for jobs/s
  live: { t: [], completed: [], failed: [], prev: null },
  liveChart: null,
  sort: { key: "queue", dir: 1 },
  selected: { jobs: new Set(), dlq: new Set() },
  cursors: {},
  range: "hour",
  workers: null,
  configs: new Map(), // queue -> its live config, read once per navigation
  seq: { jobs: 0, dlq: 0 }, // the latest load of each list: an older answer arriving late is dropped
};

const $ = (id) => document.getElementById(id);
const q = encodeURIComponent;
const current = (nav) => nav === state.nav;

// ---- messages --------------------------------------------------------------------------------
function say(text) {
  $("message-text").textContent = text || "";
  $("message").hidden = !text;
}

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// what the operator can do about an answer, after the API's own message
function advice(status, message, retryAfter) {
  if (status === 403) return `${message}. This needs an owner token: sign out and sign in with one.`;
  if (status === 404) return message;
  if (status === 409) return `${message}. Reload the list to see the job's current state.`;
  if (status === 413) return `${message}. Select fewer entries.`;
  if (status === 422) return `${message}. Correct the input and try again.`;
  if (status === 429) return `${message}. Wait ${retryAfter || "a few"} s and try again.`;
  if (status >= 500) return `${message}. The page retries on its own; if it persists, check the admin service's log.`;
  return message;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiFailure(0, "The admin service cannot be reached. Check your connection; the page reconnects by itself.");
  }
  const data = await r.json().catch(() => ({}));
  const message = (data.error && data.error.message) || r.statusText || "request failed";
  if (r.status === 401) {
    signOut(`Your token was refused (${message}). Sign in with a new one: tq token create --role owner --ttl 1h`);
    throw new ApiFailure(401, message);
  }
  if (!r.ok) throw new ApiFailure(r.status, advice(r.status, message, r.headers.get("Retry-After")));
  return data;
}

// run a load of the view opened at `nav`; its failure is shown only while that view is open
function load(nav, promise) {
  return promise.catch((e) => {
    if (current(nav) && e.status !== 401) say(e.message);
    return null;
  });
}

// ---- formatting ------------------------------------------------------------------------------
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const ABS = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  timeZoneName: "short",
});

// epoch seconds; a value in milliseconds (a failure's "at") is taken as such, never as year 58889
function seconds(epoch) {
  if (epoch === null || epoch === undefined || epoch === "" || !isFinite(epoch)) return null;
  const n = Number(epoch);
  return n > 1e11 ? n / 1000 : n;
}

function absolute(epoch) {
  const s = seconds(epoch);
  return s === null ? "-" : `${ABS.format(new Date(s * 1000))} (${TZ})`;
}

function relative(epoch) {
  const s = seconds(epoch);
  if (s === null) return "-";
  const d = s - Date.now() / 1000;
  const a = Math.abs(d);
  const text =
    a < 1 ? "now" : a < 60 ? `${Math.round(a)} s` : a < 3600 ? `${Math.round(a / 60)} min` :
    a < 86400 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  if (text === "now") return text;
  return d < 0 ? `${text} ago` : `in ${text}`;
}

// a relative time, with the absolute time and time zone on hover (and for screen readers)
function timeEl(epoch) {
  const s = seconds(epoch);
  if (s === null) return el("span", "-");
  const t = el("time", relative(s), { datetime: new Date(s * 1000).toISOString(), title: absolute(s), "data-at": String(s) });
  return t;
}

function rate(r) {
  if (r === null || r === undefined || !isFinite(r)) return "-";
  if (r === 0) return "0";
  if (r < 0.01) return r.toFixed(3);
  if (r < 100) return r.toFixed(2);
  return r.toFixed(0);
}

function ms(v) {
  return v === null || v === undefined ? "-" : Number(v) < 10 ? Number(v).toFixed(2) : Number(v).toFixed(0);
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function td(content, attrs) {
  const cell = el("td", null, attrs);
  if (content instanceof Node) cell.append(content);
  else cell.textContent = content === null || content === undefined ? "-" : String(content);
  return cell;
}

function link(text, href) {
  return el("a", text, { href });
}

function heads(table, names) {
  const tr = el("tr");
  for (const n of names) tr.append(el("th", n, { scope: "col" }));
  table.tHead.replaceChildren(tr);
}

function clearTable(table) {
  table.tHead.replaceChildren();
  table.tBodies[0].replaceChildren();
}

function emptyRow(table, text, span) {
  const tr = el("tr");
  tr.append(el("td", text, { colspan: String(span), class: "empty" }));
  table.tBodies[0].append(tr);
}

function fieldList(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    const dd = el("dd");
    if (v instanceof Node) dd.append(v);
    else dd.textContent = String(v);
    dl.append(el("dt", k), dd);
  }
}

// ---- sign in / out ---------------------------------------------------------------------------
function signOut(reason) {
  state.token = "";
  sessionStorage.removeItem("tq-admin-token");
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.nav++;
  resetView();
  setLive(false);
  $("login").hidden = false;
  for (const id of ["signout", "nav", "find-form"]) $(id).hidden = true;
  say(reason || "");
}

async function signIn(token) {
  state.token = token;
  let queues;
  try {
    queues = await api("GET", QUEUES);
  } catch (e) {
    if (e.status !== 401) say(e.message);
    return;
  }
  sessionStorage.setItem("tq-admin-token", token);
  $("login").hidden = true;
  for (const id of ["signout", "nav", "find-form"]) $(id).hidden = false;
  say("");
  setQueues(queues);
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
      if (r.status === 401) return signOut("Your token was refused by the live stream. Sign in with a new one.");
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
  let data;
  try {
    data = JSON.parse(frame.data);
  } catch (e) {
    return;
  }
  if (frame.event === "heartbeat") return setLive(true, "live");
  if (frame.event === "state") return setQueues(data.queues);
  if (frame.event === "resync") return api("GET", QUEUES).then(setQueues).catch(() => {});
  if (frame.event === "job.progress") {
    // the open job's bar moves with each report; nothing else changes, so nothing is read again
    const v = state.view;
    if (v.kind === "job" && v.queue === data.queue && v.id === data.job_id && data.data && typeof data.data.fraction === "number") {
      showProgress(data.data.fraction, data.data.message);
    }
    return;
  }
  if (frame.event === "queue.stats" && state.queues.has(data.queue)) {
    state.queues.get(data.queue).stats = data.data;
    queuesChanged();
  }
  if (data.queue && state.queues.has(data.queue) && frame.event !== "queue.stats" && frame.event !== "dlq.stats") {
    refreshSoon(data.queue, frame.event);
  }
}

// Events mark what they touch; at most once a second the page reads it again: the touched queues'
// counts (one call for all when many are busy) and the open list or job. A busy system costs a few
// requests a second, far below the token's rate limit, however many events it publishes.
const dirty = { queues: new Set(), jobs: false, dlq: false, job: false };
let flushTimer = null;
const FLUSH_MS = 1000;

function refreshSoon(queue, event) {
  dirty.queues.add(queue);
  const v = state.view;
  if (v.kind === "queue" && v.queue === queue) {
    if (event.startsWith("dlq.") || event === "job.dead") dirty.dlq = true;
    if (event.startsWith("job.")) dirty.jobs = true;
  }
  if (v.kind === "job" && v.queue === queue && event.startsWith("job.")) dirty.job = true;
  if (!flushTimer) flushTimer = setTimeout(flush, FLUSH_MS);
}

async function flush() {
  flushTimer = null;
  if (!state.token) return;
  const queues = [...dirty.queues];
  const { jobs, dlq, job } = dirty;
  dirty.queues.clear();
  dirty.jobs = dirty.dlq = dirty.job = false;
  if (queues.length > 3) {
    const all = await api("GET", QUEUES).catch(() => null);
    if (all) setQueues(all);
  } else {
    for (const queue of queues) {
      const summary = await api("GET", `${QUEUES}/${q(queue)}/stats`).catch(() => null);
      if (summary) state.queues.set(queue, summary);
    }
    queuesChanged();
  }
  const v = state.view;
  const nav = state.nav;
  if (v.kind === "queue" && v.tab === "jobs" && jobs && !state.cursors.jobsPaged) load(nav, loadJobs(nav, false));
  if (v.kind === "queue" && v.tab === "dlq" && dlq && !state.cursors.dlqPaged) load(nav, loadDlq(nav, false));
  if (v.kind === "job" && job) load(nav, loadJob(nav, v.queue, v.id, true));
}

// ---- counts and rates ------------------------------------------------------------------------
function completedOf(s) {
  return Math.max(s.counts.completed, s.stats ? s.stats.completed : 0);
}

function failedOf(s) {
  return Math.max(s.counts.retried, s.stats ? s.stats.failed : 0);
}

function sample(queue, s, now) {
  const list = state.samples.get(queue) || [];
  list.push([now, completedOf(s)]);
  while (list.length > 2 && now - list[0][0] > RATE_WINDOW_S) list.shift();
  state.samples.set(queue, list);
}

// completions per second over the last minute seen by this page; the stats leader's rate (one
// interval) until the page has seen a few seconds
function jobsPerSecond(queue) {
  const s = state.queues.get(queue);
  const list = state.samples.get(queue) || [];
  if (list.length >= 2) {
    const [t0, c0] = list[0];
    const [t1, c1] = list[list.length - 1];
    if (t1 - t0 >= 5) return Math.max(0, c1 - c0) / (t1 - t0);
  }
  return s && s.stats ? Number(s.stats.rate) : null;
}

function setQueues(queues) {
  state.queues = new Map(queues.map((s) => [s.queue, s]));
  queuesChanged();
}

let renderPending = false;
function queuesChanged() {
  const now = Date.now() / 1000;
  for (const [name, s] of state.queues) sample(name, s, now);
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    const v = state.view;
    if (v.kind === "queues") renderQueueTable();
    if (v.kind === "overview") renderOverviewLive();
    if (v.kind === "queue") renderQueueHeader();
  });
}

// the live chart: every 2 s, all queues' completed and failed totals, as per-second rates
function sampleLive() {
  let completed = 0;
  let failed = 0;
  for (const s of state.queues.values()) {
    completed += completedOf(s);
    failed += failedOf(s);
  }
  const now = Date.now() / 1000;
  const L = state.live;
  if (L.prev) {
    const dt = Math.max(now - L.prev.t, 0.001);
    L.t.push(now);
    L.completed.push(Math.max(0, completed - L.prev.completed) / dt);
    L.failed.push(Math.max(0, failed - L.prev.failed) / dt);
    if (L.t.length > LIVE_POINTS) for (const k of ["t", "completed", "failed"]) L[k].shift();
  }
  L.prev = { t: now, completed, failed };
  if (state.liveChart) state.liveChart.setData([L.t, L.completed, L.failed]);
}

// ---- charts (uPlot) --------------------------------------------------------------------------
function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

// a time chart in `box`: series = [{label, color, unit}], data = [xs, ...ys], x range optional
function chart(box, series, data, unit, range) {
  box.replaceChildren();
  if (typeof uPlot === "undefined") {
    box.textContent = "The chart library did not load; reload the page.";
    return null;
  }
  const fg = color("--fg");
  const grid = color("--line");
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const opts = {
    width: Math.max(box.clientWidth, 260),
    height: 220,
    scales: { x: { time: true, range: range ? () => range : undefined }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    series: [
      { label: "time", value: (u, v) => (v === null ? "-" : absolute(v)) },
      ...series.map((s) => ({
        label: s.label,
        stroke: color(s.color),
        width: 2,
        points: { show: data[0].length < 60, size: 5, fill: color(s.color) },
        value: (u, v) => (v === null || v === undefined ? "-" : `${unit === "ms" ? ms(v) : rate(v)} ${unit}`),
      })),
    ],
    axes: [
      { ...axis, label: `time (${TZ})`, labelSize: 20 },
      { ...axis, label: unit, labelSize: 20, size: 56, values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : unit === "ms" ? ms(v) : rate(v))) },
    ],
    legend: { live: true },
  };
  const u = new uPlot(opts, data, box);
  state.charts.push(u);
  return u;
}

function resizeCharts() {
  for (const u of state.charts) {
    const box = u.root.parentElement;
    if (box) u.setSize({ width: Math.max(box.clientWidth, 260), height: 220 });
  }
}

// ---- routing ---------------------------------------------------------------------------------
function resetView() {
  for (const u of state.charts) u.destroy();
  state.charts = [];
  state.liveChart = null;
  for (const t of state.viewTimers) clearInterval(t);
  state.viewTimers = [];
  for (const v of VIEWS) $("view-" + v).hidden = true;
  state.selected.jobs.clear();
  state.selected.dlq.clear();
  state.cursors = {};
  state.configs.clear();
}

// the queue's live config (its retry policy gives a job's attempts when the job sets none)
async function queueConfig(queue) {
  if (!state.configs.has(queue)) state.configs.set(queue, await api("GET", `${QUEUES}/${q(queue)}/config`));
  return state.configs.get(queue);
}

function maxAttempts(j, cfg) {
  return j.max_attempts || (cfg ? cfg.retry.attempts : null);
}

function every(ms_, fn) {
  state.viewTimers.push(setInterval(fn, ms_));
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  if (!raw) return [];
  try {
    return raw.split("/").map(decodeURIComponent);
  } catch (e) {
    return null; // a malformed escape (e.g. "%E0%A4%A"): not a page
  }
}

function route() {
  if (!state.token) return;
  const nav = ++state.nav;
  resetView();
  say("");
  const parts = parseHash();
  let kind = "overview";
  if (parts === null) {
    say("That address is not a page of this console (it is not valid URL encoding). Showing the overview.");
  } else if (parts.length === 0 || (parts.length === 1 && parts[0] === "")) {
    kind = "overview";
  } else if (parts[0] === "queues" && parts.length === 1) kind = "queues";
  else if (parts[0] === "workers" && parts.length === 1) kind = "workers";
  else if (parts[0] === "schedules" && parts.length === 1) kind = "schedules";
  else if (parts[0] === "find" && parts.length === 2) kind = "find";
  else if (parts[0] === "queue" && parts[1] && parts[2] === "job" && parts[3] && parts.length === 4) kind = "job";
  else if (parts[0] === "queue" && parts[1] && parts.length <= 3 && (parts.length === 2 || TABS.includes(parts[2]))) kind = "queue";
  else say(`There is no page at #/${parts.join("/")}. Showing the overview.`);

  for (const a of document.querySelectorAll("#nav a")) {
    const active = a.dataset.nav === kind || (a.dataset.nav === "queues" && (kind === "queue" || kind === "job"));
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (kind === "overview") showOverview(nav);
  else if (kind === "queues") showQueues();
  else if (kind === "workers") showWorkers(nav);
  else if (kind === "schedules") showSchedules(nav);
  else if (kind === "find") findJob(nav, parts[1]);
  else if (kind === "job") showJob(nav, parts[1], parts[3]);
  else showQueue(nav, parts[1], parts[2] || "overview");
}

// ---- overview --------------------------------------------------------------------------------
function showOverview(nav) {
  state.view = { kind: "overview" };
  $("view-overview").hidden = false;
  for (const id of ["busiest", "failing", "dlq-sizes"]) clearTable($(id));
  $("totals").replaceChildren();
  $("paused-list").replaceChildren();
  const L = state.live;
  state.liveChart = chart($("chart-live"), [
    { label: "completed", color: "--ok" },
    { label: "failed", color: "--bad" },
  ], [L.t, L.completed, L.failed], "jobs/s");
  renderOverviewLive();
  load(nav, loadHistory(nav));
  load(nav, loadWorkerCount(nav));
  every(5000, () => load(nav, loadWorkerCount(nav)));
  every(60000, () => load(nav, loadHistory(nav)));
}

async function loadWorkerCount(nav) {
  const workers = await api("GET", API + "/workers");
  if (!current(nav)) return;
  state.workers = workers.length;
  renderOverviewLive();
}

function renderOverviewLive() {
  const all = [...state.queues.values()];
  const sum = (f) => all.reduce((n, s) => n + (f(s) || 0), 0);
  const totalRate = all.reduce((n, s) => n + (jobsPerSecond(s.queue) || 0), 0);
  const cards = [
    ["queues", all.length],
    ["waiting", sum((s) => s.counts.waiting)],
    ["active", sum((s) => s.counts.active)],
    ["delayed", sum((s) => s.counts.delayed)],
    ["retrying", sum((s) => s.counts.retrying)],
    ["dead letters", sum((s) => s.counts.dead)],
    ["completed", sum((s) => s.counts.completed)],
    ["jobs/s (1 min)", rate(totalRate)],
    ["workers", state.workers === null ? "-" : state.workers],
    ["paused", all.filter((s) => s.counts.paused).length],
  ];
  const dl = $("totals");
  dl.replaceChildren();
  for (const [k, v] of cards) {
    const box = el("div", null, { "data-total": k });
    box.append(el("dt", k), el("dd", v));
    dl.append(box);
  }
  const withDead = all.filter((s) => s.counts.dead > 0).sort((a, b) => b.counts.dead - a.counts.dead);
  queueCounts($("dlq-sizes"), "dead letters", withDead.map((s) => [s.queue, s.counts.dead]), "/dlq", "No dead letters in any queue.");
  const paused = $("paused-list");
  paused.replaceChildren();
  for (const s of all.filter((s) => s.counts.paused)) {
    const li = el("li");
    li.append(link(s.queue, `#/queue/${q(s.queue)}`));
    paused.append(li);
  }
  if (!paused.children.length) paused.append(el("li", "None: every queue is running.", { class: "empty" }));
}

// a two-column table of the overview: each queue (a link to its view + `tab`) and a count
function queueCounts(table, label, rows, tab, empty) {
  heads(table, ["queue", label]);
  table.tHead.rows[0].cells[1].className = "num";
  table.tBodies[0].replaceChildren();
  for (const [queue, n] of rows) {
    const tr = el("tr", null, { "data-queue": queue });
    tr.append(td(link(queue, `#/queue/${q(queue)}${tab}`)), td(n, { class: "num" }));
    table.tBodies[0].append(tr);
  }
  if (!rows.length) emptyRow(table, empty, 2);
}

async function loadHistory(nav) {
  const m = await api("GET", `${API}/overview/metrics?range=${state.range}`);
  if (!current(nav)) return;
  for (const b of document.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
  const per = m.bucket_s === 3600 ? "hour" : "5 minutes";
  $("history-caption").textContent = `History: jobs per ${per}, all queues, last ${m.range}`;
  const xs = m.points.map((p) => p.at);
  const box = $("chart-history");
  const old = state.charts.findIndex((u) => u.root.parentElement === box);
  if (old >= 0) state.charts.splice(old, 1)[0].destroy();
  chart(box, [
    { label: "completed", color: "--ok" },
    { label: "failed", color: "--bad" },
    { label: "dead", color: "--dead" },
  ], [xs, m.points.map((p) => p.completed), m.points.map((p) => p.failed), m.points.map((p) => p.dead)],
  `jobs / ${per === "hour" ? "h" : "5 min"}`, [m.since, Date.now() / 1000]);
  $("history-empty").hidden = m.points.length > 0;
  const top = (table, field, caption) => {
    const rows = m.queues.filter((t) => t[field] > 0).sort((a, b) => b[field] - a[field]).slice(0, 5);
    queueCounts(table, field, rows.map((t) => [t.queue, t[field]]), "", caption);
  };
  top($("busiest"), "completed", `No completed jobs in the last ${m.range}.`);
  top($("failing"), "failed", `No failed jobs in the last ${m.range}.`);
}

// ---- queue list ------------------------------------------------------------------------------
const COLUMNS = [
  { key: "queue", label: "queue", get: (s) => s.queue },
  { key: "family", label: "family", get: (s) => s.family },
  { key: "paused", label: "paused", get: (s) => (s.counts.paused ? 1 : 0), show: (s) => (s.counts.paused ? "paused" : "no") },
  { key: "waiting", label: "waiting", get: (s) => s.counts.waiting },
  { key: "active", label: "active", get: (s) => s.counts.active },
  { key: "delayed", label: "delayed", get: (s) => s.counts.delayed },
  { key: "retrying", label: "retrying", get: (s) => s.counts.retrying, title: "waiting out a retry backoff" },
  { key: "failed", label: "failed", get: (s) => failedOf(s), title: "failed attempts in all: retried + dead-lettered" },
  { key: "dead", label: "dead", get: (s) => s.counts.dead, title: "entries in the dead-letter queue" },
  { key: "rate", label: "jobs/s", get: (s) => jobsPerSecond(s.queue), show: (s) => rate(jobsPerSecond(s.queue)), title: "completed per second, last minute" },
  { key: "p95", label: "p95 ms", get: (s) => (s.stats ? s.stats.p95DurationMs : null), show: (s) => ms(s.stats ? s.stats.p95DurationMs : null) },
  { key: "consumers", label: "consumers", get: (s) => s.counts.consumers },
];

function showQueues() {
  state.view = { kind: "queues" };
  $("view-queues").hidden = false;
  renderQueueTable();
}

function renderQueueTable() {
  const table = $("queue-table");
  const tr = el("tr");
  for (const c of COLUMNS) {
    const th = el("th", null, { scope: "col", class: c.key === "queue" || c.key === "family" ? "" : "num" });
    if (state.sort.key === c.key) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
    const b = el("button", c.label, { type: "button", class: "sort", "data-sort": c.key });
    if (c.title) b.setAttribute("title", c.title);
    b.addEventListener("click", () => {
      state.sort = { key: c.key, dir: state.sort.key === c.key ? -state.sort.dir : c.key === "queue" || c.key === "family" ? 1 : -1 };
      renderQueueTable();
      const again = document.querySelector(`#queue-table button[data-sort="${c.key}"]`);
      if (again) again.focus();
    });
    th.append(b);
    tr.append(th);
  }
  table.tHead.replaceChildren(tr);
  const needle = $("queues-filter").value.trim().toLowerCase();
  const col = COLUMNS.find((c) => c.key === state.sort.key) || COLUMNS[0];
  const rows = [...state.queues.values()]
    .filter((s) => !needle || s.queue.toLowerCase().includes(needle) || s.family.toLowerCase().includes(needle))
    .sort((a, b) => {
      const x = col.get(a);
      const y = col.get(b);
      if (x === y) return a.queue < b.queue ? -1 : 1;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * state.sort.dir;
    });
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const s of rows) {
    const row = el("tr", null, { "data-queue": s.queue });
    const th = el("th", null, { scope: "row" });
    th.append(link(s.queue, "#/queue/" + q(s.queue)));
    row.append(th);
    for (const c of COLUMNS.slice(1)) {
      const v = c.show ? c.show(s) : c.get(s);
      const cell = td(v === null || v === undefined ? "-" : v, { "data-field": c.key, class: c.key === "family" ? "" : "num" });
      if (c.key === "paused" && s.counts.paused) cell.classList.add("paused");
      row.append(cell);
    }
    body.append(row);
  }
  if (!rows.length) emptyRow(table, needle ? `No queue matches "${needle}".` : "No queues are registered.", COLUMNS.length);
}

// ---- one queue -------------------------------------------------------------------------------
let filtersOf = null; // the queue the filter fields were filled for

function showQueue(nav, queue, tab) {
  state.view = { kind: "queue", queue, tab };
  if (filtersOf !== queue) {
    // another queue's filters would silently narrow this one's lists
    for (const id of ["jobs-search", "dlq-error-type", "dlq-text", "dlq-since", "dlq-until"]) $(id).value = "";
    $("jobs-state").value = "waiting";
    filtersOf = queue;
  }
  $("view-queue").hidden = false;
  $("queue-title").textContent = queue;
  $("queue-summary").textContent = "";
  $("pause-toggle").hidden = true;
  for (const t of TABS) {
    const a = $("tab-" + t);
    a.setAttribute("href", `#/queue/${q(queue)}/${t}`);
    a.setAttribute("aria-selected", String(t === tab));
    $("panel-" + t).hidden = true;
  }
  for (const id of ["jobs-table", "dlq-table", "dlq-groups", "queue-consumers"]) clearTable($(id));
  for (const id of ["queue-config"]) $(id).replaceChildren();
  for (const id of ["jobs-empty", "dlq-empty", "jobs-more", "dlq-more", "dlq-confirm", "queue-chart-empty"]) $(id).hidden = true;
  for (const id of ["jobs-selected", "dlq-selected", "jobs-status", "dlq-status"]) $(id).textContent = "";
  $("purge-confirm").value = "";
  $("purge-button").disabled = true;
  if (!state.queues.has(queue)) {
    $("queue-title").textContent = `Unknown queue ${queue}`;
    $("queue-tabs").hidden = true;
    say(`There is no queue named ${queue}. Pick one from the Queues list.`);
    return;
  }
  $("queue-tabs").hidden = false;
  $("panel-" + tab).hidden = false;
  renderQueueHeader();
  if (tab === "overview") {
    load(nav, loadQueueCharts(nav, queue));
    load(nav, loadQueueConfig(nav, queue));
    load(nav, loadConsumers(nav, queue));
    every(5000, () => load(nav, loadConsumers(nav, queue)));
  }
  if (tab === "jobs") load(nav, loadJobs(nav, false));
  if (tab === "dlq") load(nav, loadDlq(nav, false));
}

function renderQueueHeader() {
  const v = state.view;
  if (v.kind !== "queue") return;
  const s = state.queues.get(v.queue);
  if (!s) return;
  const c = s.counts;
  const retrying = c.retrying === null ? "" : `, retrying ${c.retrying}`;
  $("queue-summary").textContent =
    `${s.family} - ${s.description} - waiting ${c.waiting}, active ${c.active}, delayed ${c.delayed}${retrying}, ` +
    `completed ${c.completed}, dead ${c.dead}${c.paused ? " - PAUSED" : ""}`;
  const b = $("pause-toggle");
  b.hidden = false;
  b.textContent = c.paused ? "Resume" : "Pause";
  b.setAttribute("aria-label", `${c.paused ? "Resume" : "Pause"} ${v.queue}`);
}

async function loadQueueCharts(nav, queue) {
  const rows = await api("GET", `${QUEUES}/${q(queue)}/metrics?hours=24`);
  if (!current(nav)) return;
  const xs = rows.map((m) => Date.parse(m.bucket_start) / 1000);
  const range = [Date.now() / 1000 - 86400, Date.now() / 1000];
  chart($("chart-queue"), [
    { label: "completed", color: "--ok" },
    { label: "failed", color: "--bad" },
    { label: "dead", color: "--dead" },
  ], [xs, rows.map((m) => m.completed), rows.map((m) => m.failed), rows.map((m) => m.dead)], "jobs / 5 min", range);
  chart($("chart-durations"), [
    { label: "avg", color: "--accent" },
    { label: "p95", color: "--warn" },
  ], [xs, rows.map((m) => m.avg_duration_ms), rows.map((m) => m.p95_duration_ms)], "ms", range);
  $("queue-chart-empty").hidden = rows.length > 0;
}

async function loadQueueConfig(nav, queue) {
  state.configs.delete(queue);
  const c = await queueConfig(queue);
  if (!current(nav)) return;
  const r = c.retry;
  fieldList($("queue-config"), [
    ["managed by", c.managed ? `a QueueConfig (generation ${c.generation})` : "no QueueConfig: registry defaults"],
    ["concurrency", `${c.concurrency} per consumer`],
    ["paused", c.paused ? "yes" : "no"],
    ["retry policy", `${r.attempts} attempts, backoff ${r.initial_s} s doubling to ${r.max_s} s, jitter ±${Math.round(r.jitter * 100)}%`],
    ["time limit", c.timeout_s ? `${c.timeout_s} s per attempt` : "none"],
    ["rate limit", c.rate_limit_jobs ? `${c.rate_limit_jobs} jobs per ${c.rate_limit_per_s} s` : "none"],
    ["visibility timeout", `${c.visibility_timeout_s} s`],
    ["retention", `${c.retention_completed} completed, ${c.retention_failed} failed`],
  ]);
}

function workerRow(w, withQueues) {
  const tr = el("tr", null, { "data-consumer": w.id });
  const flight = Object.values(w.in_flight).reduce((a, b) => a + b, 0);
  const conc = Object.entries(w.concurrency).map(([k, v]) => `${k}: ${v}`).join(", ");
  tr.append(td(w.host), td(w.pid, { class: "num" }), td(w.family));
  if (withQueues) {
    const cell = el("td");
    w.queues.forEach((name, i) => {
      if (i) cell.append(", ");
      cell.append(link(name, `#/queue/${q(name)}`));
    });
    tr.append(cell);
  }
  tr.append(td(conc || "-"), td(flight, { class: "num", title: JSON.stringify(w.in_flight) }));
  tr.append(td(timeEl(w.started_at)), td(timeEl(w.last_heartbeat_at)), td(w.draining ? "draining" : "running"));
  return tr;
}

const WORKER_HEADS = ["host / pod", "pid", "family", "concurrency", "in flight", "since", "last heartbeat", "state"];

async function loadConsumers(nav, queue) {
  const list = await api("GET", `${QUEUES}/${q(queue)}/consumers`);
  if (!current(nav)) return;
  const table = $("queue-consumers");
  heads(table, WORKER_HEADS);
  table.tBodies[0].replaceChildren();
  for (const w of list) table.tBodies[0].append(workerRow(w, false));
  if (!list.length) emptyRow(table, "No consumer has a live heartbeat on this queue: its jobs wait until a worker starts.", WORKER_HEADS.length);
}

// ---- jobs of a queue -------------------------------------------------------------------------
function selectBox(kind, id, label) {
  const box = el("input", null, { type: "checkbox", "aria-label": label, "data-id": id });
  box.checked = state.selected[kind].has(id);
  box.addEventListener("change", () => {
    if (box.checked) state.selected[kind].add(id);
    else state.selected[kind].delete(id);
    selectionChanged(kind);
  });
  return box;
}

function selectAllHead(table, kind, names) {
  const tr = el("tr");
  const th = el("th", null, { scope: "col" });
  const all = el("input", null, { type: "checkbox", "aria-label": "Select all shown" });
  all.addEventListener("change", () => {
    for (const box of table.tBodies[0].querySelectorAll("input[type=checkbox]")) {
      box.checked = all.checked;
      if (all.checked) state.selected[kind].add(box.dataset.id);
      else state.selected[kind].delete(box.dataset.id);
    }
    selectionChanged(kind);
  });
  th.append(all);
  tr.append(th);
  for (const n of names) tr.append(el("th", n, { scope: "col" }));
  table.tHead.replaceChildren(tr);
}

function selectionChanged(kind) {
  const n = state.selected[kind].size;
  if (kind === "jobs") {
    $("jobs-retry").disabled = n === 0;
    $("jobs-remove").disabled = n === 0;
    $("jobs-cancel").disabled = n === 0;
    $("jobs-selected").textContent = n ? `${n} selected` : "";
  } else {
    $("dlq-replay-selected").disabled = n === 0;
    $("dlq-delete-selected").disabled = n === 0;
    $("dlq-selected").textContent = n ? `${n} selected` : "";
  }
}

async function loadJobs(nav, more) {
  const queue = state.view.queue;
  const jobState = $("jobs-state").value;
  const params = new URLSearchParams({ state: jobState, limit: "50" });
  const search = $("jobs-search").value.trim();
  if (search) params.set("search", search);
  if (more && state.cursors.jobs) params.set("cursor", state.cursors.jobs);
  const seq = ++state.seq.jobs;
  const [page, cfg] = await Promise.all([api("GET", `${QUEUES}/${q(queue)}/jobs?${params}`), queueConfig(queue)]);
  if (!current(nav) || seq !== state.seq.jobs) return;
  const table = $("jobs-table");
  selectAllHead(table, "jobs", ["id", "name", "state", "attempts", "enqueued", "next run", "finished", "error"]);
  if (!more) table.tBodies[0].replaceChildren();
  const shown = new Set();
  for (const j of page.items) {
    shown.add(j.id);
    const tr = el("tr", null, { "data-job": j.id });
    const idCell = el("td");
    idCell.append(link(j.id, `#/queue/${q(queue)}/job/${q(j.id)}`));
    const most = maxAttempts(j, cfg);
    const attempts = most ? `${j.attempts} / ${most}` : String(j.attempts);
    const stateName = j.state === "failed" ? "retrying" : j.state;
    tr.append(td(selectBox("jobs", j.id, "Select job " + j.id)), idCell, td(j.name), td(stateName, { class: "state-" + j.state }));
    tr.append(td(attempts, { class: "num" }), td(timeEl(j.enqueued_at)), td(timeEl(j.due_at)), td(timeEl(j.finished_at)));
    tr.append(td((j.error || "").slice(0, 120)));
    table.tBodies[0].append(tr);
  }
  if (!more) for (const id of [...state.selected.jobs]) if (!shown.has(id)) state.selected.jobs.delete(id);
  selectionChanged("jobs");
  state.cursors.jobs = page.next_cursor;
  state.cursors.jobsPaged = more;
  $("jobs-more").hidden = !page.next_cursor;
  const empty = !table.tBodies[0].children.length;
  $("jobs-empty").hidden = !empty;
  $("jobs-empty").textContent = empty ? `No ${jobState === "failed" ? "retrying" : jobState} jobs${search ? ` matching "${search}"` : ""} on ${queue}.` : "";
}

async function bulkJobs(action) {
  const v = state.view;
  const nav = state.nav;
  const ids = [...state.selected.jobs];
  if (!ids.length) return;
  if (action === "remove" && !confirm(`Remove ${ids.length} job(s) from ${v.queue}?`)) return;
  if (action === "cancel" && !confirm(`Cancel ${ids.length} job(s) of ${v.queue}?`)) return;
  const r = await load(nav, api("POST", `${QUEUES}/${q(v.queue)}/jobs/bulk`, { action, job_ids: ids }));
  if (!r || !current(nav)) return;
  state.selected.jobs.clear();
  const done = { retry: "Retried", remove: "Removed", cancel: "Cancelled" }[action];
  reportBulk(r, done);
  $("jobs-status").textContent = `${done} ${r.done} job(s)`;
  await load(nav, loadJobs(nav, false));
}

function reportBulk(r, verb) {
  if (!r.failed) return say("");
  const first = r.outcomes.filter((o) => !o.ok).slice(0, 3).map((o) => `${o.id}: ${o.error}`).join("; ");
  say(`${verb} ${r.done}; ${r.failed} could not be: ${first}. Reload the list to see their current state.`);
}

// ---- the DLQ of a queue ----------------------------------------------------------------------
function epochOf(input) {
  const v = $(input).value;
  if (!v) return null;
  const t = new Date(v).getTime();
  return isFinite(t) ? t / 1000 : null;
}

function dlqFilters() {
  const f = {};
  const errorType = $("dlq-error-type").value.trim();
  const text = $("dlq-text").value.trim();
  const since = epochOf("dlq-since");
  const until = epochOf("dlq-until");
  if (errorType) f.error_type = errorType;
  if (text) f.text = text;
  if (since !== null) f.since = since;
  if (until !== null) f.until = until;
  return f;
}

function filterText(f) {
  const parts = [];
  if (f.error_type) parts.push(`error type ${f.error_type}`);
  if (f.text) parts.push(`text "${f.text}"`);
  if (f.since) parts.push(`since ${absolute(f.since)}`);
  if (f.until) parts.push(`until ${absolute(f.until)}`);
  return parts.length ? parts.join(", ") : "no filter: every entry";
}

async function loadDlqGroups(nav) {
  const queue = state.view.queue;
  const f = dlqFilters();
  delete f.error_type; // the groups are the error types
  const g = await api("GET", `${QUEUES}/${q(queue)}/dlq/groups?${new URLSearchParams(f)}`);
  if (!current(nav)) return null;
  const table = $("dlq-groups");
  heads(table, ["error type", "count", "newest", "example"]);
  table.tBodies[0].replaceChildren();
  for (const group of g.groups) {
    const tr = el("tr", null, { "data-error-type": group.error_type });
    const b = el("button", group.error_type || "(none)", { type: "button", "aria-label": `Show only ${group.error_type}` });
    b.addEventListener("click", () => {
      $("dlq-error-type").value = group.error_type;
      load(state.nav, loadDlq(state.nav, false));
    });
    tr.append(td(b), td(group.count, { class: "num" }), td(timeEl(group.newest_at)), td(group.example.slice(0, 120)));
    table.tBodies[0].append(tr);
  }
  if (!g.groups.length) emptyRow(table, "No dead letters.", 4);
  if (!g.complete) $("dlq-groups").caption.textContent = `Dead letters by error type (the newest ${g.total} counted)`;
  else $("dlq-groups").caption.textContent = "Dead letters by error type";
  return g;
}

async function loadDlq(nav, more) {
  const queue = state.view.queue;
  const f = dlqFilters();
  const params = new URLSearchParams({ limit: "50", ...f });
  if (more && state.cursors.dlq) params.set("cursor", state.cursors.dlq);
  const seq = ++state.seq.dlq;
  const [page, groups] = await Promise.all([
    api("GET", `${QUEUES}/${q(queue)}/dlq?${params}`),
    more ? Promise.resolve(null) : loadDlqGroups(nav),
  ]);
  if (!current(nav) || seq !== state.seq.dlq) return;
  const table = $("dlq-table");
  selectAllHead(table, "dlq", ["DLQ id", "job", "name", "error type", "error", "attempts", "failed", "actions"]);
  if (!more) table.tBodies[0].replaceChildren();
  const shown = new Set();
  for (const d of page.items) {
    shown.add(d.dlq_id);
    const tr = el("tr", null, { "data-dlq": d.dlq_id });
    const job = el("td");
    job.append(link(d.job_id, `#/queue/${q(queue)}/job/${q(d.job_id)}`));
    tr.append(td(selectBox("dlq", d.dlq_id, "Select " + d.dlq_id)), td(d.dlq_id), job, td(d.name), td(d.error_type));
    tr.append(td(d.error.slice(0, 120)), td(d.attempts, { class: "num" }), td(timeEl(d.failed_at)));
    const actions = el("td");
    const replay = el("button", "Replay", { type: "button", "aria-label": "Replay " + d.dlq_id });
    replay.addEventListener("click", () => dlqAct("replay", [d.dlq_id]));
    const del = el("button", "Delete", { type: "button", "aria-label": "Delete " + d.dlq_id });
    del.addEventListener("click", () => {
      if (confirm(`Delete DLQ entry ${d.dlq_id}?`)) dlqAct("delete", [d.dlq_id]);
    });
    actions.append(replay, " ", del);
    tr.append(actions);
    table.tBodies[0].append(tr);
  }
  if (!more) for (const id of [...state.selected.dlq]) if (!shown.has(id)) state.selected.dlq.delete(id);
  selectionChanged("dlq");
  state.cursors.dlq = page.next_cursor;
  state.cursors.dlqPaged = more;
  $("dlq-more").hidden = !page.next_cursor;
  const filtered = Object.keys(f).length > 0;
  const none = !table.tBodies[0].children.length;
  const dlqEmpty = groups ? groups.total === 0 && !f.text && !f.since && !f.until : false;
  $("dlq-empty").hidden = !none;
  $("dlq-empty").textContent = none
    ? filtered ? "No dead letter matches these filters. Clear the filters to see every entry." : `The DLQ of ${queue} is empty: nothing to replay.`
    : "";
  $("dlq-replay-all").disabled = none;
  if (!more) {
    const totallyEmpty = none && !filtered;
    $("purge-confirm").disabled = totallyEmpty || dlqEmpty;
    if (totallyEmpty) $("purge-button").disabled = true;
  }
}

async function dlqAct(action, ids) {
  const v = state.view;
  const nav = state.nav;
  const r = await load(nav, api("POST", `${QUEUES}/${q(v.queue)}/dlq/bulk`, { action, dlq_ids: ids }));
  if (!r || !current(nav)) return;
  for (const id of ids) state.selected.dlq.delete(id);
  reportBulk(r, action === "replay" ? "Replayed" : "Deleted");
  for (const o of r.outcomes) if (o.ok) {
    const row = document.querySelector(`#dlq-table tr[data-dlq="${CSS.escape(o.id)}"]`);
    if (row) row.remove();
  }
  $("dlq-status").textContent = `${action === "replay" ? "Replayed" : "Deleted"} ${r.done} entr${r.done === 1 ? "y" : "ies"}`;
  await load(nav, loadDlq(nav, false));
}

async function replayAllAsk() {
  const v = state.view;
  const nav = state.nav;
  const f = dlqFilters();
  const c = await load(nav, api("GET", `${QUEUES}/${q(v.queue)}/dlq/count?${new URLSearchParams(f)}`));
  if (!c || !current(nav)) return;
  const box = $("dlq-confirm");
  const go = $("dlq-confirm-go");
  const n = c.matching;
  const atLeast = c.complete ? "" : "at least ";
  if (n === 0) {
    $("dlq-confirm-text").textContent = `No entry matches (${filterText(f)}): nothing to replay.`;
    go.hidden = true;
  } else {
    $("dlq-confirm-text").textContent = `This replays ${atLeast}${n} entr${n === 1 ? "y" : "ies"} of ${v.queue} (${filterText(f)}), oldest first.`;
    go.textContent = `Replay ${n}`;
    go.hidden = false;
    go.onclick = async () => {
      box.hidden = true;
      const r = await load(nav, api("POST", `${QUEUES}/${q(v.queue)}/dlq/replay`, { all: true, ...f }));
      if (!r || !current(nav)) return;
      $("dlq-status").textContent = `Replayed ${r.replayed}${r.skipped ? `, ${r.skipped} could not be (no envelope)` : ""}`;
      await load(nav, loadDlq(nav, false));
    };
  }
  box.hidden = false;
  (go.hidden ? $("dlq-confirm-cancel") : go).focus();
}

// ---- one job ---------------------------------------------------------------------------------
function clearJob() {
  $("job-body").hidden = true;
  $("job-progress").hidden = true;
  $("job-actions").hidden = true;
  $("job-fields").replaceChildren();
  $("job-payload").textContent = "";
  $("job-stack").textContent = "";
  clearTable($("job-failures"));
  $("job-timeline").replaceChildren();
}

// the job's progress (ctx.progress): a bar, the percent and the handler's message
function showProgress(fraction, message) {
  $("job-progress-bar").value = fraction;
  $("job-progress-text").textContent = `${Math.round(fraction * 100)}%${message ? " - " + message : ""}`;
  $("job-progress").hidden = false;
}

function showJob(nav, queue, id) {
  state.view = { kind: "job", queue, id };
  $("view-job").hidden = false;
  clearJob();
  $("job-title").textContent = `${queue} / ${id}`;
  $("job-back").setAttribute("href", "#/queue/" + q(queue) + "/jobs");
  $("job-back").textContent = "Back to the queue";
  load(nav, loadJob(nav, queue, id, false));
}

async function loadJob(nav, queue, id, refresh) {
  let j;
  let cfg;
  try {
    [j, cfg] = await Promise.all([api("GET", `${QUEUES}/${q(queue)}/jobs/${q(id)}`), queueConfig(queue).catch(() => null)]);
  } catch (e) {
    if (!current(nav)) return;
    clearJob();
    if (e.status === 404 && state.queues.has(queue)) {
      throw new ApiFailure(404, `No job ${id} on ${queue}: it was never enqueued there, was removed or cancelled before it ran, or retention removed it. Try Find job to search every queue.`);
    }
    throw e;
  }
  if (!current(nav)) return;
  const retrying = j.state === "failed";
  fieldList($("job-fields"), [
    ["name", j.name],
    ["state", retrying ? "retrying (failed, in backoff)" : j.state],
    ["attempts", maxAttempts(j, cfg) ? `${j.attempts} of ${maxAttempts(j, cfg)}` : j.attempts],
    ["retries", j.failures.length],
    [retrying ? "next retry" : "due", j.due_at ? timeEl(j.due_at) : null],
    ["enqueued", timeEl(j.enqueued_at)],
    ["started", j.started_at ? timeEl(j.started_at) : null],
    ["finished", j.finished_at ? timeEl(j.finished_at) : null],
    ["duration", j.duration_ms === null ? null : `${ms(j.duration_ms)} ms`],
    ["error type", j.error_type],
    ["error", j.error],
    ["consumer", j.consumer],
    ["trace id", j.trace_id],
    ["idempotency key", j.idempotency_key],
    ["DLQ entry", j.dlq_id],
    ["replay of", j.replay_of ? link(j.replay_of, `#/queue/${q(queue)}/job/${q(j.replay_of)}`) : null],
    ["replayed as", j.replayed_as ? link(j.replayed_as, `#/queue/${q(queue)}/job/${q(j.replayed_as)}`) : null],
  ]);
  $("job-payload").textContent = JSON.stringify(j.payload, null, 2);
  $("job-stack").textContent = j.stack || j.error || "none";
  const failures = $("job-failures");
  heads(failures, ["attempt", "when", "type", "message"]);
  failures.tBodies[0].replaceChildren();
  for (const f of j.failures) {
    const tr = el("tr");
    tr.append(td(f.attempt, { class: "num" }), td(timeEl(f.at)), td(f.type), td(f.message));
    failures.tBodies[0].append(tr);
  }
  if (!j.failures.length) emptyRow(failures, "No failed attempt.", 4);
  const ol = $("job-timeline");
  ol.replaceChildren();
  for (const t of j.timeline) {
    const li = el("li");
    const what = [t.event, t.type || "", t.message || ""].join(" ").trim();
    li.append(timeEl(t.at), " ", what);
    ol.append(li);
  }
  if (j.progress !== null && j.progress !== undefined) showProgress(j.progress, j.progress_message);
  else $("job-progress").hidden = true;
  $("job-cancel").hidden = !["waiting", "active", "delayed", "failed"].includes(j.state);
  $("job-retry").hidden = !["dead", "failed", "delayed"].includes(j.state);
  $("job-remove").hidden = j.state === "active";
  $("job-actions").hidden = false;
  $("job-body").hidden = false;
  if (!refresh) say("");
}

async function findJob(nav, id) {
  state.view = { kind: "find", id };
  $("view-job").hidden = false;
  clearJob();
  $("job-title").textContent = `Find job ${id}`;
  $("job-back").setAttribute("href", "#/queues");
  $("job-back").textContent = "Back to the queues";
  if (!JOB_ID.test(id)) {
    say("A job id has only letters, digits and _ . : - (at most 128 characters).");
    return;
  }
  const found = await load(nav, api("GET", `${API}/jobs/${q(id)}`));
  if (found && current(nav)) location.replace(`#/queue/${q(found.queue)}/job/${q(found.job.id)}`);
}

// ---- workers ---------------------------------------------------------------------------------
function showWorkers(nav) {
  state.view = { kind: "workers" };
  $("view-workers").hidden = false;
  clearTable($("workers-table"));
  $("workers-empty").hidden = true;
  load(nav, loadWorkers(nav));
  every(5000, () => load(nav, loadWorkers(nav)));
}

async function loadWorkers(nav) {
  const list = await api("GET", API + "/workers");
  if (!current(nav)) return;
  const table = $("workers-table");
  const names = [...WORKER_HEADS];
  names.splice(3, 0, "queues");
  heads(table, names);
  table.tBodies[0].replaceChildren();
  for (const w of list) table.tBodies[0].append(workerRow(w, true));
  $("workers-empty").hidden = list.length > 0;
}

// ---- schedules -------------------------------------------------------------------------------
function showSchedules(nav) {
  state.view = { kind: "schedules" };
  $("view-schedules").hidden = false;
  clearTable($("schedules-table"));
  $("schedules-empty").hidden = true;
  load(nav, loadSchedules(nav));
  every(10000, () => load(nav, loadSchedules(nav)));
}

async function loadSchedules(nav) {
  const list = await api("GET", API + "/schedules");
  if (!current(nav)) return;
  const table = $("schedules-table");
  heads(table, ["name", "queue", "job", "when", "next run", "last run", "last job", "outcome", "fired / skipped / missed", "actions"]);
  table.tBodies[0].replaceChildren();
  for (const s of list) {
    const tr = el("tr", null, { "data-schedule": s.name });
    tr.append(td(s.name), td(link(s.queue, `#/queue/${q(s.queue)}`)), td(s.job), td(s.every));
    tr.append(td(s.suspend ? el("span", "suspended", { class: "paused" }) : timeEl(s.next_run_at)), td(timeEl(s.last_run_at)));
    tr.append(td(s.last_job_id ? link(s.last_job_id, `#/queue/${q(s.queue)}/job/${q(s.last_job_id)}`) : "-"));
    tr.append(td(s.last_error ? `${s.last_outcome || ""} ${s.last_error}`.trim() : s.last_outcome), td(`${s.fired} / ${s.skipped} / ${s.missed}`));
    const actions = el("td");
    const run = el("button", "Run now", { type: "button", "aria-label": `Run ${s.name} now` });
    run.addEventListener("click", () => scheduleAct(nav, s.name, "run-now"));
    const toggle = el("button", s.suspend ? "Resume" : "Suspend", { type: "button", "aria-label": `${s.suspend ? "Resume" : "Suspend"} ${s.name}` });
    toggle.addEventListener("click", () => scheduleAct(nav, s.name, s.suspend ? "resume" : "suspend"));
    actions.append(run, " ", toggle);
    tr.append(actions);
    table.tBodies[0].append(tr);
  }
  $("schedules-empty").hidden = list.length > 0;
}

async function scheduleAct(nav, name, action) {
  const r = await load(nav, api("POST", `${API}/schedules/${q(name)}/${action}`));
  if (!r || !current(nav)) return;
  say("");
  await load(nav, loadSchedules(nav));
}

// ---- wiring ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value.trim());
    $("token").value = "";
  });
  $("signout").addEventListener("click", () => signOut("Signed out."));
  $("message-close").addEventListener("click", () => say(""));
  $("find-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("find-id").value.trim();
    if (!id) return say("Type a job id to find it in every queue.");
    $("find-id").value = "";
    location.hash = "#/find/" + q(id);
  });
  $("queues-filter-form").addEventListener("submit", (e) => e.preventDefault());
  $("queues-filter").addEventListener("input", () => renderQueueTable());
  for (const b of document.querySelectorAll("[data-range]")) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      load(state.nav, loadHistory(state.nav));
    });
  }
  $("jobs-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.selected.jobs.clear();
    load(state.nav, loadJobs(state.nav, false));
  });
  $("jobs-state").addEventListener("change", () => {
    state.selected.jobs.clear();
    load(state.nav, loadJobs(state.nav, false));
  });
  $("jobs-more").addEventListener("click", () => load(state.nav, loadJobs(state.nav, true)));
  $("jobs-retry").addEventListener("click", () => bulkJobs("retry"));
  $("jobs-remove").addEventListener("click", () => bulkJobs("remove"));
  $("jobs-cancel").addEventListener("click", () => bulkJobs("cancel"));
  $("dlq-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("dlq-confirm").hidden = true;
    load(state.nav, loadDlq(state.nav, false));
  });
  $("dlq-clear").addEventListener("click", () => {
    for (const id of ["dlq-error-type", "dlq-text", "dlq-since", "dlq-until"]) $(id).value = "";
    $("dlq-confirm").hidden = true;
    load(state.nav, loadDlq(state.nav, false));
  });
  $("dlq-more").addEventListener("click", () => load(state.nav, loadDlq(state.nav, true)));
  $("dlq-replay-selected").addEventListener("click", () => dlqAct("replay", [...state.selected.dlq]));
  $("dlq-delete-selected").addEventListener("click", () => {
    const n = state.selected.dlq.size;
    if (n && confirm(`Delete ${n} DLQ entr${n === 1 ? "y" : "ies"}?`)) dlqAct("delete", [...state.selected.dlq]);
  });
  $("dlq-replay-all").addEventListener("click", replayAllAsk);
  $("dlq-confirm-cancel").addEventListener("click", () => {
    $("dlq-confirm").hidden = true;
    $("dlq-replay-all").focus();
  });
  $("purge-confirm").addEventListener("input", () => {
    $("purge-button").disabled = $("purge-confirm").value !== state.view.queue;
  });
  $("purge-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const nav = state.nav;
    const r = await load(nav, api("POST", `${QUEUES}/${q(state.view.queue)}/dlq/purge`, { confirm: $("purge-confirm").value }));
    if (!r || !current(nav)) return;
    $("purge-confirm").value = "";
    $("purge-button").disabled = true;
    $("dlq-status").textContent = `Purged ${r.purged} entr${r.purged === 1 ? "y" : "ies"}`;
    await load(nav, loadDlq(nav, false));
  });
  $("pause-toggle").addEventListener("click", async () => {
    const v = state.view;
    const nav = state.nav;
    const s = state.queues.get(v.queue);
    if (!s) return;
    const r = await load(nav, api("POST", `${QUEUES}/${q(v.queue)}/${s.counts.paused ? "resume" : "pause"}`));
    if (!r) return;
    s.counts.paused = r.paused;
    renderQueueHeader();
    if (current(nav) && v.tab === "overview") load(nav, loadQueueConfig(nav, v.queue));
  });
  $("job-retry").addEventListener("click", async () => {
    const v = state.view;
    const r = await load(state.nav, api("POST", `${QUEUES}/${q(v.queue)}/jobs/${q(v.id)}/retry`));
    if (r) location.hash = `#/queue/${q(v.queue)}/job/${q(r.job_id)}`;
  });
  $("job-cancel").addEventListener("click", async () => {
    const v = state.view;
    if (!confirm(`Cancel job ${v.id}?`)) return;
    const r = await load(state.nav, api("POST", `${QUEUES}/${q(v.queue)}/jobs/${q(v.id)}/cancel`));
    if (!r) return;
    if (r.outcome === "removed") {
      location.hash = "#/queue/" + q(v.queue) + "/jobs";
      say(`Job ${v.id} was ${r.was}: removed, it never runs.`);
    } else {
      say(`Cancel requested: the worker running job ${v.id} cancels it.`);
    }
  });
  $("job-remove").addEventListener("click", async () => {
    const v = state.view;
    if (!confirm(`Remove job ${v.id}?`)) return;
    const r = await load(state.nav, api("DELETE", `${QUEUES}/${q(v.queue)}/jobs/${q(v.id)}`));
    if (r) location.hash = "#/queue/" + q(v.queue) + "/jobs";
  });
  window.addEventListener("hashchange", route);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resizeCharts, 150);
  });
  // the charts take their colours from the page: redraw the view when the system theme changes
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => route());
  setInterval(() => {
    for (const t of document.querySelectorAll("time[data-at]")) t.textContent = relative(Number(t.dataset.at));
  }, 15000);
  setInterval(() => {
    if (state.token) sampleLive();
  }, 2000);
  if (state.token) signIn(state.token);
});

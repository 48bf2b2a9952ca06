// hkube's dashboard: plain JavaScript over the REST API and its event streams.
// The token (hkube server --token) lives in sessionStorage and travels only in the
// Authorization header: never in a URL. Event streams are read with fetch, not EventSource,
// because EventSource cannot send a header.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "hkube-token";
const LOG_LINES = 2000; // lines of task logs kept on the page
const TASK_ROWS = 200; // tasks listed at once on a job's page

// ---- DOM helpers ---------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const svgNs = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(svgNs, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}
function badge(status) {
  return el("span", { class: "status s-" + status, "data-status": status }, status);
}
function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}
function duration(ms) {
  if (ms === undefined || ms === null) return "";
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}
const main = () => document.getElementById("main");

// ---- the API, with the token -----------------------------------------------------------------
function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}
class Unauthorized extends Error {}
async function call(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(API + path, init);
  if (response.status === 401) throw new Unauthorized();
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = text; }
  if (!response.ok) {
    const message = value && value.error ? value.error.message || value.error : text;
    throw new Error(response.status + ": " + message);
  }
  return value;
}
const get = (path) => call("GET", path);

// Reads a streamed answer line by line until it ends or `signal` aborts.
async function stream(path, onLine, signal) {
  const response = await fetch(API + path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(response.status + ": " + (await response.text()));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let rest = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += decoder.decode(value, { stream: true });
    let at;
    while ((at = rest.indexOf("\n")) >= 0) {
      onLine(rest.slice(0, at));
      rest = rest.slice(at + 1);
    }
  }
  if (rest) onLine(rest);
}
// Server-sent events over `stream`: calls onEvent(name, data) per event.
function events(path, onEvent, signal) {
  let name = "message";
  let data = [];
  return stream(path, (line) => {
    if (line === "") {
      if (data.length) onEvent(name, data.join("\n"));
      name = "message";
      data = [];
    } else if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }, signal);
}

function connection(text) {
  document.getElementById("connection").textContent = text;
}

// ---- sign-in --------------------------------------------------------------------------------
function askToken(retry) {
  const form = document.getElementById("login");
  form.hidden = false;
  main().replaceChildren();
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    form.hidden = true;
    retry();
  };
}
async function guarded(page) {
  try {
    await page();
  } catch (error) {
    if (error instanceof Unauthorized) {
      if (sessionStorage.getItem(TOKEN_KEY)) {
        document.getElementById("login-error").textContent = "that token was refused";
        sessionStorage.removeItem(TOKEN_KEY);
      }
      askToken(() => guarded(page));
    } else if (error.name !== "AbortError") {
      main().append(el("p", { class: "error" }, String(error.message || error)));
    }
  }
}

// ---- the jobs page --------------------------------------------------------------------------
async function jobsPage() {
  const statusFilter = el("select", { id: "filter-status", "aria-label": "status" },
    ["", "pending", "active", "paused", "completed", "failed", "stopped"].map((s) =>
      el("option", { value: s }, s || "any status")));
  const pipelineFilter = el("input", { id: "filter-pipeline", placeholder: "pipeline", "aria-label": "pipeline" });
  const body = el("tbody", { id: "jobs" });
  const jobs = new Map(); // jobId → {jobId, pipeline, status, progress, startTime}
  const render = () => {
    const wantStatus = statusFilter.value;
    const wantPipeline = pipelineFilter.value.trim();
    const rows = [...jobs.values()]
      .filter((j) => !wantStatus || j.status === wantStatus)
      .filter((j) => !wantPipeline || (j.pipeline || "").includes(wantPipeline))
      .sort((a, b) => (b.startTime || 0) - (a.startTime || 0))
      .map((j) => el("tr", { "data-job": j.jobId },
        el("td", {}, el("a", { href: "/jobs/" + encodeURIComponent(j.jobId), class: "mono" }, j.jobId)),
        el("td", {}, j.pipeline),
        el("td", {}, badge(j.status)),
        el("td", {}, j.progress === undefined || j.progress === null ? "" : j.progress + "%"),
        el("td", {}, time(j.startTime))));
    body.replaceChildren(...rows);
  };
  statusFilter.onchange = render;
  pipelineFilter.oninput = render;
  main().replaceChildren(
    el("h2", {}, "Jobs"),
    el("div", { class: "filters" }, statusFilter, pipelineFilter),
    el("table", {}, el("thead", {}, el("tr", {}, ["job", "pipeline", "status", "progress", "started"].map((h) => el("th", {}, h)))), body),
    el("div", { class: "grid" },
      el("section", {}, el("h2", {}, "Algorithms"), el("div", { id: "algorithms" }, "…")),
      el("section", {}, el("h2", {}, "Builds"), el("div", { id: "builds" }, "…"))));
  const loadRecent = async () => {
    const found = await get("/exec/search?limit=100&sort=desc");
    for (const hit of found.hits || []) {
      const status = hit.status || {};
      jobs.set(hit.jobId, {
        jobId: hit.jobId,
        pipeline: (hit.pipeline || {}).name,
        status: status.status,
        progress: (status.data || {}).progress,
        startTime: (hit.pipeline || {}).startTime,
      });
    }
    render();
  };
  await loadRecent();
  algorithmsAndBuilds().catch((error) => {
    document.getElementById("algorithms").textContent = String(error.message || error);
  });
  let unfinished = new Set();
  let reload = null;
  connection("live");
  await events("/events/jobs", (name, data) => {
    if (name !== "jobs") return;
    const list = JSON.parse(data);
    const now = new Set(list.map((j) => j.jobId));
    for (const job of list) {
      const known = jobs.get(job.jobId) || { startTime: Date.now() };
      jobs.set(job.jobId, Object.assign(known, { jobId: job.jobId, pipeline: job.pipeline, status: job.status, progress: job.progress }));
    }
    // A job that left the list ended: its final status comes from the search (once a second at most).
    if ([...unfinished].some((id) => !now.has(id)) && !reload) {
      reload = setTimeout(() => { reload = null; loadRecent().catch(() => {}); }, 1000);
    }
    unfinished = now;
    render();
  });
  connection("disconnected");
}

async function algorithmsAndBuilds() {
  const algorithms = await get("/store/algorithms");
  const rows = [];
  const builds = [];
  for (const algorithm of algorithms) {
    let versions = [];
    try { versions = await get("/versions/algorithms/" + encodeURIComponent(algorithm.name)); } catch (_) { /* none */ }
    rows.push(el("tr", { "data-algorithm": algorithm.name },
      el("td", {}, algorithm.name),
      el("td", {}, algorithm.env || algorithm.algorithmImage || ""),
      el("td", { class: "mono" }, algorithm.version || ""),
      el("td", {}, versions.length + " version" + (versions.length === 1 ? "" : "s"))));
    try {
      for (const build of await get("/builds/list/" + encodeURIComponent(algorithm.name) + "?limit=5")) builds.push(build);
    } catch (_) { /* no build service */ }
  }
  document.getElementById("algorithms").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["algorithm", "env / image", "version", "versions"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
  const logView = el("pre", { id: "build-log", hidden: true });
  document.getElementById("builds").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["build", "algorithm", "status", "started", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, builds.map((b) => el("tr", {},
      el("td", { class: "mono" }, b.buildId),
      el("td", {}, b.algorithmName),
      el("td", {}, badge(b.status)),
      el("td", {}, time(b.startTime)),
      el("td", {}, el("button", { onclick: async () => {
        logView.hidden = false;
        logView.textContent = await call("GET", "/builds/logs/" + encodeURIComponent(b.buildId)).catch((e) => String(e.message));
      } }, "log")))))), logView);
}

// ---- a job's page ---------------------------------------------------------------------------
// Edges from the node inputs' references: "@node", "#@node" (batch), "*@node" (waitAny),
// "@node.path".
function parents(node, names) {
  const found = new Set();
  const walk = (value) => {
    if (typeof value === "string") {
      const match = /^[#*]?@([^.\s]+)/.exec(value);
      if (match && names.has(match[1]) && match[1] !== "flowInput") found.add(match[1]);
    } else if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === "object") Object.values(value).forEach(walk);
  };
  walk(node.input || []);
  return [...found];
}

function layout(nodes) {
  const names = new Set(nodes.map((n) => n.nodeName));
  const up = new Map(nodes.map((n) => [n.nodeName, parents(n, names)]));
  const depth = new Map();
  const depthOf = (name, seen) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const d = Math.max(-1, ...up.get(name).map((p) => depthOf(p, seen))) + 1;
    depth.set(name, d);
    return d;
  };
  nodes.forEach((n) => depthOf(n.nodeName, new Set()));
  const layers = [];
  for (const n of nodes) (layers[depth.get(n.nodeName)] ||= []).push(n.nodeName);
  const place = new Map();
  layers.forEach((layer, x) => layer.forEach((name, y) => place.set(name, { x: 20 + x * 200, y: 20 + y * 70 })));
  const height = 40 + Math.max(...layers.map((l) => l.length)) * 70;
  return { up, place, width: 40 + layers.length * 200, height };
}

// A node's state from its task counts.
function nodeState(times) {
  if (!times) return "pending";
  const s = times.states || {};
  if (s.active || s.placed) return "active";
  if (s.queued) return "queued";
  if (s.failed || s.crashed) return "failed";
  if (s.stopped) return "stopped";
  if (s.succeeded) return "succeed";
  return "pending";
}

async function jobPage(jobId) {
  const pipeline = await get("/exec/pipelines/" + encodeURIComponent(jobId));
  const nodes = pipeline.nodes || [];
  const { up, place, width, height } = layout(nodes);
  const graph = svg("svg", { id: "dag", width, height, viewBox: `0 0 ${width} ${height}` },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#7a8391" }))));
  for (const [name, from] of up) {
    const to = place.get(name);
    for (const parent of from) {
      const p = place.get(parent);
      graph.append(svg("path", { class: "edge", d: `M${p.x + 160},${p.y + 22} C${p.x + 180},${p.y + 22} ${to.x - 20},${to.y + 22} ${to.x},${to.y + 22}` }));
    }
  }
  const boxes = new Map();
  for (const node of nodes) {
    const at = place.get(node.nodeName);
    const rect = svg("rect", { x: at.x, y: at.y, width: 160, height: 44, class: "s-pending" });
    const label = svg("text", { x: at.x + 8, y: at.y + 18 }, node.nodeName);
    const count = svg("text", { x: at.x + 8, y: at.y + 36, class: "count" }, "");
    const group = svg("g", { class: "node", "data-node": node.nodeName, "data-state": "pending" }, rect, label, count);
    graph.append(group);
    boxes.set(node.nodeName, { group, rect, count });
  }
  const statusLine = el("div", { id: "job-status" });
  const nodeTable = el("tbody", { id: "node-times" });
  const pending = el("div", { id: "pending-reasons" });
  const results = el("pre", { id: "results", hidden: true });
  const logs = el("pre", { id: "logs" });
  const tasks = el("tbody", { id: "tasks" });
  const nodeFilter = el("select", { id: "task-node", "aria-label": "node" }, el("option", { value: "" }, "all nodes"),
    nodes.map((n) => el("option", { value: n.nodeName }, n.nodeName)));
  const action = (verb) => el("button", { id: verb, onclick: async () => {
    try { await call("POST", "/exec/" + verb, { jobId }); } catch (error) { statusLine.append(el("span", { class: "error" }, " " + error.message)); }
  } }, verb);
  main().replaceChildren(
    el("h2", {}, "Job ", el("span", { class: "mono", id: "job-id" }, jobId), " — ", pipeline.name),
    statusLine,
    el("div", { class: "buttons" }, action("stop"), action("pause"), action("resume")),
    el("h2", {}, "Graph"), graph,
    pending,
    el("h2", {}, "Nodes"),
    el("table", {}, el("thead", {}, el("tr", {}, ["node", "state", "tasks", "progress", "waiting (mean)", "starting (mean)", "running (mean / max)", "span"].map((h) => el("th", {}, h)))), nodeTable),
    el("h2", {}, "Tasks ", nodeFilter),
    el("table", {}, el("thead", {}, el("tr", {}, ["task", "node", "batch", "status", "queued", "placed", "started", "done", "ran"].map((h) => el("th", {}, h)))), tasks),
    el("h2", {}, "Logs"), logs,
    el("h2", {}, "Results"), results);

  let lastTasks = 0;
  const loadTasks = async () => {
    lastTasks = Date.now();
    const node = nodeFilter.value ? "&node=" + encodeURIComponent(nodeFilter.value) : "";
    const page = await get("/exec/tasks/" + encodeURIComponent(jobId) + "?limit=" + TASK_ROWS + node);
    tasks.replaceChildren(...(page.tasks || []).map((t) => el("tr", { "data-task": t.taskId },
      el("td", { class: "mono" }, t.taskId), el("td", {}, t.nodeName), el("td", {}, t.batchIndex || ""),
      el("td", {}, badge(t.status)), el("td", {}, time(t.queued)), el("td", {}, time(t.placed)),
      el("td", {}, time(t.started)), el("td", {}, time(t.done)),
      el("td", {}, t.started && t.done ? duration(t.done - t.started) : ""))));
    if (page.total > TASK_ROWS) tasks.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, `${TASK_ROWS} of ${page.total} tasks`)));
  };
  nodeFilter.onchange = () => loadTasks().catch(() => {});

  const mean = (span) => (span && span.count ? duration(Math.round(span.totalMs / span.count)) : "");
  const update = (status) => {
    statusLine.replaceChildren(badge(status.status), " ", (status.data || {}).details || "",
      status.error ? el("span", { class: "error" }, " " + status.error) : "");
    const times = new Map((status.nodeTimes || []).map((t) => [t.nodeName, t]));
    nodeTable.replaceChildren(...nodes.map((node) => {
      const t = times.get(node.nodeName);
      const state = nodeState(t);
      const box = boxes.get(node.nodeName);
      box.group.setAttribute("data-state", state);
      box.rect.setAttribute("class", "s-" + state);
      const done = t ? Object.entries(t.states).filter(([s]) => ["succeeded", "failed", "crashed", "stopped"].includes(s)).reduce((a, [, n]) => a + n, 0) : 0;
      const total = t ? t.tasks : 0;
      box.count.textContent = total ? `${done}/${total} ${state}` : state;
      const share = total ? Math.round((100 * done) / total) : 0;
      return el("tr", { "data-node": node.nodeName, "data-state": state },
        el("td", {}, node.nodeName), el("td", {}, badge(state)), el("td", {}, total),
        el("td", {}, el("span", { class: "bar" }, el("span", { style: `width:${share}%` })), ` ${done}/${total}`),
        el("td", {}, mean(t && t.waiting)), el("td", {}, mean(t && t.starting)),
        el("td", {}, t ? `${mean(t.running)} / ${duration(t.running.maxMs)}` : ""),
        el("td", {}, t && t.firstQueued && t.lastDone ? duration(t.lastDone - t.firstQueued) : ""));
    }));
    // The scheduler's reasons for waiting tasks, when the server gives them.
    const reasons = Object.entries(status).filter(([key]) => /pending/i.test(key) && key !== "status");
    pending.replaceChildren(...(reasons.length ? [el("h2", {}, "Pending"), ...reasons.map(([k, v]) =>
      el("pre", { "data-field": k }, typeof v === "string" ? v : JSON.stringify(v, null, 2)))] : []));
    if (Date.now() - lastTasks > 2000) loadTasks().catch(() => {});
  };

  const followLogs = async () => {
    const lines = [];
    let scheduled = false;
    await stream("/exec/logs/" + encodeURIComponent(jobId) + "?follow=true", (line) => {
      lines.push(line);
      if (lines.length > LOG_LINES) lines.splice(0, lines.length - LOG_LINES);
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(() => { scheduled = false; logs.textContent = lines.join("\n"); });
      }
    });
  };
  followLogs().catch((error) => { logs.textContent = String(error.message || error); });

  connection("live");
  let final = null;
  await events("/events/jobs/" + encodeURIComponent(jobId), (name, data) => {
    if (name !== "status") return;
    final = JSON.parse(data);
    update(final);
  });
  connection("");
  await loadTasks();
  if (final && ["completed", "failed", "stopped"].includes(final.status)) {
    const result = await get("/exec/results/" + encodeURIComponent(jobId)).catch((e) => String(e.message));
    const text = typeof result === "string" ? result : JSON.stringify(result, null, 2);
    results.hidden = false;
    results.textContent = text.length > 200000 ? text.slice(0, 200000) + "\n…" : text;
    document.body.setAttribute("data-ended", final.status);
  }
}

// ---- routing --------------------------------------------------------------------------------
const job = document.body.getAttribute("data-job");
guarded(job ? () => jobPage(job) : jobsPage);

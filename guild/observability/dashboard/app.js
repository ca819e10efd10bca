// guild's dashboard: reads /api/state once, then follows /events, and reads the
// state again every few seconds (and soon after jobs end) for the broker's
// counts, which no event carries. Plain DOM: no framework, no build step, no CDN.
// Every value from the server goes in as text, never as HTML.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const state = { workers: {}, running: new Map(), failures: [], dead: [], queues: {}, canary: [] };
  let previous = null; // the last state's queue counts and time, for the rates
  let rates = {};
  let offset = 0; // local clock minus the server's
  let brokerOffset = null; // local clock minus the broker's
  let refreshTimer = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function num(value) {
    const cell = el("td", value === undefined || value === null ? "–" : value, "num");
    return cell;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    seconds = Math.max(0, seconds);
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + Math.floor(seconds % 60) + "s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
    return Math.floor(seconds / 86400) + "d " + Math.floor((seconds % 86400) / 3600) + "h";
  }

  function serverNow() { return Date.now() / 1000 - offset; }
  function brokerAgo(at) {
    if (brokerOffset === null || !at) return null;
    return Date.now() / 1000 - brokerOffset - at;
  }

  function csrf() {
    const match = document.cookie.match(/(?:^|;\s*)guild_csrf=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function say(text) {
    const footer = $("message");
    footer.textContent = text;
    clearTimeout(say.timer);
    say.timer = setTimeout(function () { footer.textContent = ""; }, 6000);
  }

  function fill(table, rows, columns, emptyText) {
    const body = $(table).tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = el("tr", null, "empty");
      const td = el("td", emptyText);
      td.colSpan = columns;
      tr.append(td);
      body.append(tr);
    }
    for (const row of rows) body.append(row);
  }

  // Tracebacks left open stay open when their table is drawn again.
  const opened = new Set();

  function errorCell(error, traceback, key) {
    const td = el("td");
    if (!error && !traceback) { td.textContent = "–"; return td; }
    if (!traceback) { td.append(el("code", error)); return td; }
    const details = el("details");
    if (key) {
      details.open = opened.has(key);
      details.addEventListener("toggle", function () {
        if (details.open) opened.add(key); else opened.delete(key);
      });
    }
    details.append(el("summary", error || "traceback"));
    details.append(el("pre", traceback));
    td.append(details);
    return td;
  }

  // --- rendering ---------------------------------------------------------------

  function renderQueues() {
    const rows = Object.keys(state.queues).sort().map(function (name) {
      const q = state.queues[name];
      const r = rates[name] || {};
      const tr = el("tr");
      tr.dataset.queue = name;
      if (q.broken) {
        // Its counts could not be read (a key another program overwrote): no zeros.
        const reason = el("td", "broken: " + q.broken, "broken");
        reason.colSpan = 8;
        tr.append(el("td", name), reason);
        return tr;
      }
      tr.append(el("td", name), num(q.ready), num(q.delayed), num(q.in_flight), num(q.done),
        num(q.dead), num(q.cancelled),
        num(r.done === undefined ? null : r.done.toFixed(2)),
        num(r.failed === undefined ? null : r.failed.toFixed(2)));
      return tr;
    });
    fill("queues", rows, 9, "no queues");
  }

  function renderWorkers() {
    const rows = Object.keys(state.workers).sort().map(function (name) {
      const w = state.workers[name];
      const tr = el("tr");
      tr.dataset.worker = name;
      const stateCell = el("td");
      stateCell.append(el("span", w.state, "pill state-" + w.state));
      const circuitCell = el("td");
      const circuit = w.state === "open" || w.state === "half_open" ? w.state : "closed";
      circuitCell.append(el("span", circuit, "pill circuit-" + circuit));
      const running = w.concurrency ? (w.active || 0) + " / " + w.concurrency : w.active;
      tr.append(el("td", name), el("td", w.queue), stateCell, circuitCell, num(running),
        num(w.processed), num(w.failed),
        num(w.p95 === null || w.p95 === undefined ? null : w.p95.toFixed(3) + "s"),
        num(w.restarts), errorCell(w.broker_error || w.last_error, null));
      return tr;
    });
    fill("workers", rows, 10, "no workers");
  }

  function renderRunning() {
    const jobs = Array.from(state.running.values()).sort(function (a, b) { return a.started - b.started; });
    const now = serverNow();
    const rows = jobs.map(function (job) {
      const tr = el("tr");
      tr.dataset.id = job.id;
      const button = el("button", "cancel", "cancel");
      button.type = "button";
      button.addEventListener("click", function () { cancel([job.id], button); });
      const actions = el("td");
      actions.append(button);
      const progress = el("td", null, "progress");
      showProgress(progress, job.progress);
      // Under `guild run --processes N` each job also names the process that runs it.
      const worker = job.process === undefined ? job.worker : job.worker + " (process " + job.process + ")";
      tr.append(el("td", job.id, "id"), el("td", worker), num(job.attempt),
        el("td", age(now - job.started), "num age"), progress, actions);
      return tr;
    });
    $("running-count").textContent = "(" + jobs.length + ")";
    fill("running", rows, 6, "nothing running");
  }

  function showProgress(cell, progress) {
    cell.replaceChildren();
    if (!progress) { cell.textContent = "–"; return; }
    const bar = el("progress");
    bar.max = 1;
    bar.value = progress.fraction;
    const percent = Math.round(progress.fraction * 100) + "%";
    cell.append(bar, el("span", " " + percent + (progress.message ? " " + progress.message : "")));
  }

  // Ages move every second; the rows stay (a button under the pointer is not replaced).
  function tickAges() {
    const now = serverNow();
    for (const tr of $("running").tBodies[0].rows) {
      const job = state.running.get(tr.dataset.id);
      const cell = tr.querySelector(".age");
      if (job && cell) cell.textContent = age(now - job.started);
    }
  }

  function renderCanary() {
    $("canary-section").hidden = false;
    const now = serverNow();
    const figures = function (f) {
      if (!f) return "";
      const rate = f.jobs ? (100 * f.errors / f.jobs).toFixed(1) : "0.0";
      return f.jobs + " jobs, " + rate + "% errors, p95 " + (f.p95 === null ? "n/a" : f.p95 + " s");
    };
    const pct = function (share) { return Math.round(100 * share) + "%"; };
    const rows = state.canary.map(function (d) {
      const tr = el("tr");
      tr.append(el("td", age(now - d.time) + " ago"), el("td", d.queue),
        el("td", d.event + ": " + d.from_phase + " \u2192 " + d.to_phase),
        el("td", pct(d.from_share) + " \u2192 " + pct(d.to_share)), el("td", d.reason),
        el("td", figures(d.canary)), el("td", figures(d.stable)));
      return tr;
    });
    fill("canary", rows, 7, "no decisions");
  }

  function renderFailures() {
    const tracebacks = {};
    for (const letter of state.dead) tracebacks[letter.id] = letter.traceback;
    const now = serverNow();
    const rows = state.failures.slice(0, 50).map(function (f) {
      const tr = el("tr");
      tr.dataset.id = f.id;
      tr.append(el("td", age(now - f.time) + " ago"), el("td", f.id, "id"), el("td", f.worker),
        num(f.attempt), el("td", f.outcome),
        errorCell(f.error, f.outcome === "dead" ? tracebacks[f.id] : null, "failure:" + f.id));
      return tr;
    });
    fill("failures", rows, 6, "no failures since the server started");
  }

  function renderDead() {
    const rows = state.dead.map(function (letter) {
      const tr = el("tr");
      tr.dataset.id = letter.id;
      const button = el("button", "requeue", "requeue");
      button.type = "button";
      button.dataset.id = letter.id;
      button.addEventListener("click", function () { requeue([letter.id], button); });
      const actions = el("td");
      actions.append(button);
      tr.append(el("td", age(brokerAgo(letter.died_at)) + " ago"), el("td", letter.id, "id"),
        el("td", letter.queue), num(letter.attempt), errorCell(letter.error, letter.traceback, "dead:" + letter.id), actions);
      return tr;
    });
    $("dead-count").textContent = "(" + state.dead.length + ")";
    fill("dead", rows, 6, "no dead letters");
  }

  function renderWorkflows(workflows) {
    $("workflows-section").hidden = workflows === null || workflows === undefined;
    if (!workflows) return;
    const rows = workflows.map(function (wf) {
      const tr = el("tr");
      tr.dataset.id = wf.id;
      const status = el("td");
      status.append(el("span", wf.status, "pill state-" + wf.status));
      const steps = el("td", null, "steps");
      if (wf.steps) {
        const done = wf.steps.filter(function (step) { return step.state === "done"; }).length;
        steps.append(el("span", done + "/" + wf.steps.length + " "));
        for (const step of wf.steps) {
          const pill = el("span", step.name, "pill state-" + step.state);
          pill.title = step.state;
          steps.append(pill, " ");
        }
      } else {
        steps.textContent = "–";
      }
      const error = wf.error ? (wf.failed_step ? wf.failed_step + ": " : "") + wf.error : null;
      tr.append(el("td", wf.id, "id"), el("td", wf.name), status, steps,
        el("td", age(brokerAgo(wf.created_at)) + " ago"), el("td", age(brokerAgo(wf.updated_at)) + " ago"),
        errorCell(error, null));
      return tr;
    });
    fill("workflows", rows, 7, "no workflows");
  }

  function renderAll() {
    renderQueues(); renderWorkers(); renderRunning(); renderFailures(); renderDead();
  }

  // --- state -------------------------------------------------------------------

  function computeRates(queues, time) {
    const next = {};
    if (previous !== null && time > previous.time) {
      const span = time - previous.time;
      for (const name of Object.keys(queues)) {
        const before = previous.queues[name];
        if (!before || before.broken || queues[name].broken) continue;
        next[name] = {
          done: Math.max(0, queues[name].done - before.done) / span,
          failed: Math.max(0, queues[name].dead - before.dead) / span,
        };
      }
      rates = next;
    }
    previous = { queues: queues, time: time };
  }

  function apply(snapshot) {
    offset = Date.now() / 1000 - snapshot.time;
    brokerOffset = snapshot.broker_time ? Date.now() / 1000 - snapshot.broker_time : null;
    $("app").textContent = snapshot.app;
    document.title = "guild · " + snapshot.app;
    const status = $("status");
    status.textContent = snapshot.status;
    status.className = "badge " + snapshot.status;
    const problem = $("problem");
    problem.hidden = !snapshot.broker_error;
    problem.textContent = snapshot.broker_error ? "broker: " + snapshot.broker_error : "";
    if (snapshot.queues) {
      computeRates(snapshot.queues, snapshot.time);
      state.queues = snapshot.queues;
    }
    state.workers = snapshot.workers;
    state.running = new Map(snapshot.running.map(function (job) { return [job.id, job]; }));
    state.failures = snapshot.failures;
    if (snapshot.dead) state.dead = snapshot.dead;
    renderAll();
    renderWorkflows(snapshot.workflows);
  }

  async function refresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, REFRESH_MS);
    try {
      const response = await fetch("/api/state", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error((await response.json()).error || response.statusText);
      apply(await response.json());
    } catch (error) {
      const problem = $("problem");
      problem.hidden = false;
      problem.textContent = "cannot read the state: " + error.message;
    }
  }

  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 300);
  }

  // --- events ------------------------------------------------------------------

  function handle(event) {
    switch (event.type) {
      case "hello":
        for (const name of Object.keys(event.workers)) {
          const w = event.workers[name];
          state.workers[name] = Object.assign(state.workers[name] || {}, { queue: w.queue, state: w.state, active: w.active, broker_error: w.broker_error || null });
        }
        renderWorkers();
        break;
      case "job_started":
        state.running.set(event.task_id, {
          id: event.task_id, worker: event.worker, queue: event.queue,
          attempt: event.attempt, started: event.time, process: event.process,
        });
        renderRunning();
        break;
      case "job_finished":
        state.running.delete(event.task_id);
        if (event.outcome === "retry" || event.outcome === "dead") {
          state.failures.unshift({
            id: event.task_id, worker: event.worker, queue: event.queue, attempt: event.attempt,
            outcome: event.outcome, error: event.error, time: event.time,
          });
          state.failures.length = Math.min(state.failures.length, 50);
          renderFailures();
        }
        renderRunning();
        refreshSoon();
        break;
      case "job_progress": {
        const job = state.running.get(event.task_id);
        if (!job) { refreshSoon(); break; } // started before this page subscribed
        job.progress = { fraction: event.fraction, message: event.message };
        // In place: the row (and the button under the pointer) stays.
        const cell = $("running").querySelector("tr[data-id='" + CSS.escape(event.task_id) + "'] .progress");
        if (cell) showProgress(cell, job.progress); else renderRunning();
        break;
      }
      case "worker_state": {
        const w = state.workers[event.worker] || {};
        w.state = event.state;
        if (event.last_error) w.last_error = event.last_error;
        state.workers[event.worker] = w;
        renderWorkers();
        break;
      }
      case "worker_broker": {
        // Its broker calls fail (the broker away, a damaged key), or work again.
        const w = state.workers[event.worker] || { queue: event.queue };
        w.broker_error = event.error;
        state.workers[event.worker] = w;
        renderWorkers();
        break;
      }
      case "workflow":
        refreshSoon();
        break;
      case "canary":
        // Rollout decisions (docs/rollout.md), newest first; shown once one comes.
        state.canary.unshift(event);
        state.canary.length = Math.min(state.canary.length, 20);
        renderCanary();
        break;
      default:
        break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/events");
    socket.addEventListener("open", function () {
      $("live").textContent = "live";
      $("live").className = "badge on";
      refresh(); // what happened between the first read and the feed
    });
    socket.addEventListener("message", function (message) {
      for (const event of JSON.parse(message.data)) handle(event);
    });
    socket.addEventListener("close", function () {
      $("live").textContent = "disconnected";
      $("live").className = "badge off";
      setTimeout(connect, 2000);
    });
  }

  // --- actions -----------------------------------------------------------------

  async function post(path, ids) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-guild-csrf": csrf() },
      body: JSON.stringify({ ids: ids }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  async function requeue(ids, button) {
    button.disabled = true;
    try {
      const answer = await post("/api/dead/requeue", ids);
      say("requeued " + answer.requeued + " job" + (answer.requeued === 1 ? "" : "s"));
      await refresh();
    } catch (error) {
      say("requeue failed: " + error.message);
      button.disabled = false;
    }
  }

  async function cancel(ids, button) {
    if (button) button.disabled = true;
    try {
      const answer = await post("/api/jobs/cancel", ids);
      say(answer.cancelled.length ? "cancel asked for " + answer.cancelled.join(", ")
        : "nothing to cancel (unknown or finished)");
      await refresh();
    } catch (error) {
      say("cancel failed: " + error.message);
      if (button) button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("cancel-form").addEventListener("submit", function (submitted) {
      submitted.preventDefault();
      const id = $("cancel-id").value.trim();
      if (id) cancel([id], null);
    });
    setInterval(function () {
      $("clock").textContent = new Date().toLocaleTimeString();
      tickAges();
    }, 1000);
    refresh().then(connect);
  });
})();

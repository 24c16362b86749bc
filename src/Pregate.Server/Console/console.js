// The web console's script: a streaming chat over /v1/chat/completions and a live expert view fed by /v1/engine/events,
// both read with fetch and a ReadableStream (server-sent events), so an API key can travel in the Authorization header.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "pregate.apiKey";
  const HISTORY = 120; // points per chart

  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    modelId: null,
    history: [],       // [{role, content}]
    controller: null,  // AbortController of the reply being generated
    hello: null,       // the events stream's description of the model
    cells: [],         // [layer][expert] grid elements
    previous: null,    // the previous token event (for rates)
    series: {},        // chart name -> values
  };

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (state.key) h.Authorization = "Bearer " + state.key;
    return h;
  }

  function needKey(message) {
    $("key-form").hidden = false;
    $("key-note").textContent = message;
    $("key").focus();
  }

  // Reads a server-sent-event body and calls onData with each "data:" payload.
  async function readEvents(response, onData, signal) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) onData(data);
        }
      }
    } finally {
      if (signal && signal.aborted) reader.cancel().catch(() => {});
    }
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch {
      return response.status + " " + response.statusText;
    }
  }

  // ---- model and key ----

  async function loadModel() {
    const r = await fetch("/v1/models", { headers: authHeaders() });
    if (r.status === 401) {
      needKey(state.key ? "That key was refused." : "This server needs an API key.");
      $("model").textContent = "locked: enter the API key";
      return false;
    }
    if (!r.ok) {
      $("model").textContent = "the server answered " + r.status;
      return false;
    }
    const body = await r.json();
    state.modelId = body.data && body.data[0] ? body.data[0].id : null;
    $("model").textContent = state.modelId || "no model";
    if (state.key) $("key-note").textContent = "key accepted";
    return true;
  }

  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.key = $("key").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    if (await loadModel()) connectEvents();
  });

  // ---- chat ----

  function addMessage(role, text) {
    const li = document.createElement("li");
    li.className = "msg " + role;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.appendChild(body);
    $("messages").appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function numberField(id) {
    const v = $(id).value.trim();
    return v === "" ? undefined : Number(v);
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").disabled = !busy;
    $("clear").disabled = busy;
  }

  async function send() {
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    $("prompt").value = "";
    addMessage("user", text);
    state.history.push({ role: "user", content: text });
    const reply = addMessage("assistant", "");
    const replyText = reply.querySelector(".text");
    const figures = document.createElement("span");
    figures.className = "figures";
    reply.appendChild(figures);

    const request = {
      messages: state.history.slice(),
      stream: true,
      stream_options: { include_usage: true },
      temperature: numberField("temperature"),
      top_p: numberField("top-p"),
      max_tokens: numberField("max-tokens"),
      seed: numberField("seed"),
    };
    if (state.modelId) request.model = state.modelId;
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    $("chat-status").textContent = "generating…";
    const start = performance.now();
    let first = null, pieces = 0, usage = null, finish = null, stopped = false, failed = null;
    const show = () => {
      const now = performance.now();
      const tokens = usage ? usage.completion_tokens : pieces;
      const ttft = first === null ? null : first - start;
      const rate = first !== null && tokens > 1 && now > first ? (tokens - 1) / ((now - first) / 1000) : null;
      figures.textContent = tokens + " tokens" +
        (rate !== null ? " · " + rate.toFixed(1) + " tokens/s" : "") +
        (ttft !== null ? " · first token " + Math.round(ttft) + " ms" : "") +
        (stopped ? " · stopped" : finish ? " · " + finish : "");
      figures.dataset.tokens = String(tokens);
    };
    try {
      const r = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(request),
        signal: controller.signal,
      });
      if (r.status === 401) needKey("This server needs an API key.");
      if (!r.ok) throw new Error(await errorText(r));
      await readEvents(r, (data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) { failed = chunk.error.message; return; }
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const piece = choice.delta && choice.delta.content;
          if (piece) {
            if (first === null) first = performance.now();
            pieces++;
            replyText.textContent += piece;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        show();
      }, controller.signal);
    } catch (e) {
      if (controller.signal.aborted) stopped = true;
      else failed = e.message || String(e);
    }
    show();
    if (failed) {
      reply.classList.add("error");
      replyText.textContent += (replyText.textContent ? "\n" : "") + "Error: " + failed;
    }
    if (replyText.textContent && !failed) state.history.push({ role: "assistant", content: replyText.textContent });
    else if (!replyText.textContent) state.history.pop();
    reply.dataset.done = stopped ? "stopped" : failed ? "error" : "finished";
    state.controller = null;
    setBusy(false);
    $("chat-status").textContent = stopped ? "stopped" : failed ? "failed" : "";
    $("prompt").focus();
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("stop").addEventListener("click", stop);
  $("clear").addEventListener("click", () => {
    state.history = [];
    $("messages").replaceChildren();
    $("prompt").focus();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.controller) { e.preventDefault(); stop(); }
  });

  // ---- expert grid ----

  function buildGrid(hello) {
    const grid = $("grid");
    grid.replaceChildren();
    const large = hello.experts <= 32;
    grid.classList.toggle("large", large);
    grid.style.gridTemplateColumns = "auto repeat(" + hello.experts + ", " + (large ? 18 : 12) + "px)";
    grid.setAttribute("aria-label", "Expert grid: " + hello.layers + " layers by " + hello.experts + " experts");
    state.cells = [];
    const head = document.createElement("span");
    head.className = "label";
    grid.appendChild(head);
    for (let x = 0; x < hello.experts; x++) {
      const l = document.createElement("span");
      l.className = "label";
      l.textContent = x % 8 === 0 ? String(x) : "";
      grid.appendChild(l);
    }
    for (let layer = 0; layer < hello.layers; layer++) {
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = String(layer);
      grid.appendChild(label);
      const row = [];
      for (let x = 0; x < hello.experts; x++) {
        const c = document.createElement("span");
        c.className = "cell";
        c.dataset.layer = String(layer);
        c.dataset.expert = String(x);
        grid.appendChild(c);
        row.push(c);
      }
      state.cells.push(row);
    }
  }

  function weightClass(w) {
    return w >= 0.6 ? " w4" : w >= 0.4 ? " w3" : w >= 0.2 ? " w2" : " w1";
  }

  function paintGrid(ev) {
    ev.layers.forEach((layer, l) => {
      const row = state.cells[l];
      if (!row) return;
      const weights = new Map(layer.chosen.map((id, j) => [id, layer.weights[j]]));
      for (let x = 0; x < row.length; x++) {
        const f = parseInt(layer.cells[x] || "0", 16);
        let cls = "cell";
        if (f & 1) cls += " res";
        if (f & 2) cls += " pred";
        if (f & 4) cls += " chosen" + weightClass(weights.get(x) || 0);
        if (f & 8) cls += " miss";
        const cell = row[x];
        if (cell.className !== cls) cell.className = cls;
        const title = (f & 4) ? "layer " + l + ", expert " + x + ": weight " + (weights.get(x) || 0).toFixed(3) + ((f & 8) ? ", missed" : "")
          : "layer " + l + ", expert " + x + ((f & 1) ? ", resident" : "") + ((f & 2) ? ", predicted" : "");
        if (cell.title !== title) cell.title = title;
      }
    });
  }

  // ---- charts ----

  const CHARTS = [
    { name: "tps", title: "tokens/s", format: (v) => v.toFixed(1) },
    { name: "hit", title: "cache hit rate", format: (v) => (100 * v).toFixed(0) + "%", max: 1 },
    { name: "recall", title: "prediction recall", format: (v) => (100 * v).toFixed(0) + "%", max: 1 },
    { name: "stall", title: "stall ms/token", format: (v) => v.toFixed(2) },
    { name: "bytes", title: "bytes read/token", format: bytes },
    { name: "memory", title: "expert memory / budget", format: bytes, second: "budget" },
  ];

  function bytes(v) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(i === 0 ? 0 : 1) + " " + units[i];
  }

  function buildCharts() {
    const box = $("charts");
    box.replaceChildren();
    for (const c of CHARTS) {
      const fig = document.createElement("figure");
      fig.className = "chart";
      fig.id = "chart-" + c.name;
      const h = document.createElement("h3");
      const t = document.createElement("span");
      t.textContent = c.title;
      const v = document.createElement("span");
      v.className = "value";
      v.textContent = "–";
      h.append(t, v);
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", "0 0 " + HISTORY + " 100");
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", c.title);
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      svg.appendChild(line);
      if (c.second) {
        const second = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        second.setAttribute("class", "second");
        svg.appendChild(second);
      }
      fig.append(h, svg);
      box.appendChild(fig);
      state.series[c.name] = [];
      if (c.second) state.series[c.second] = [];
    }
  }

  function push(name, value) {
    const s = state.series[name];
    s.push(value);
    if (s.length > HISTORY) s.shift();
  }

  function points(values, top) {
    return values.map((v, i) => v === null ? null : (i + HISTORY - values.length) + "," + (100 - 96 * Math.min(v / top, 1) - 2).toFixed(2))
      .filter((p) => p !== null).join(" ");
  }

  function drawCharts() {
    for (const c of CHARTS) {
      const fig = $("chart-" + c.name);
      const values = state.series[c.name];
      const second = c.second ? state.series[c.second] : [];
      const all = values.concat(second).filter((v) => v !== null);
      const top = c.max || Math.max(1e-9, ...all) * 1.1;
      const lines = fig.querySelectorAll("polyline");
      lines[0].setAttribute("points", points(values, top));
      if (c.second) lines[1].setAttribute("points", points(second, top));
      const last = values.length ? values[values.length - 1] : null;
      const secondLast = second.length ? second[second.length - 1] : null;
      fig.querySelector(".value").textContent = last === null ? "–"
        : c.format(last) + (secondLast !== null && c.second ? " / " + c.format(secondLast) : "");
    }
  }

  function onToken(ev) {
    paintGrid(ev);
    const p = state.previous;
    state.previous = ev;
    const info = "token " + ev.token + " · position " + ev.position + " · skipped " + ev.skipped;
    $("token-info").textContent = info;
    $("token-info").dataset.token = String(ev.token);
    if (!p || ev.time_ms <= p.time_ms) return;
    const s = ev.stats, q = p.stats;
    const dt = (ev.time_ms - p.time_ms) / 1000;
    if (dt > 2) return; // an idle gap between replies, not a rate
    const tokens = s.tokens - q.tokens;
    const acquires = (s.hits - q.hits) + (s.misses - q.misses);
    const checks = s.prediction_checks - q.prediction_checks;
    push("tps", (ev.token - p.token) / dt);
    push("hit", acquires > 0 ? (s.hits - q.hits) / acquires : null);
    push("recall", checks > 0 ? (s.prediction_hits - q.prediction_hits) / checks : null);
    push("stall", tokens > 0 ? (s.stall_ms - q.stall_ms) / tokens : null);
    push("bytes", tokens > 0 ? (s.bytes_read - q.bytes_read) / tokens : null);
    push("memory", ev.memory.resident_bytes);
    push("budget", ev.memory.budget_bytes);
    drawCharts();
  }

  // ---- engine events ----

  let eventsController = null;

  async function connectEvents() {
    if (eventsController) eventsController.abort();
    const controller = new AbortController();
    eventsController = controller;
    let delay = 500;
    while (!controller.signal.aborted) {
      try {
        const r = await fetch("/v1/engine/events", { headers: authHeaders(), signal: controller.signal, cache: "no-store" });
        if (r.status === 401) { needKey("This server needs an API key."); return; }
        if (!r.ok) throw new Error(await errorText(r));
        delay = 500;
        await readEvents(r, (data) => {
          const ev = JSON.parse(data);
          if (ev.type === "hello") {
            state.hello = ev;
            state.previous = null;
            buildGrid(ev);
            $("model").textContent = (ev.model || state.modelId || "") + " · " + ev.layers + " layers × " + ev.experts +
              " experts, top " + ev.top_k + " · " + ev.placement;
          } else if (ev.type === "token") {
            onToken(ev);
          }
        }, controller.signal);
      } catch (e) {
        if (controller.signal.aborted) return;
        $("token-info").textContent = "events: " + (e.message || e) + "; reconnecting";
      }
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  buildCharts();
  loadModel().then((ok) => { if (ok) connectEvents(); });
  $("prompt").focus();
})();

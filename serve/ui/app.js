// The kdserve comparison page: classify texts through several models and routes side by side, and
// chart the server's own Prometheus metrics live. Plain browser JavaScript, no build step.
// Every server-supplied or user-typed string is inserted with textContent, never as HTML.
"use strict";

(function () {
  const MAX_LINES = 200; // one page of comparisons; more is a benchmark's job (kdserve bench-http)
  const POLL_MS = 1000; // /metrics scrape period
  const RATE_WINDOW_S = 5; // rates and quantiles are computed over the last 5 s, like rate(x[5s])
  const HISTORY_S = 120; // what the charts show

  const $ = (id) => document.getElementById(id);
  const { LineChart, PALETTE } = window.Charts;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const state = {
    models: [], // GET /models -> models
    routing: { routes: {}, models: {} },
    colors: new Map(), // model or route name -> colour, stable for the page's life
    labelColors: new Map(),
    running: false,
    scrapes: [],
    points: [],
    scrapeCount: 0,
    paused: false,
  };

  function colorOf(name) {
    if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(name);
  }

  function labelClass(label) {
    if (!state.labelColors.has(label)) state.labelColors.set(label, state.labelColors.size % 6);
    return "lbl-" + state.labelColors.get(label);
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // ------------------------------------------------------------------ models and routes

  function describeRoute(name, route) {
    switch (route.policy) {
      case "fixed":
        return "fixed → " + route.model;
      case "ab":
        return (
          "A/B " +
          Object.entries(route.variants)
            .map(([m, w]) => m + " " + Math.round(w * 100) + "%")
            .join(" / ")
        );
      case "shadow":
        return "shadow: " + route.primary + " answers, " + route.shadow + " shadows " + Math.round((route.sample_rate ?? 1) * 100) + "%";
      case "cascade": {
        const t = route.threshold !== undefined ? "score < " + route.threshold : "per-label thresholds";
        return "cascade: " + route.student + " → " + route.teacher + " when " + t;
      }
      default:
        return route.policy;
    }
  }

  async function loadModels() {
    const body = await getJSON("../models");
    state.models = body.models;
    state.routing = body.routing;
    const ready = body.ready;
    const pill = $("status");
    pill.textContent = ready ? "ready" : "starting: " + body.models.map((m) => m.name + " " + m.status).join(", ");
    pill.className = "pill " + (ready ? "ok" : "warn");
    for (const m of state.models) colorOf(m.name);
    for (const name of Object.keys(state.routing.routes)) colorOf(name);
    for (const m of state.models) for (const l of m.labels) labelClass(l);
    renderTargets();
  }

  function renderTargets() {
    const box = $("targets");
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    const first = !box.dataset.rendered;
    box.replaceChildren();

    const modelGroup = el("fieldset", "target-group");
    modelGroup.append(el("legend", null, "Models"));
    for (const m of state.models) {
      const detail = m.role + " · " + m.model_kind + " · " + m.precision + (m.status === "ready" ? "" : " · " + m.status);
      modelGroup.append(targetOption(m.name, detail, first ? true : checked.has(m.name)));
    }
    const routeGroup = el("fieldset", "target-group");
    routeGroup.append(el("legend", null, "Routes"));
    for (const [name, route] of Object.entries(state.routing.routes)) {
      const alias = route.alias_of ? " (= " + route.alias_of + ")" : "";
      const on = first ? route.source === "config" && !route.alias_of : checked.has(name);
      routeGroup.append(targetOption(name, describeRoute(name, route) + alias, on));
    }
    box.append(modelGroup, routeGroup);
    box.dataset.rendered = "1";
  }

  function targetOption(name, detail, on) {
    const label = el("label", "target");
    const input = el("input");
    input.type = "checkbox";
    input.value = name;
    input.checked = on;
    const swatch = el("span", "dot");
    swatch.style.background = colorOf(name);
    label.append(input, swatch, el("span", "target-name", name), el("span", "target-detail", detail));
    return label;
  }

  // ------------------------------------------------------------------ comparing

  async function classifyOne(target, texts, routingKey) {
    const body = { texts, model: target, all_scores: true };
    if (routingKey) body.routing_key = routingKey;
    const started = performance.now();
    let response;
    try {
      response = await fetch("../classify", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      return { error: { code: "network", message: String(err.message || err) } };
    }
    const ms = performance.now() - started;
    let json;
    try {
      json = await response.json();
    } catch (err) {
      return { ms, error: { code: "http_" + response.status, message: "the answer was not JSON" } };
    }
    if (!response.ok) {
      const e = json && json.error ? json.error : { code: "http_" + response.status, message: JSON.stringify(json) };
      return { ms, error: e };
    }
    return { ms, answer: json };
  }

  function setRunStatus(text, isError) {
    const s = $("run-status");
    s.textContent = text;
    s.classList.toggle("error", Boolean(isError));
  }

  async function runComparison() {
    if (state.running) return;
    const texts = $("texts")
      .value.split("\n")
      .map((t) => t.trim())
      .filter((t) => t.length);
    const targets = [...$("targets").querySelectorAll("input:checked")].map((i) => i.value);
    if (!texts.length) return setRunStatus("Type or paste a text first (one per line).", true);
    if (!targets.length) return setRunStatus("Choose at least one model or route.", true);
    if (texts.length > MAX_LINES) {
      return setRunStatus(texts.length + " lines: the page compares at most " + MAX_LINES + " at once.", true);
    }
    const routingKey = $("routing-key").value.trim();
    const perText = $("mode").value === "per-text";
    state.running = true;
    $("run").disabled = true;
    const table = renderTable(texts, targets);
    const cells = texts.map(() => targets.map(() => null));
    const started = performance.now();
    try {
      if (perText) {
        // sequential, one text at a time: each latency is a lone request's, not a contended one's
        for (let i = 0; i < texts.length; i++) {
          for (let j = 0; j < targets.length; j++) {
            setRunStatus("Classifying " + (i + 1) + " / " + texts.length + "…");
            const r = await classifyOne(targets[j], [texts[i]], routingKey);
            cells[i][j] = cellOf(r, 0, 1);
            fillCell(table, i, j, cells[i][j]);
          }
          markAgreement(table, i, cells[i]);
        }
      } else {
        for (let j = 0; j < targets.length; j++) {
          setRunStatus("Classifying through " + targets[j] + "…");
          const r = await classifyOne(targets[j], texts, routingKey);
          texts.forEach((_, i) => {
            cells[i][j] = cellOf(r, i, texts.length);
            fillCell(table, i, j, cells[i][j]);
          });
        }
        texts.forEach((_, i) => markAgreement(table, i, cells[i]));
      }
      renderSummary(targets, cells, perText);
      const secs = ((performance.now() - started) / 1000).toFixed(2);
      setRunStatus(texts.length + " text(s) × " + targets.length + " target(s) in " + secs + " s");
    } finally {
      state.running = false;
      $("run").disabled = false;
    }
  }

  /** One cell's data: the i-th result of an answer (or its error), with the request's latency. */
  function cellOf(r, i, n) {
    if (r.error) return { error: r.error, ms: r.ms };
    const a = r.answer;
    return {
      result: a.results[i],
      route: a.route,
      variant: a.variant,
      shadowed: a.shadowed,
      ms: r.ms,
      n,
    };
  }

  function renderTable(texts, targets) {
    const results = $("results");
    results.replaceChildren();
    $("summary").replaceChildren();
    const table = el("table", "results");
    const head = el("tr");
    head.append(el("th", "text-col", "Text"));
    for (const t of targets) {
      const th = el("th");
      const dot = el("span", "dot");
      dot.style.background = colorOf(t);
      th.append(dot, el("span", null, t));
      const route = state.routing.routes[t];
      th.append(el("div", "th-detail", route ? describeRoute(t, route) : "model"));
      head.append(th);
    }
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    texts.forEach((text) => {
      const tr = el("tr");
      const td = el("td", "text-col");
      td.append(el("div", "text", text), el("div", "agreement"));
      tr.append(td);
      for (const t of targets) {
        const cell = el("td", "cell pending", "…");
        cell.dataset.target = t; // which model or route answered here (read by the browser tests too)
        tr.append(cell);
      }
      tbody.append(tr);
    });
    table.append(thead, tbody);
    results.append(table);
    return table;
  }

  function fillCell(table, i, j, c) {
    const td = table.tBodies[0].rows[i].cells[j + 1];
    td.className = "cell";
    td.replaceChildren();
    if (c.error) {
      td.classList.add("failed");
      td.append(el("div", "error-code", c.error.code), el("div", "error-message", c.error.message));
      return;
    }
    const r = c.result;
    const top = el("div", "top");
    top.append(el("span", "label " + labelClass(r.label), r.label), el("span", "score", r.score.toFixed(3)));
    td.append(top);
    const bars = el("div", "bars");
    for (const s of r.scores || [{ label: r.label, score: r.score }]) {
      const row = el("div", "bar-row");
      const bar = el("span", "bar");
      const fill = el("span", "fill " + labelClass(s.label));
      fill.style.width = (100 * s.score).toFixed(1) + "%";
      bar.append(fill);
      row.append(el("span", "bar-label", s.label), bar, el("span", "bar-value", s.score.toFixed(3)));
      bars.append(row);
    }
    td.append(bars);
    const latency = c.n > 1 ? c.ms.toFixed(1) + " ms for " + c.n + " texts" : c.ms.toFixed(1) + " ms";
    const meta = el("div", "meta");
    meta.append(el("span", "latency", latency), el("span", null, " · by "), el("span", "answered-by", r.model));
    meta.title = "round trip measured in the browser; model " + r.model + " (sha256 " + r.checksum.slice(0, 12) + "…)";
    td.append(meta);
    const badges = el("div", "badges");
    if (c.variant) badges.append(el("span", "badge variant", "A/B variant: " + c.variant));
    if (c.shadowed) badges.append(el("span", "badge shadowed", "shadowed"));
    if (r.escalated) badges.append(el("span", "badge escalated", "escalated → " + r.model));
    else if (state.routing.routes[c.route] && state.routing.routes[c.route].policy === "cascade") {
      badges.append(el("span", "badge kept", "kept by student"));
    }
    if (badges.childElementCount) td.append(badges);
  }

  function markAgreement(table, i, row) {
    const labels = row.filter((c) => c && c.result).map((c) => c.result.label);
    const box = table.tBodies[0].rows[i].cells[0].querySelector(".agreement");
    if (labels.length < 2) return;
    const agree = labels.every((l) => l === labels[0]);
    box.textContent = agree ? "all agree" : "disagree";
    box.className = "agreement " + (agree ? "agree" : "disagree");
    table.tBodies[0].rows[i].classList.toggle("disagree-row", !agree);
  }

  function renderSummary(targets, cells, perText) {
    const box = $("summary");
    box.replaceChildren();
    if (!cells.length) return;
    const parts = [];
    if (targets.length >= 2) {
      // agreement is counted against the teacher when one is chosen: the reference an A/B is judged by
      const teacher = state.models.find((m) => m.role === "teacher" && targets.includes(m.name));
      const b = teacher ? targets.indexOf(teacher.name) : 0;
      const agreements = [];
      targets.forEach((t, j) => {
        if (j === b) return;
        let agree = 0;
        let both = 0;
        for (const row of cells) {
          if (row[b] && row[b].result && row[j] && row[j].result) {
            both += 1;
            agree += row[b].result.label === row[j].result.label ? 1 : 0;
          }
        }
        if (both) agreements.push(t + " " + agree + "/" + both);
      });
      if (agreements.length) parts.push("agreement with " + targets[b] + ": " + agreements.join(", "));
    }
    if (perText) {
      const lat = targets.map((t, j) => {
        const ms = cells.map((row) => row[j] && row[j].ms).filter((v) => v !== undefined && v !== null);
        ms.sort((a, b) => a - b);
        return ms.length ? t + " " + ms[Math.floor((ms.length - 1) / 2)].toFixed(1) + " ms" : null;
      });
      parts.push("median round trip: " + lat.filter(Boolean).join(", "));
    }
    for (const p of parts) box.append(el("div", null, p));
  }

  // ------------------------------------------------------------------ the live panel

  const charts = {};

  function makeCharts() {
    const specs = {
      throughput: { unit: "/s" },
      latency: { unit: "ms" },
      batch: { unit: "" },
      shadow: { unit: "%", max: 100 },
      cascade: { unit: "%", max: 100 },
      queue: { unit: "" },
    };
    for (const [id, opts] of Object.entries(specs)) {
      charts[id] = new LineChart($("chart-" + id), $("legend-" + id), Object.assign({ windowS: HISTORY_S }, opts));
    }
  }

  async function scrape() {
    const response = await fetch("../metrics", { cache: "no-store" });
    if (!response.ok) throw new Error("/metrics: HTTP " + response.status);
    return new window.Prom.Scrape(await response.text(), performance.now() / 1000);
  }

  function ratio(num, den) {
    return den > 0 ? (100 * num) / den : null;
  }

  /** One chart point from the latest scrape and the one about RATE_WINDOW_S before it. */
  function point(old, now) {
    const P = window.Prom;
    const dt = now.time - old.time;
    const models = state.models.map((m) => m.name);
    const texts = P.increases(old, now, "kdserve_model_texts_total", "model");
    const classify = { endpoint: "/classify" };
    const requests = P.increases(old, now, "kdserve_http_requests_total", "status", classify);
    const p = { t: now.time, throughput: {}, latency: {}, batch: {}, shadow: {}, cascade: {}, queue: {} };
    for (const m of models) {
      p.throughput[m] = (texts[m] || 0) / dt;
      const p50 = P.quantiles(old, now, "kdserve_batch_inference_seconds", "model", 0.5, { model: m })[m];
      const p99 = P.quantiles(old, now, "kdserve_batch_inference_seconds", "model", 0.99, { model: m })[m];
      p.latency[m + " p50"] = p50 == null ? null : 1000 * p50;
      p.latency[m + " p99"] = p99 == null ? null : 1000 * p99;
      const sum = P.increases(old, now, "kdserve_batch_size_sum", "model", { model: m })[m] || 0;
      const count = P.increases(old, now, "kdserve_batch_size_count", "model", { model: m })[m] || 0;
      p.batch[m] = count > 0 ? sum / count : null;
      const depth = now.sumBy("kdserve_queue_depth", "model", { model: m })[m];
      p.queue[m] = depth === undefined ? null : depth;
    }
    const totalRequests = Object.values(requests).reduce((a, b) => a + b, 0);
    p.throughput["/classify requests"] = totalRequests / dt;
    const h50 = P.quantiles(old, now, "kdserve_http_request_duration_seconds", "endpoint", 0.5, classify)["/classify"];
    const h99 = P.quantiles(old, now, "kdserve_http_request_duration_seconds", "endpoint", 0.99, classify)["/classify"];
    p.latency["HTTP /classify p50"] = h50 == null ? null : 1000 * h50;
    p.latency["HTTP /classify p99"] = h99 == null ? null : 1000 * h99;
    const compared = P.increases(old, now, "kdserve_shadow_compared_total", "route");
    const agreed = P.increases(old, now, "kdserve_shadow_agreed_total", "route");
    for (const route of shadowRoutes()) p.shadow[route] = ratio(agreed[route] || 0, compared[route] || 0);
    const cascaded = P.increases(old, now, "kdserve_cascade_texts_total", "route");
    const escalated = P.increases(old, now, "kdserve_cascade_escalations_total", "route");
    for (const route of cascadeRoutes()) p.cascade[route] = ratio(escalated[route] || 0, cascaded[route] || 0);
    let errors = 0;
    for (const [status, n] of Object.entries(requests)) if (Number(status) >= 400) errors += n;
    p.tiles = {
      texts: Object.values(texts).reduce((a, b) => a + b, 0) / dt,
      requests: totalRequests / dt,
      p99: p.latency["HTTP /classify p99"],
      errors: errors / dt,
      inflight: (now.series("kdserve_inflight_requests")[0] || { value: 0 }).value,
    };
    return p;
  }

  function routesOf(policy) {
    return Object.entries(state.routing.routes)
      .filter(([, r]) => r.policy === policy && !r.alias_of)
      .map(([name]) => name);
  }
  const shadowRoutes = () => routesOf("shadow");
  const cascadeRoutes = () => routesOf("cascade");

  function seriesOf(chart, keyColor) {
    const keys = [];
    for (const p of state.points) for (const k of Object.keys(p[chart])) if (!keys.includes(k)) keys.push(k);
    return keys.map((k) => {
      const { color, dash } = keyColor(k);
      return { name: k, color, dash, values: state.points.map((p) => (k in p[chart] ? p[chart][k] : null)) };
    });
  }

  const byModel = (k) => {
    if (k.startsWith("HTTP ") || k.startsWith("/classify")) return { color: "#6b7280", dash: k.endsWith("p99") || k.startsWith("/") };
    return { color: colorOf(k.replace(/ p(50|99)$/, "")), dash: k.endsWith(" p99") };
  };

  function render() {
    const times = state.points.map((p) => p.t);
    charts.throughput.setData(times, seriesOf("throughput", byModel));
    charts.latency.setData(times, seriesOf("latency", byModel), "no batches in the window");
    charts.batch.setData(times, seriesOf("batch", byModel), "no batches in the window");
    charts.queue.setData(times, seriesOf("queue", byModel));
    charts.shadow.setData(
      times,
      seriesOf("shadow", (k) => ({ color: colorOf(k), dash: false })),
      shadowRoutes().length ? "no shadow comparisons in the window" : "no shadow route configured"
    );
    charts.cascade.setData(
      times,
      seriesOf("cascade", (k) => ({ color: colorOf(k), dash: false })),
      cascadeRoutes().length ? "no cascade traffic in the window" : "no cascade route configured"
    );
    const last = state.points[state.points.length - 1];
    if (!last) return;
    const t = last.tiles;
    setTile("texts", t.texts.toFixed(1));
    setTile("requests", t.requests.toFixed(1));
    setTile("p99", t.p99 == null ? "–" : t.p99.toFixed(1));
    setTile("errors", t.errors.toFixed(2));
    setTile("inflight", String(t.inflight));
  }

  function setTile(id, text) {
    $("tile-" + id).querySelector(".value").textContent = text;
  }

  async function poll() {
    if (!state.paused) {
      try {
        const now = await scrape();
        state.scrapeCount += 1;
        document.body.dataset.scrapes = String(state.scrapeCount);
        state.scrapes.push(now);
        // keep only what the rate window needs
        while (state.scrapes.length > 2 && now.time - state.scrapes[1].time >= RATE_WINDOW_S) state.scrapes.shift();
        const old = state.scrapes[0];
        if (old !== now && now.time - old.time > 0.2) {
          state.points.push(point(old, now));
          while (state.points.length && now.time - state.points[0].t > HISTORY_S + 5) state.points.shift();
          render();
        }
        $("live-status").textContent = "live · rates over the last " + Math.round(now.time - old.time) + " s";
        $("live-status").className = "live-status ok";
      } catch (err) {
        $("live-status").textContent = "metrics unavailable: " + (err.message || err);
        $("live-status").className = "live-status error";
      }
    }
    setTimeout(poll, POLL_MS);
  }

  // ------------------------------------------------------------------ start

  async function start() {
    $("run").addEventListener("click", runComparison);
    $("texts").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        runComparison();
      }
    });
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").textContent = state.paused ? "Resume" : "Pause";
    });
    makeCharts();
    try {
      await loadModels();
    } catch (err) {
      $("status").textContent = "server unreachable: " + (err.message || err);
      $("status").className = "pill error";
    }
    // the model list and readiness change on a hot reload: refresh them now and then
    setInterval(() => loadModels().catch(() => {}), 10000);
    poll();
  }

  start();
})();

// Prometheus text format (version 0.0.4) parsing and the few PromQL functions the live panel
// needs (rate, histogram_quantile), computed between two scrapes of the server's own /metrics.
"use strict";

(function (global) {
  // One sample line: name, optional {labels}, value (an optional timestamp after it is ignored).
  const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
  const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;

  function unescape(value) {
    return value.replace(/\\(n|\\|")/g, (_, c) => (c === "n" ? "\n" : c));
  }

  function parseValue(text) {
    if (text === "+Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return Number(text); // NaN for "NaN", as Prometheus means it
  }

  /** Every sample of a scrape: [{name, labels: {k: v}, value}] (comments and blank lines skipped). */
  function parse(text) {
    const samples = [];
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (!line || line[0] === "#") continue;
      const m = LINE.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[3]) {
        LABEL.lastIndex = 0;
        let l;
        while ((l = LABEL.exec(m[3])) !== null) labels[l[1]] = unescape(l[2]);
      }
      samples.push({ name: m[1], labels, value: parseValue(m[4]) });
    }
    return samples;
  }

  /** A scrape indexed for lookups: series(name) -> samples of that name. */
  class Scrape {
    constructor(text, time) {
      this.time = time; // seconds (performance.now() / 1000): rates divide by its difference
      this.byName = new Map();
      for (const s of parse(text)) {
        if (!this.byName.has(s.name)) this.byName.set(s.name, []);
        this.byName.get(s.name).push(s);
      }
    }

    series(name, match) {
      const all = this.byName.get(name) || [];
      if (!match) return all;
      return all.filter((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v));
    }

    /** Sum of the samples of ``name`` matching ``match``, grouped by the label ``by``: {value: sum}. */
    sumBy(name, by, match) {
      const out = {};
      for (const s of this.series(name, match)) {
        const key = by ? s.labels[by] : "";
        out[key] = (out[key] || 0) + s.value;
      }
      return out;
    }

    /** The distinct values of label ``by`` among the samples of ``name``. */
    labelValues(name, by) {
      return [...new Set(this.series(name).map((s) => s.labels[by]))].filter((v) => v !== undefined).sort();
    }
  }

  /** Increase of a counter between scrapes; a reset (the server restarted) counts from zero. */
  function increase(before, after) {
    if (before === undefined) return after;
    return after >= before ? after - before : after;
  }

  /** {group: increase} of the counter ``name`` between two scrapes, grouped by label ``by``. */
  function increases(old, now, name, by, match) {
    const a = old.sumBy(name, by, match);
    const b = now.sumBy(name, by, match);
    const out = {};
    for (const key of Object.keys(b)) out[key] = increase(a[key], b[key]);
    return out;
  }

  /** PromQL's histogram_quantile over cumulative bucket increases [{le, count}] sorted by le:
   *  linear interpolation inside the bucket, the highest finite bound when it lands in +Inf. */
  function histogramQuantile(q, buckets) {
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1].count;
    if (!(total > 0)) return null;
    const rank = q * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const b of buckets) {
      if (b.count >= rank) {
        if (b.le === Infinity) return prevLe;
        if (b.count === prevCount) return b.le;
        return prevLe + ((b.le - prevLe) * (rank - prevCount)) / (b.count - prevCount);
      }
      prevLe = b.le;
      prevCount = b.count;
    }
    return prevLe;
  }

  /** {group: quantile} of the histogram ``name`` over the window between two scrapes. */
  function quantiles(old, now, name, by, q, match) {
    const groups = {};
    const before = new Map();
    for (const s of old.series(name + "_bucket", match)) before.set((s.labels[by] || "") + "|" + s.labels.le, s.value);
    for (const s of now.series(name + "_bucket", match)) {
      const key = by ? s.labels[by] : "";
      const le = parseValue(s.labels.le);
      const inc = increase(before.get((s.labels[by] || "") + "|" + s.labels.le), s.value);
      (groups[key] = groups[key] || []).push({ le, count: inc });
    }
    const out = {};
    for (const [key, buckets] of Object.entries(groups)) {
      buckets.sort((x, y) => x.le - y.le);
      out[key] = histogramQuantile(q, buckets);
    }
    return out;
  }

  global.Prom = { parse, Scrape, increase, increases, histogramQuantile, quantiles };
})(typeof window !== "undefined" ? window : globalThis);

// The live dashboard: one Server-Sent Events stream carries the last 15 minutes ("live"), the
// history for this page's filters ("sales") and the pipeline's health; charts are plain SVG.
// The page opens on "Now"; "History" is one click away.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f5f99", "#b34700", "#2e7d32", "#6a3d9a", "#8c1c3a", "#00695c"];
const FILTERS = ["currency", "country", "design", "department", "range"];
const fmt = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat("en-GB", { notation: "compact", maximumFractionDigits: 1 });
const clock = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const minuteClock = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit" });
const GAP = "…";
let stream = null;
let latest = null;
let latestLive = null;

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function prepare(svg, height) {
  const width = Math.max(svg.getBoundingClientRect().width, 280);
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  return width;
}

function describe(svg, title, items) {
  svg.setAttribute("aria-label", items.length
    ? `${title}: ${items.slice(0, 5).map(([label, value]) => `${label} ${value}`).join(", ")}`
    : `${title}: no data`);
}

// Horizontal bars, one per item, labelled with its value.
function bars(svg, items, valueOf, label, title) {
  const row = 26, left = Math.min(150, svg.getBoundingClientRect().width * 0.4);
  const height = Math.max(items.length * row + 8, 40);
  const width = prepare(svg, height);
  const max = Math.max(...items.map(valueOf), 1);
  const chars = Math.floor((left - 8) / 7);  // about 7 px per character at 12 px
  items.forEach((item, i) => {
    const y = 4 + i * row;
    const w = Math.max((width - left - 90) * valueOf(item) / max, 1);
    const name = el("text", { x: left - 6, y: y + 16, "text-anchor": "end", class: "label" },
      item.label.length > chars ? item.label.slice(0, chars - 1) + "…" : item.label);
    name.append(el("title", {}, item.label));
    svg.append(name);
    svg.append(el("rect", { x: left, y, width: w, height: row - 6, fill: COLOURS[0], class: "bar" }));
    svg.append(el("text", { x: left + w + 4, y: y + 16, class: "value" }, label(item)));
  });
  if (!items.length) svg.append(el("text", { x: 8, y: 24, class: "label" }, "No orders match"));
  describe(svg, title, items.map((i) => [i.label, label(i)]));
}

function axes(svg, width, height, pad, max, buckets, labelOf) {
  for (const f of [0, 0.5, 1]) {
    const y = height - pad.bottom - f * (height - pad.top - pad.bottom);
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: pad.left - 4, y: y + 4, "text-anchor": "end", class: "label" },
      compact.format(f * max)));
  }
  const step = Math.max(1, Math.ceil(buckets.length / Math.floor((width - pad.left) / 80)));
  buckets.forEach((bucket, i) => {
    if (i % step && bucket !== GAP) return;
    const x = pad.left + (i + 0.5) * (width - pad.left - pad.right) / buckets.length;
    svg.append(el("text", { x, y: height - 6, "text-anchor": "middle", class: "label" },
      labelOf(bucket)));
  });
}

// History buckets are the warehouse's dates; an empty span of many buckets is one GAP.
function bucketLabel(bucket) {
  if (bucket === GAP) return GAP;
  const kind = latest ? latest.bucket : "month";
  if (kind === "hour") return bucket.slice(11, 16);
  if (kind === "day") return bucket.slice(5, 10);
  return bucket.slice(0, 7);
}

// Columns of a total per time bucket.
function columns(svg, buckets, totals, title, labelOf = bucketLabel) {
  const height = 220, pad = { top: 10, right: 10, bottom: 26, left: 52 };
  const width = prepare(svg, height);
  const max = Math.max(...totals, 1);
  axes(svg, width, height, pad, max, buckets, labelOf);
  const slot = (width - pad.left - pad.right) / Math.max(buckets.length, 1);
  totals.forEach((value, i) => {
    if (!value) return;
    const h = (height - pad.top - pad.bottom) * value / max;
    svg.append(el("rect", { x: pad.left + i * slot + slot * 0.1, y: height - pad.bottom - h,
      width: Math.max(slot * 0.8, 1), height: h, fill: COLOURS[0], class: "bar" }));
  });
  describe(svg, title, buckets.slice(-5).map((b, i) => [labelOf(b),
    fmt.format(totals[totals.length - Math.min(5, buckets.length) + i])]));
}

// One line per currency: value per time bucket.
function lines(svg, buckets, series, title, legend, labelOf = bucketLabel) {
  const height = 220, pad = { top: 10, right: 10, bottom: 26, left: 52 };
  const width = prepare(svg, height);
  const max = Math.max(...series.flatMap((s) => s.values), 1);
  axes(svg, width, height, pad, max, buckets, labelOf);
  const slot = (width - pad.left - pad.right) / Math.max(buckets.length, 1);
  legend.replaceChildren();
  series.forEach((s, n) => {
    // A line per run of buckets: it breaks at a GAP rather than dropping to zero across it.
    let run = [];
    const draw = () => {
      if (run.length > 1) {
        svg.append(el("polyline", { points: run.join(" "), fill: "none", stroke: COLOURS[n],
          "stroke-width": 2.5, class: "line" }));
      } else if (run.length === 1) {
        const [x, y] = run[0].split(",");
        svg.append(el("circle", { cx: x, cy: y, r: 4, fill: COLOURS[n], class: "line" }));
      }
      run = [];
    };
    s.values.forEach((v, i) => {
      if (buckets[i] === GAP) return draw();
      run.push(`${pad.left + (i + 0.5) * slot},` +
        `${height - pad.bottom - (height - pad.top - pad.bottom) * v / max}`);
    });
    draw();
    const key = document.createElement("span");
    key.innerHTML = `<span class="swatch" style="background:${COLOURS[n]}"></span>`;
    key.append(s.name);
    legend.append(key);
  });
  describe(svg, title, series.map((s) => [s.name, compact.format(s.values.reduce((a, b) => a + b, 0))]));
}

// Units per bucket and one value series per currency, over ``buckets``; ``keyOf`` maps a bucket
// to what identifies it (the live view's come with a time zone, so they are matched as instants).
function perBucket(buckets, rows, keyOf) {
  const currencies = [...new Set(rows.map((r) => r.label))].sort();
  const index = new Map(buckets.map((b, i) => [keyOf(b), i]));
  const units = buckets.map(() => 0), orders = buckets.map(() => 0);
  const series = currencies.map((name) => ({ name, values: buckets.map(() => 0) }));
  for (const r of rows) {
    const i = index.get(keyOf(r.bucket));
    if (i === undefined) continue;
    units[i] += r.units;
    orders[i] += r.orders;
    series[currencies.indexOf(r.label)].values[i] += r.value;
  }
  return { units, orders, series };
}

function render(data) {
  latest = data;
  if (document.getElementById("view-history").hidden) return;  // drawn when shown
  const buckets = data.buckets;
  const { units, series } = perBucket(buckets, data.over_time, (b) => b);
  lines(document.getElementById("chart-value"), buckets, series, "Sales value over time",
    document.getElementById("legend-value"));
  columns(document.getElementById("chart-units"), buckets, units, "Units sold over time");
  bars(document.getElementById("chart-currency"), data.by_currency, (i) => i.value,
    (i) => `${i.label} ${compact.format(i.value)}`, "Sales value by currency");
  const byUnits = (i) => i.units, unitsLabel = (i) => compact.format(i.units);
  bars(document.getElementById("chart-country"), data.by_country, byUnits, unitsLabel, "Units by country");
  bars(document.getElementById("chart-design"), data.top_designs, byUnits, unitsLabel, "Top designs");
  bars(document.getElementById("chart-staff"), data.top_staff, byUnits, unitsLabel, "Top staff");
  bars(document.getElementById("chart-department"), data.top_departments, byUnits, unitsLabel,
    "Units by department");

  document.getElementById("total-orders").textContent = fmt.format(data.totals.orders);
  document.getElementById("total-units").textContent = fmt.format(data.totals.units);
  const values = Object.entries(data.totals.value).map(([c, v]) => `${c} ${compact.format(v)}`);
  document.getElementById("total-value").textContent = values.length ? values.join(" · ") : "–";
  document.getElementById("updated").textContent =
    `Updated ${new Date(data.generated_at).toLocaleTimeString("en-GB")}: ` +
    `${fmt.format(data.totals.orders)} orders shown`;
}

function value(amounts) {
  const parts = Object.entries(amounts).sort().map(([c, v]) => `${c} ${compact.format(v)}`);
  return parts.length ? parts.join(" · ") : "–";
}

function age(ms) {
  if (ms < 1000) return "just now";
  if (ms < 60000) return `${Math.round(ms / 1000)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

function latency(ms) {
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${fmt.format(ms / 1000)} s`;
}

function renderLive(data) {
  latestLive = data;
  if (document.getElementById("view-now").hidden) return;  // drawn when shown
  const now = Date.parse(data.now);
  document.getElementById("live-orders").textContent = fmt.format(data.totals.orders);
  document.getElementById("live-units").textContent = fmt.format(data.totals.units);
  document.getElementById("live-value").textContent = value(data.totals.value);
  document.getElementById("live-newest").textContent = data.newest.length
    ? age(now - Date.parse(data.newest[0].committed_at)) : "none in 15 minutes";

  const instant = (b) => Date.parse(b);
  const secondLabel = (b) => clock.format(new Date(b));
  columns(document.getElementById("chart-live-seconds"), data.seconds, data.per_second,
    "Orders per second", secondLabel);
  const { units, series } = perBucket(data.minutes, data.per_minute, instant);
  const minuteLabel = (b) => minuteClock.format(new Date(b));
  columns(document.getElementById("chart-live-units"), data.minutes, units, "Units per minute",
    minuteLabel);
  lines(document.getElementById("chart-live-value"), data.minutes, series, "Sales value per minute",
    document.getElementById("legend-live-value"), minuteLabel);

  const body = document.querySelector("#newest tbody");
  if (!data.newest.length) {
    const row = body.insertRow();
    row.insertCell().textContent = "No order in the last 15 minutes";
    row.cells[0].colSpan = 7;
    body.replaceChildren(row);
  } else {
    body.replaceChildren(...data.newest.map((o) => {
      const row = document.createElement("tr");
      const cells = [clock.format(new Date(o.committed_at)), `#${o.order}`, o.design, o.country,
        fmt.format(o.units), `${o.currency} ${fmt.format(o.value)}`, latency(o.latency_ms)];
      cells.forEach((text, i) => {
        const cell = row.insertCell();
        cell.textContent = text;
        if (i >= 4) cell.className = "num";
      });
      return row;
    }));
  }
  document.getElementById("updated").textContent =
    `Updated ${clock.format(new Date(data.now))}: ${fmt.format(data.totals.orders)} orders ` +
    "in the last 15 minutes";
}

function fillOptions(options) {
  for (const [name, values] of Object.entries(options)) {
    const select = document.getElementById(`filter-${name}`);
    const have = new Set([...select.options].map((o) => o.value));
    for (const value of values) {
      if (!have.has(value)) select.append(new Option(value, value));
    }
  }
}

function show(id, value, unit) {
  document.getElementById(id).textContent =
    value === null || value === undefined ? "unknown" : `${fmt.format(value)}${unit}`;
}

// The hops of the latency waterfall (totes_cdc/stages.py), in the order a change passes them.
const STAGES = [
  ["commit_to_capture", "Source commit to capture read"],
  ["capture_to_kinesis", "Capture read to Kinesis"],
  ["kinesis_to_processor", "Kinesis to stream processor"],
  ["processor_to_file", "Stream processor to file written"],
  ["file_to_warehouse", "File to warehouse commit"],
  ["end_to_end", "Source commit to warehouse"],
];

function renderStages(stages) {
  const body = document.querySelector("#stages tbody");
  if (!stages) {
    const row = body.insertRow();
    row.insertCell().textContent = "unknown";
    row.cells[0].colSpan = 3;
    body.replaceChildren(row);
    return;
  }
  body.replaceChildren(...STAGES.map(([name, label]) => {
    const row = document.createElement("tr");
    const ms = (v) => (v === null ? "unknown" : `${fmt.format(v)} ms`);  // stages take milliseconds
    [label, ms(stages[name].p50), ms(stages[name].p99)].forEach((text, i) => {
      const cell = row.insertCell();
      cell.textContent = text;
      if (i) cell.className = "num";
    });
    return row;
  }));
}

// A table being copied (status copies: capture.progress), as `totes-cdc status` words it.
function describeCopy(c) {
  const total = c.estimated_total === null ? "?" : fmt.format(c.estimated_total);
  const share = c.estimated_total
    ? ` (${Math.min(100, Math.floor((100 * c.rows_done) / c.estimated_total))}%)` : "";
  const eta = c.eta_seconds === null ? "unknown" : `${fmt.format(c.eta_seconds)} s`;
  return `${c.table} ${fmt.format(c.rows_done)}/${total} rows${share}, ` +
    `${fmt.format(c.rate)} rows/s, ETA ${eta}`;
}

function renderCopies(copies) {
  const lines = copies === null ? ["unknown"]
    : copies.length ? copies.map(describeCopy) : ["none running"];
  document.getElementById("copies").replaceChildren(...lines.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}

function renderHealth(h) {
  show("health-capture", h.capture && h.capture.behind_ms, " ms");
  show("health-slot", h.slot_lag_bytes, " bytes");
  show("health-stream", h.stream_lag_ms, " ms");
  show("health-files", h.files_waiting, "");
  show("health-p50", h.latency_ms && h.latency_ms.p50, " ms");
  show("health-p95", h.latency_ms && h.latency_ms.p95, " ms");
  show("health-p99", h.latency_ms && h.latency_ms.p99, " ms");
  show("health-age", h.last_event_age_s, " s");
  renderStages(h.stages_ms);
  renderCopies(h.copies);
  const list = document.getElementById("alerts");
  list.replaceChildren(...(h.alerts.length ? h.alerts : ["none"]).map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    if (h.alerts.length) item.className = "firing";
    return item;
  }));
}

function connect() {
  if (stream) stream.close();
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = document.getElementById(`filter-${name}`).value;
    if (value) params.set(name, value);
  }
  stream = new EventSource(`/events?${params}`);
  stream.addEventListener("sales", (e) => {
    document.getElementById("problem").hidden = true;
    const data = JSON.parse(e.data);
    fillOptions(data.options);
    render(data);
  });
  stream.addEventListener("live", (e) => renderLive(JSON.parse(e.data)));
  stream.addEventListener("health", (e) => renderHealth(JSON.parse(e.data)));
  stream.addEventListener("problem", (e) => {
    const problem = document.getElementById("problem");
    const message = JSON.parse(e.data).message;
    problem.hidden = !message;
    problem.textContent = message || "";
  });
}

for (const name of FILTERS) {
  document.getElementById(`filter-${name}`).addEventListener("change", connect);
}
function redraw() {
  if (latest) render(latest);
  if (latestLive) renderLive(latestLive);
}

// Two tabs (arrow keys move between them, as the ARIA tabs pattern has it).
const TABS = ["now", "history"];
function select(name) {
  for (const tab of TABS) {
    const chosen = tab === name;
    const button = document.getElementById(`tab-${tab}`);
    button.setAttribute("aria-selected", String(chosen));
    button.tabIndex = chosen ? 0 : -1;
    document.getElementById(`view-${tab}`).hidden = !chosen;
  }
  redraw();
}
for (const tab of TABS) {
  const button = document.getElementById(`tab-${tab}`);
  button.addEventListener("click", () => select(tab));
  button.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    const next = TABS[(TABS.indexOf(tab) + 1) % TABS.length];
    select(next);
    document.getElementById(`tab-${next}`).focus();
  });
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(redraw, 150);
});
connect();

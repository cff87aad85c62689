// The live dashboard: one Server-Sent Events stream carries this page's data (for its filters)
// and the pipeline's health; charts are drawn as plain SVG.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f5f99", "#b34700", "#2e7d32", "#6a3d9a", "#8c1c3a", "#00695c"];
const FILTERS = ["currency", "country", "design", "department", "range"];
const fmt = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat("en-GB", { notation: "compact", maximumFractionDigits: 1 });
let stream = null;
let latest = null;

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

function axes(svg, width, height, pad, max, buckets) {
  for (const f of [0, 0.5, 1]) {
    const y = height - pad.bottom - f * (height - pad.top - pad.bottom);
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: pad.left - 4, y: y + 4, "text-anchor": "end", class: "label" },
      compact.format(f * max)));
  }
  const step = Math.max(1, Math.ceil(buckets.length / Math.floor((width - pad.left) / 80)));
  buckets.forEach((bucket, i) => {
    if (i % step) return;
    const x = pad.left + (i + 0.5) * (width - pad.left - pad.right) / buckets.length;
    svg.append(el("text", { x, y: height - 6, "text-anchor": "middle", class: "label" },
      bucketLabel(bucket)));
  });
}

function bucketLabel(bucket) {
  const kind = latest ? latest.bucket : "month";
  if (kind === "hour") return bucket.slice(11, 16);
  if (kind === "day") return bucket.slice(5, 10);
  return bucket.slice(0, 7);
}

// Columns of units per time bucket.
function columns(svg, buckets, totals, title) {
  const height = 220, pad = { top: 10, right: 10, bottom: 26, left: 52 };
  const width = prepare(svg, height);
  const max = Math.max(...totals, 1);
  axes(svg, width, height, pad, max, buckets);
  const slot = (width - pad.left - pad.right) / Math.max(buckets.length, 1);
  totals.forEach((value, i) => {
    if (!value) return;
    const h = (height - pad.top - pad.bottom) * value / max;
    svg.append(el("rect", { x: pad.left + i * slot + slot * 0.1, y: height - pad.bottom - h,
      width: Math.max(slot * 0.8, 1), height: h, fill: COLOURS[0], class: "bar" }));
  });
  describe(svg, title, buckets.slice(-5).map((b, i) => [bucketLabel(b),
    fmt.format(totals[totals.length - Math.min(5, buckets.length) + i])]));
}

// One line per currency: value per time bucket.
function lines(svg, buckets, series, title, legend) {
  const height = 220, pad = { top: 10, right: 10, bottom: 26, left: 52 };
  const width = prepare(svg, height);
  const max = Math.max(...series.flatMap((s) => s.values), 1);
  axes(svg, width, height, pad, max, buckets);
  const slot = (width - pad.left - pad.right) / Math.max(buckets.length, 1);
  legend.replaceChildren();
  series.forEach((s, n) => {
    const points = s.values.map((v, i) => `${pad.left + (i + 0.5) * slot},` +
      `${height - pad.bottom - (height - pad.top - pad.bottom) * v / max}`);
    svg.append(el("polyline", { points: points.join(" "), fill: "none", stroke: COLOURS[n],
      "stroke-width": 2.5, class: "line" }));
    if (buckets.length === 1) {
      const [x, y] = points[0].split(",");
      svg.append(el("circle", { cx: x, cy: y, r: 4, fill: COLOURS[n] }));
    }
    const key = document.createElement("span");
    key.innerHTML = `<span class="swatch" style="background:${COLOURS[n]}"></span>`;
    key.append(s.name);
    legend.append(key);
  });
  describe(svg, title, series.map((s) => [s.name, compact.format(s.values.reduce((a, b) => a + b, 0))]));
}

function render(data) {
  latest = data;
  const buckets = data.buckets;
  const currencies = [...new Set(data.over_time.map((r) => r.label))].sort();
  const index = new Map(buckets.map((b, i) => [b, i]));
  const units = buckets.map(() => 0);
  const series = currencies.map((name) => ({ name, values: buckets.map(() => 0) }));
  for (const r of data.over_time) {
    units[index.get(r.bucket)] += r.units;
    series[currencies.indexOf(r.label)].values[index.get(r.bucket)] += r.value;
  }
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
  fillOptions(data.options);
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

function renderHealth(h) {
  show("health-slot", h.slot_lag_bytes, " bytes");
  show("health-stream", h.stream_lag_ms, " ms");
  show("health-files", h.files_waiting, "");
  show("health-p50", h.latency_ms && h.latency_ms.p50, " ms");
  show("health-p99", h.latency_ms && h.latency_ms.p99, " ms");
  show("health-age", h.last_event_age_s, " s");
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
    render(JSON.parse(e.data));
  });
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
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => latest && render(latest), 150);
});
connect();

// The pool's page: the workers live (GET /pool), and "try it" (POST a photo, draw what the model found).
// Plain browser JavaScript, no build step. Everything from the server is written as text, never as HTML.
"use strict";

const GOLDEN = 0.618033988749895;
const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const STATE_KIND = {
  ready: "good", loading: "wait", draining: "wait", ejected: "bad", unreachable: "bad", failed: "bad", left: "gone",
};

const $ = (id) => document.getElementById(id);
const page = { role: null, models: [], files: [], timer: null, key: sessionStorage.getItem("visionpool-key") || "" };

// The pool's API key (when it has keys), for the proxy's own routes; kept in this tab's sessionStorage only.
function withKey(init = {}) {
  return page.key ? { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${page.key}` } } : init;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("key-note").textContent = message;
  $("api-key").focus();
}

// The colour of a class: the same as `visionpool predict --draw` (client/draw.py's class_colour).
function classColour(classId) {
  const [r, g, b] = hsvToRgb((classId * GOLDEN) % 1.0, 0.85, 0.85);
  return `rgb(${Math.round(r * 255)}, ${Math.round(g * 255)}, ${Math.round(b * 255)})`;
}

function hsvToRgb(h, s, v) { // Python's colorsys.hsv_to_rgb
  const i = Math.floor(h * 6.0);
  const f = h * 6.0 - i;
  const p = v * (1.0 - s), q = v * (1.0 - s * f), t = v * (1.0 - s * (1.0 - f));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function number(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// The message of an error answer: ours ({"error": {"code", "message"}}) or the v2 protocol's ({"error": "..."}).
function errorMessage(body, status) {
  const error = body && body.error;
  if (typeof error === "string") return `${status}: ${error}`;
  if (error && error.message) return `${status} ${error.code}: ${error.message}`;
  return `The server answered ${status}.`;
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`The server answered ${response.status} with something that is not JSON: ${text.slice(0, 200)}`);
  }
}

// ---- the pool view ----

async function refresh() {
  clearTimeout(page.timer);
  try {
    const response = await fetch("/pool", withKey({ cache: "no-store" }));
    const body = await readJson(response);
    if (response.status === 401) askForKey(errorMessage(body, response.status));
    if (!response.ok) throw new Error(errorMessage(body, response.status));
    $("key-form").hidden = true;
    showPool(body);
  } catch (error) {
    $("summary").textContent = `Could not read the pool: ${error.message}`;
    $("summary").className = "bad";
  } finally {
    if (!document.hidden) page.timer = setTimeout(refresh, REFRESH_MS);
  }
}

function showPool(pool) {
  page.role = pool.role;
  document.body.dataset.role = pool.role;
  $("route").hidden = pool.role !== "proxy";
  const ready = pool.workers.filter((w) => w.state === "ready").length;
  const who = pool.role === "proxy" ? "Proxy" : `Worker ${pool.workers.length ? pool.workers[0].id : ""}`;
  $("summary").textContent = `${who} · ${ready} of ${pool.workers.length} worker${pool.workers.length === 1 ? "" : "s"} ready`;
  $("summary").className = ready ? "good" : "bad";
  $("workers").tBodies[0].replaceChildren(...pool.workers.map(workerRow));
  $("models").tBodies[0].replaceChildren(...pool.models.map(modelRow));
  const windows = pool.workers.map((w) => w.stats && w.stats.window_s).filter((s) => s);
  $("window").textContent = windows.length
    ? `Images/s and latency over the last ${Math.round(Math.min(...windows))} s (p50 and p99 from the workers' latency histograms); refreshed every ${REFRESH_MS / 1000} s.`
    : "";
  updateModelChoice(pool.models, pool.default_model);
}

function workerRow(worker) {
  const stats = worker.stats || {};
  const latency = stats.latency_ms || {};
  const row = el("tr");
  row.dataset.worker = worker.id;
  row.dataset.state = worker.state;
  const address = el("td", worker.url);
  if (worker.grpc) address.append(el("div", `gRPC ${worker.grpc}`, "small"));
  const models = Object.entries(worker.models).map(([name, version]) => `${name} v${version}`).join(", ");
  const engines = [...new Set((stats.models || []).map(engineText))].join("; ");
  const state = el("td", null, "state");
  const badge = el("span", stateText(worker), `badge ${STATE_KIND[worker.state] || "bad"}`);
  if (worker.error) badge.title = worker.error;
  state.append(badge);
  row.append(
    el("td", worker.id, "id"), address, el("td", models), el("td", engines || "–"), state,
    el("td", stats.in_flight ?? "–", "num in-flight"), el("td", number(stats.images_per_s, 1), "num rate"),
    el("td", number(latency.p50, 1), "num p50"), el("td", number(latency.p99, 1), "num p99"),
  );
  return row;
}

function stateText(worker) {
  if (worker.state === "ejected" && worker.ejected_for_s) return `ejected (back in ${Math.ceil(worker.ejected_for_s)} s)`;
  if (worker.state === "left") return `left ${Math.round(worker.left_s_ago)} s ago`;
  return worker.state;
}

function engineText(model) {
  return [model.engine, model.device, model.precision].filter((part) => part).join(" · ");
}

function modelRow(model) {
  const row = el("tr");
  row.dataset.model = model.name;
  const input = model.input ? `${model.input.width}×${model.input.height}` : "–";
  row.append(
    el("td", model.name, "id"), el("td", model.versions.join(", ")), el("td", model.task || "–"), el("td", input),
    el("td", model.engine ? engineText(model) : "–"), el("td", model.max_batch_size ?? "–", "num"),
    el("td", model.max_queue_delay_ms ?? "–", "num"), el("td", `${model.ready} of ${model.workers}`, "num"),
  );
  return row;
}

function updateModelChoice(models, preferred) {
  const select = $("model");
  const names = models.map((m) => m.name);
  page.models = models;
  if (names.join("\n") === [...select.options].map((o) => o.value).join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(chosen)) {
    select.value = chosen;
  } else {
    if (names.includes(preferred)) select.value = preferred;
    showModelDefaults();
  }
}

function showModelDefaults() {
  const model = page.models.find((m) => m.name === $("model").value);
  if (model && typeof model.threshold === "number") $("threshold").value = model.threshold;
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
}

// ---- try it ----

function choose(files) {
  page.files = [...files];
  $("again").disabled = page.files.length === 0;
  run();
}

async function run() {
  const results = $("results");
  const cards = page.files.map((file) => {
    const card = el("article", null, "result pending");
    card.append(el("h3", file.name), el("p", "Sending…", "meta"));
    return card;
  });
  results.replaceChildren(...cards);
  const settings = { model: $("model").value, threshold: $("threshold").value, route: route() };
  for (const [index, file] of page.files.entries()) {
    const card = cards[index];
    try {
      showAnswer(card, file, await predict(file, settings));
    } catch (error) {
      card.className = "result failed";
      const alert = el("p", error.message, "error");
      alert.setAttribute("role", "alert");
      card.replaceChildren(el("h3", file.name), alert);
    }
  }
}

function route() {
  if (page.role !== "proxy") return "worker";
  return document.querySelector("input[name=route]:checked").value;
}

async function predict(file, { model, threshold, route }) {
  if (!model) throw new Error("No model is served yet: no worker is ready.");
  const started = performance.now();
  let base = "", workerId = null, ticket = null;
  if (route === "p2p") {
    const response = await fetch(`/lookup?model=${encodeURIComponent(model)}`, withKey({ cache: "no-store" }));
    const found = await readJson(response);
    if (!response.ok) throw new Error(errorMessage(found, response.status));
    base = found.url;
    workerId = found.worker_id;
    ticket = found.ticket || null;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  const url = `${base}/models/${encodeURIComponent(model)}/predict?threshold=${encodeURIComponent(threshold)}`;
  let response;
  try {
    const init = { method: "POST", body: form };
    response = await fetch(url, ticket ? { ...init, headers: { Authorization: `Bearer ${ticket}` } } : withKey(init));
  } catch (error) {
    if (route === "p2p") {
      throw new Error(
        `This browser could not reach worker ${workerId} at ${base}: p2p needs the browser to reach the workers' ` +
        "own addresses (and a worker that joined after the page loaded needs a reload). Send through the proxy instead.");
    }
    throw new Error(`The request failed before any answer: ${error.message}`);
  }
  const body = await readJson(response);
  if (!response.ok) throw new Error(errorMessage(body, response.status));
  return {
    body, route, roundTripMs: performance.now() - started,
    worker: response.headers.get("X-Worker-ID") || workerId || "?", requestId: response.headers.get("X-Request-ID"),
  };
}

function showAnswer(card, file, answer) {
  const { body } = answer;
  card.className = "result done";
  card.dataset.worker = answer.worker;
  card.dataset.route = answer.route;
  const via = { proxy: "through the proxy", p2p: "p2p", worker: "this worker" }[answer.route];
  const meta = el("p", `${body.model.name} v${body.model.version} · answered by ${answer.worker} (${via}) · `, "meta");
  meta.append(el("span", `${answer.roundTripMs.toFixed(0)} ms round trip`, "round-trip"));
  const picture = el("div", null, "picture");
  const image = el("img");
  image.alt = file.name;
  image.src = URL.createObjectURL(file);
  image.addEventListener("load", () => URL.revokeObjectURL(image.src), { once: true });
  const overlay = svg("svg", { class: "boxes", viewBox: `0 0 ${body.image.width} ${body.image.height}`, preserveAspectRatio: "none" });
  picture.append(image, overlay);
  const details = el("details");
  details.append(el("summary", "JSON answer"), el("pre", JSON.stringify(body, null, 2), "json"));
  card.replaceChildren(el("h3", file.name), meta, picture, found(body), timings(body.timing_ms, answer), details);
  drawBoxes(overlay, body);
}

function found(body) {
  const { predictions } = body;
  if (body.embedding) {
    const norm = Math.sqrt(body.embedding.reduce((sum, v) => sum + v * v, 0));
    const head = body.embedding.slice(0, 4).map((v) => v.toFixed(3)).join(", ");
    return el("p", `Embedding: ${body.embedding.length} values (norm ${norm.toFixed(3)}): ${head}, …`, "embedding");
  }
  if (!predictions.length) return el("p", "Nothing found above the threshold.", "none");
  const list = el("ol", null, "found");
  for (const p of predictions) {
    const item = el("li");
    item.dataset.label = p.label;
    const swatch = el("span", null, "swatch");
    swatch.style.background = classColour(p.class_id);
    item.append(swatch, el("span", p.label, "label"), el("span", p.score.toFixed(2), "score"));
    list.append(item);
  }
  return list;
}

function timings(stages, answer) {
  const table = el("table", null, "timings");
  const rows = Object.entries(stages).map(([stage, ms]) => [stage, ms.toFixed(2)]);
  rows.push(["round trip (browser)", answer.roundTripMs.toFixed(1)]);
  if (answer.requestId) rows.push(["request id", answer.requestId]);
  for (const [name, value] of rows) {
    const row = el("tr");
    row.append(el("th", name), el("td", value, "num"));
    table.append(row);
  }
  return table;
}

// COCO's skeleton (client/wire.py's COCO_SKELETON): the bones a 17-keypoint pose model's points are joined by.
const COCO_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8],
  [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]];
const MASK_OPACITY = 110 / 255; // client/draw.py's MASK_ALPHA
const KEYPOINT_SCORE = 0.5; // client/draw.py's: keypoints scoring less are not drawn

// Masks, boxes, keypoints and labels as client/draw.py draws them: masks filled, then every outline and
// skeleton, then the labels, the best one on top.
function drawBoxes(overlay, body) {
  const { width, height } = body.image;
  const line = Math.max(3, Math.round(Math.min(width, height) / 150));
  const size = Math.max(12, Math.round(Math.min(width, height) / 30));
  for (const p of body.predictions.filter((p) => p.mask && p.mask.polygons)) {
    for (const polygon of p.mask.polygons) {
      const points = [];
      for (let i = 0; i + 1 < polygon.length; i += 2) points.push(`${polygon[i]},${polygon[i + 1]}`);
      const shape = svg("polygon", { class: "mask", points: points.join(" "), fill: classColour(p.class_id), "fill-opacity": MASK_OPACITY });
      shape.dataset.label = p.label;
      overlay.append(shape);
    }
  }
  const boxed = body.predictions.filter((p) => p.box);
  for (const p of boxed) {
    const group = svg("g", { class: "box" });
    group.dataset.label = p.label;
    group.dataset.classId = p.class_id;
    group.dataset.score = p.score;
    group.append(svg("rect", {
      x: p.box.x + line / 2, y: p.box.y + line / 2, width: Math.max(p.box.width - line, 1),
      height: Math.max(p.box.height - line, 1), fill: "none", stroke: classColour(p.class_id), "stroke-width": line,
    }));
    overlay.append(group);
  }
  for (const p of body.predictions.filter((p) => p.keypoints)) drawSkeleton(overlay, p, line);
  for (const p of [...boxed].sort((a, b) => a.score - b.score)) {
    const tag = svg("g", { class: "tag" });
    const tab = svg("rect", { fill: classColour(p.class_id) });
    const text = svg("text", { "font-size": size, fill: "#fff", "dominant-baseline": "text-before-edge" });
    text.textContent = `${p.label} ${p.score.toFixed(2)}`;
    tag.append(tab, text);
    overlay.append(tag);
    const tabWidth = text.getComputedTextLength() + 6, tabHeight = size + 4;
    const x = Math.min(Math.max(p.box.x, 0), Math.max(width - tabWidth, 0));
    const y = p.box.y - tabHeight >= 0 ? p.box.y - tabHeight : Math.min(p.box.y, Math.max(height - tabHeight, 0));
    for (const [name, value] of Object.entries({ x, y, width: tabWidth, height: tabHeight })) tab.setAttribute(name, value);
    text.setAttribute("x", x + 3);
    text.setAttribute("y", y + 2);
  }
}

function drawSkeleton(overlay, p, line) {
  const points = p.keypoints;
  const seen = points.map(([, , score]) => score >= KEYPOINT_SCORE);
  const group = svg("g", { class: "pose" });
  group.dataset.label = p.label;
  const bones = points.length === 17 ? COCO_SKELETON : [];
  for (const [a, b] of bones) {
    if (!seen[a] || !seen[b]) continue;
    group.append(svg("line", {
      class: "bone", x1: points[a][0], y1: points[a][1], x2: points[b][0], y2: points[b][1],
      stroke: classColour(p.class_id), "stroke-width": Math.max(line - 1, 2),
    }));
  }
  points.forEach(([x, y], i) => {
    if (seen[i]) group.append(svg("circle", { class: "keypoint", cx: x, cy: y, r: line + 1, fill: "#fff", stroke: classColour(p.class_id) }));
  });
  overlay.append(group);
}

// ---- wiring ----

function dropZone() {
  const zone = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) choose(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("files").click();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("files").addEventListener("change", (event) => choose(event.target.files));
  $("again").addEventListener("click", run);
  $("model").addEventListener("change", showModelDefaults);
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    page.key = $("api-key").value.trim();
    sessionStorage.setItem("visionpool-key", page.key);
    $("api-key").value = "";
    refresh();
  });
  dropZone();
  refresh();
});

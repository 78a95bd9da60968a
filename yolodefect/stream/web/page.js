// The operator's page: one status per server-sent "status" message, rejects from "event" messages.
// Plain DOM, no build step; every text from the station goes through textContent (never HTML).
"use strict";

const GALLERY_SIZE = 24;
const MJPEG_MAX_CAMERAS = 3;  // browsers allow ~6 connections per host: more cameras refresh JPEGs instead
const REFRESH_MS = 200;       // periodic JPEG refresh (5 fps) when not streaming MJPEG

const $ = (selector, root = document) => root.querySelector(selector);
const cameras = new Map();   // name -> .camera element
const rejects = new Map();   // event_id -> event (the gallery, newest first when sorted)
const thumbs = new Map();    // event_id -> .reject element
let lastModelJson = "";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ms(value) {
  return value === null || value === undefined ? "–" : Math.round(value).toString();
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// -- status -------------------------------------------------------------------------------------

function renderStatus(status) {
  setText($("#station"), status.station.name + (status.station.running ? "" : " (stopped)"));
  document.title = status.station.name + " – yolodefect";
  const health = $("#health");
  health.dataset.ok = String(status.health.ok);
  setText(health, status.health.ok ? "OK" : status.health.reason || "not OK");

  const totals = status.totals;
  setText($("#total-parts"), String(totals.parts));
  setText($("#total-rejects"), String(totals.rejects));
  setText($("#total-passes"), String(totals.passes));
  setText($("#total-errors"), String(totals.errors));
  const byClass = $("#rejects-by-class");
  byClass.replaceChildren(...Object.entries(totals.rejects_by_class)
    .sort((a, b) => b[1] - a[1])
    .map(([name, count]) => el("li", "", `${name}: ${count}`)));

  $("#alarms").replaceChildren(...status.alarms.map((alarm) => {
    const node = el("div", "alarm", (alarm.camera ? alarm.camera + ": " : "") + alarm.message);
    node.dataset.kind = alarm.kind;
    node.append(el("span", "since", "since " + alarm.since));
    return node;
  }));

  const useMjpeg = status.cameras.length <= MJPEG_MAX_CAMERAS;
  for (const camera of status.cameras) renderCamera(camera, useMjpeg);
  renderSinks(status.sinks);
  renderModel(status.model);
}

function renderCamera(camera, useMjpeg) {
  let node = cameras.get(camera.name);
  if (!node) {
    node = el("div", "camera");
    node.dataset.camera = camera.name;
    const title = el("h3", "", camera.name + " ");
    title.append(el("small", "source", camera.source));
    const img = el("img", "live");
    img.alt = "live view of " + camera.name;
    const stats = el("dl");
    for (const [label, cls] of [["fps", "fps"], ["latency p50 / p95 ms", "latency"], ["dropped", "dropped"],
                                ["rejects", "rejects"]]) {
      stats.append(el("dt", "", label), el("dd", cls, "–"));
    }
    node.append(title, img, stats);
    $("#cameras").append(node);
    cameras.set(camera.name, node);
    startLiveView(img, camera.name, useMjpeg);
  }
  setText($(".fps", node), camera.fps.toFixed(1));
  setText($(".latency", node), `${ms(camera.latency_p50_ms)} / ${ms(camera.latency_p95_ms)}`);
  setText($(".dropped", node), String(camera.dropped_frames));
  setText($(".rejects", node), String(camera.rejects));
}

function startLiveView(img, name, useMjpeg) {
  const base = "/api/cameras/" + encodeURIComponent(name);
  if (useMjpeg) {
    img.onerror = () => setTimeout(() => { img.src = `${base}/stream.mjpeg?r=${Date.now()}`; }, 2000);
    img.src = base + "/stream.mjpeg";
    return;
  }
  const load = () => { img.src = `${base}/frame.jpg?t=${Date.now()}`; };
  img.onload = () => setTimeout(load, document.hidden ? 2000 : REFRESH_MS);
  img.onerror = () => setTimeout(load, 1000);  // 503 before the first frame, or the station restarting
  load();
}

function renderSinks(sinks) {
  const box = $("#sinks");
  // One row per sink: cameras sharing a sink share its one queue in the outbox, so its numbers are the station's.
  if (!sinks.length) {
    if (!$(".empty", box)) box.replaceChildren(el("p", "empty", "no sinks"));
    return;
  }
  box.replaceChildren(...sinks.map((sink) => {
    const cameras = sink.cameras || [sink.camera];
    const node = el("div", "sink");
    node.dataset.camera = cameras.join(" ");  // select one camera's sinks with [data-camera~="NAME"]
    node.dataset.sink = sink.name;
    node.dataset.state = sink.state;
    node.append(el("strong", "name", sink.name), document.createTextNode(" (" + cameras.join(", ") + ") "));
    const state = sink.state === "down" ? "down" + (sink.down_since ? " since " + sink.down_since : "") : "connected";
    node.append(el("span", "state", state));
    node.append(el("div", "detail backlog", `backlog ${sink.backlog} · delivered ${sink.delivered}`
      + (sink.last_error ? " · " + sink.last_error : "")));
    return node;
  }));
}

function renderModel(model) {
  const json = JSON.stringify(model);
  if (json === lastModelJson) return;  // keeps an opened model card open
  lastModelJson = json;
  const box = $("#model");
  const facts = el("table");
  const row = (label, value, cls) => {
    const tr = el("tr");
    tr.append(el("th", "", label), el("td", cls || "", value === undefined || value === null ? "–" : String(value)));
    facts.append(tr);
  };
  row("name", model.name, "name");
  row("sha256", model.sha256 ? model.sha256.slice(0, 12) : null, "sha");
  row("precision", model.precision, "precision");
  const thresholds = el("table", "thresholds");
  const head = el("tr");
  head.append(el("th", "", "class"), el("th", "", "threshold"));
  thresholds.append(head);
  for (const [name, value] of Object.entries(model.thresholds || {})) {
    const tr = el("tr");
    tr.append(el("td", "", name), el("td", "", String(value)));
    thresholds.append(tr);
  }
  const parts = [facts, thresholds];
  if (model.card) {
    const card = el("details", "card");
    card.append(el("summary", "", "model card"), el("pre", "", JSON.stringify(model.card, null, 2)));
    parts.push(card);
  }
  box.replaceChildren(...parts);
}

// -- reject gallery and viewer -----------------------------------------------------------------

function evidenceUrl(event) {
  const paths = event.snapshot_paths || {};
  const kind = paths.annotated || !paths.raw ? "annotated" : "raw";
  return `/api/evidence/${encodeURIComponent(event.event_id)}/${kind}.jpg`;
}

function addRejects(events) {
  for (const event of events) {
    if (event.decision === "reject") rejects.set(event.event_id, event);
  }
  const newest = [...rejects.values()].sort((a, b) => (a.emitted_at < b.emitted_at ? 1 : -1)).slice(0, GALLERY_SIZE);
  const keep = new Set(newest.map((e) => e.event_id));
  for (const id of [...rejects.keys()]) {
    if (!keep.has(id)) {
      rejects.delete(id);
      thumbs.get(id)?.remove();
      thumbs.delete(id);
    }
  }
  const gallery = $("#gallery");
  newest.forEach((event, index) => {
    let node = thumbs.get(event.event_id);
    if (!node) {
      node = el("button", "reject");
      node.type = "button";
      node.dataset.eventId = event.event_id;
      const img = el("img", "thumb");
      img.alt = "reject " + event.event_id;
      img.loading = "lazy";
      img.onerror = () => node.classList.add("no-image");  // evidence not kept (or outside the evidence folder)
      img.src = evidenceUrl(event);
      const classes = (event.defects || []).map((d) => d["class"]);  // the event schema's key
      node.title = event.emitted_at || "";
      node.append(img, el("div", "caption", `${event.source} · ${[...new Set(classes)].join(", ") || "reject"}`),
        // The time of day is what an operator compares with the line; the full timestamp is the tooltip.
        el("div", "caption", (event.emitted_at || "").replace(/^.*T/, "").replace(/\.\d+Z$/, " UTC")));
      node.addEventListener("click", () => openViewer(rejects.get(event.event_id) || event));
      thumbs.set(event.event_id, node);
    }
    if (gallery.children[index] !== node) gallery.insertBefore(node, gallery.children[index] || null);
  });
}

function openViewer(event) {
  const viewer = $("#viewer");
  $("img.full", viewer).src = evidenceUrl(event);
  $("pre.event-json", viewer).textContent = JSON.stringify(event, null, 2);
  viewer.hidden = false;
}

function closeViewer() {
  const viewer = $("#viewer");
  viewer.hidden = true;
  $("img.full", viewer).removeAttribute("src");
}

async function loadGallery() {
  try {
    const response = await fetch(`/api/events?decision=reject&limit=${GALLERY_SIZE}`, { cache: "no-store" });
    if (response.ok) addRejects(await response.json());
  } catch (error) {
    // the stream's reconnect loads it again
  }
}

// -- live connection ---------------------------------------------------------------------------

function connect() {
  const connection = $("#connection");
  const stream = new EventSource("/api/stream");
  stream.addEventListener("open", () => {
    connection.dataset.state = "live";
    connection.textContent = "live";
    loadGallery();  // also after a reconnect: rejects of the gap
  });
  stream.addEventListener("error", () => {
    connection.dataset.state = "down";
    connection.textContent = "reconnecting…";
  });
  stream.addEventListener("status", (message) => renderStatus(JSON.parse(message.data)));
  stream.addEventListener("event", (message) => addRejects([JSON.parse(message.data)]));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#viewer .close").addEventListener("click", closeViewer);
  $("#viewer").addEventListener("click", (e) => { if (e.target.id === "viewer") closeViewer(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeViewer(); });
  connect();
});

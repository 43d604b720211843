// The maskformer page: send an image to POST /predict, draw the answered segments (COCO RLE masks) over it,
// and offer the answer's files. Plain JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,       // GET /models entry
  image: null,       // HTMLImageElement of the chosen file
  blob: null,        // the file sent to the server
  name: "image",     // its name without extension, for downloads
  result: null,      // POST /predict answer
  counts: [],        // decoded RLE run lengths per segment
  owner: null,       // Int32Array [H * W]: index of the segment drawn at each pixel, -1 none
  hidden: new Set(), // class ids toggled off
  request: 0,        // number of the latest request; older answers are dropped
  urls: [],          // object URLs of the current downloads
  taskPicked: false, // the person chose a task (else the page follows the model's)
};

function tokenHeaders() {
  const token = localStorage.getItem("maskformer-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...tokenHeaders() } });
  if (response.status === 401) $("token-row").hidden = false;
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON: keep the status text */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function loadModel() {
  try {
    const model = (await (await api("/models")).json()).models[0];
    state.model = model;
    // The page starts on the task the model was made for, unless a task was already picked.
    if (!state.taskPicked && model.task) $("task").value = model.task;
    $("model-name").textContent =
      `${model.name} · ${model.family} · ${model.num_classes} classes · licence: ${model.licence}`;
  } catch (err) {
    $("model-name").textContent = `model description unavailable (${err.message})`;
  }
}

async function loadExamples() {
  const examples = await (await fetch("/examples")).json();
  for (const example of examples) {
    const img = document.createElement("img");
    img.src = example.url;
    img.alt = example.name;
    img.title = `segment ${example.name}`;
    img.tabIndex = 0;
    img.dataset.example = example.name;
    const pick = async () => useImage(await (await fetch(example.url)).blob(), `${example.name}.png`);
    img.addEventListener("click", pick);
    img.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(); });
    $("examples").append(img);
  }
}

async function useImage(blob, fileName) {
  $("tooltip").hidden = true; // it described the previous image
  state.blob = blob;
  state.name = fileName.replace(/\.[^.]*$/, "") || "image";
  const url = URL.createObjectURL(blob);
  const img = new Image();
  try {
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error(`${fileName}: this browser cannot show the image`));
      img.src = url;
    });
  } catch (err) {
    setStatus(err.message, true);
    return;
  }
  state.image = img;
  await segment();
}

// COCO compressed RLE (pycocotools' rleFrString): 5 bits per character from '0', a continuation bit, a sign
// bit on the last character, and counts after the second stored as differences to the count two before.
function decodeCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Instances below the page's minimum score are neither drawn nor listed (the other tasks have no such slider).
function scoreShown(segment) {
  return state.result.task !== "instance" || segment.score >= Number($("min-score").value);
}

function visible(segment) {
  return !state.hidden.has(segment.class_id) && scoreShown(segment);
}

// Which segment shows at each pixel: instances in rising score order, so that the best is on top.
function paintOwner() {
  const { width: w, height: h, segments } = state.result;
  const owner = new Int32Array(w * h).fill(-1);
  const order = segments.map((_, i) => i).filter((i) => visible(segments[i]));
  order.sort((a, b) => segments[a].score - segments[b].score);
  for (const i of order) {
    const counts = state.counts[i];
    let pos = 0;
    for (let k = 0; k < counts.length; k += 1) {
      if (k % 2 === 1) {
        // RLE runs go down columns (Fortran order).
        for (let p = pos; p < pos + counts[k]; p += 1) owner[(p % h) * w + ((p / h) | 0)] = i;
      }
      pos += counts[k];
    }
  }
  state.owner = owner;
}

function classColor(classId) {
  const classes = state.model ? state.model.classes : [];
  if (classes[classId]) return classes[classId].color;
  const hue = (classId * 137.508) % 360;  // golden-angle hues for classes the model card lacks
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (0.5 - 0.35 * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function draw() {
  const { width: w, height: h, segments } = state.result;
  for (const id of ["input-canvas", "overlay-canvas"]) {
    const canvas = $(id);
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").drawImage(state.image, 0, 0, w, h);
  }
  const ctx = $("overlay-canvas").getContext("2d");
  const pixels = ctx.getImageData(0, 0, w, h);
  const data = pixels.data;
  const alpha = Number($("opacity").value);
  const colors = segments.map((s) => classColor(s.class_id));
  const owner = state.owner;
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      const q = y * w + x;
      const i = owner[q];
      const edge = (x + 1 < w && owner[q + 1] !== i) || (y + 1 < h && owner[q + w] !== i);
      if (i < 0 && !edge) continue;
      const o = 4 * q;
      if (edge) {
        data[o] = data[o + 1] = data[o + 2] = 255;
        continue;
      }
      const c = colors[i];
      for (let ch = 0; ch < 3; ch += 1) data[o + ch] = Math.round((1 - alpha) * data[o + ch] + alpha * c[ch]);
    }
  }
  ctx.putImageData(pixels, 0, 0);
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const byClass = new Map();
  for (const s of state.result.segments) {
    if (!scoreShown(s)) continue;
    const entry = byClass.get(s.class_id) || { name: s.name, area: 0, count: 0 };
    entry.area += s.area;
    entry.count += 1;
    byClass.set(s.class_id, entry);
  }
  const entries = [...byClass.entries()].sort((a, b) => b[1].area - a[1].area);
  for (const [classId, entry] of entries) {
    const li = document.createElement("li");
    li.dataset.classId = classId;
    li.classList.toggle("off", state.hidden.has(classId));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${classColor(classId).join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.name;
    li.append(swatch, name);
    if (entry.count > 1) li.append(` ×${entry.count}`);
    li.title = `${entry.name}: ${entry.area.toLocaleString()} px`;
    li.addEventListener("click", () => {
      if (state.hidden.has(classId)) state.hidden.delete(classId); else state.hidden.add(classId);
      redraw();
      offerDownloads();
    });
    legend.append(li);
  }
  $("legend-box").hidden = entries.length === 0;
}

function base64Blob(text, type) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

function addDownload(label, fileName, blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  const a = document.createElement("a");
  a.href = url;
  a.download = fileName;
  a.textContent = label;
  a.dataset.kind = label;
  $("download-links").append(a);
}

// The files are the server's: the PNG it answers and the COCO JSON `maskformer predict` writes (?coco=true).
function offerDownloads() {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  $("download-links").replaceChildren();
  const r = state.result;
  const json = (data) => new Blob([JSON.stringify(data, null, 1)], { type: "application/json" });
  if (r.task === "semantic") addDownload("label PNG", `${state.name}_label.png`, base64Blob(r.png, "image/png"));
  if (r.task === "panoptic") {
    addDownload("panoptic PNG", r.coco.annotations[0].file_name, base64Blob(r.png, "image/png"));
    addDownload("panoptic JSON", `${state.name}_panoptic.json`, json(r.coco));
  }
  if (r.task === "instance") addDownload("instances JSON", `${state.name}_instances.json`, json(r.coco));
  $("overlay-canvas").toBlob((blob) => addDownload("overlay PNG", `${state.name}_overlay.png`, blob), "image/png");
  $("downloads").hidden = false;
}

function redraw() {
  paintOwner();
  draw();
  drawLegend();
}

async function segment() {
  if (!state.blob) return;
  const task = $("task").value;
  const params = new URLSearchParams({ task, coco: "true" });
  if (task !== "instance") params.set("png", "true");
  for (const [id, key] of [["score-threshold", "score_threshold"], ["overlap-threshold", "overlap_threshold"]]) {
    if ($(id).value !== "") params.set(key, $(id).value);
  }
  const body = new FormData();
  body.append("image", state.blob, `${state.name}.png`);
  const request = ++state.request;
  setStatus(`Segmenting (${task})…`);
  const started = performance.now();
  try {
    const result = await (await api(`/predict?${params}`, { method: "POST", body })).json();
    if (request !== state.request) return;
    if (result.width !== state.image.naturalWidth || result.height !== state.image.naturalHeight) {
      throw new Error(`the server read the image as ${result.width}x${result.height}, the browser as ` +
        `${state.image.naturalWidth}x${state.image.naturalHeight}`);
    }
    state.result = result;
    state.counts = result.segments.map((s) => decodeCounts(s.segmentation.counts));
    state.hidden = new Set();
    $("min-score-row").hidden = task !== "instance";
    $("views").hidden = false;
    redraw();
    offerDownloads();
    const ms = Math.round(performance.now() - started);
    const n = result.segments.length;
    setStatus(`${task}: ${n} segment${n === 1 ? "" : "s"} in ${result.width}x${result.height} (${ms} ms)`);
  } catch (err) {
    if (request === state.request) setStatus(err.message, true);
  }
}

function showTooltip(event) {
  const tip = $("tooltip");
  if (!state.result) return;
  const canvas = $("overlay-canvas");
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * canvas.width);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * canvas.height);
  const i = x >= 0 && y >= 0 && x < canvas.width && y < canvas.height ? state.owner[y * canvas.width + x] : -1;
  if (i < 0) {
    tip.hidden = true;
    return;
  }
  const s = state.result.segments[i];
  const share = (100 * s.area) / (canvas.width * canvas.height);
  tip.textContent = `${s.name} · score ${s.score.toFixed(2)} · ${s.area.toLocaleString()} px (${share.toFixed(1)}%)`;
  tip.style.left = `${event.clientX + 14}px`;
  tip.style.top = `${event.clientY + 14}px`;
  tip.hidden = false;
}

function wire() {
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) useImage(e.target.files[0], e.target.files[0].name); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) useImage(file, file.name);
  });
  document.addEventListener("paste", (e) => {
    const file = [...e.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) useImage(file, file.name || "pasted.png");
  });
  $("task").addEventListener("change", () => { state.taskPicked = true; segment(); });
  $("score-threshold").addEventListener("change", segment);
  $("overlap-threshold").addEventListener("change", segment);
  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = Number($("opacity").value).toFixed(2);
    if (state.result) { draw(); offerDownloads(); }
  });
  $("min-score").addEventListener("input", () => {
    $("min-score-value").textContent = Number($("min-score").value).toFixed(2);
    if (state.result) { redraw(); offerDownloads(); }
  });
  $("token").addEventListener("change", () => {
    localStorage.setItem("maskformer-token", $("token").value);
    loadModel();
    segment();
  });
  $("overlay-canvas").addEventListener("mousemove", showTooltip);
  $("overlay-canvas").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
}

wire();
loadModel();
loadExamples();

// kdsam's interactive page: no build step, no dependencies. The image is embedded once on the server
// (a session); every box or click is then decoded there against the stored embedding.
"use strict";

const $ = (id) => document.getElementById(id);
const imageCanvas = $("image");
const overlay = $("overlay");
const state = { session: null, width: 0, height: 0, actions: [], mask: null, request: 0, drag: null };
const MASK_RGBA = [30, 144, 255, 110];

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

async function openImage(file) {
  status(`Uploading and embedding ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("window", $("window").value);
  state.file = file;
  try {
    if (state.session) fetch(`/v1/sessions/${state.session}`, { method: "DELETE" });
    const info = await api("/v1/sessions", { method: "POST", body: form });
    const img = new Image();
    img.src = `/v1/sessions/${info.session_id}/image`;
    await img.decode();
    Object.assign(state, { session: info.session_id, width: info.width, height: info.height, actions: [], mask: null });
    for (const c of [imageCanvas, overlay]) { c.width = info.width; c.height = info.height; }
    imageCanvas.getContext("2d").drawImage(img, 0, 0);
    $("stage").hidden = false;
    $("hint").hidden = true;
    redraw();
    status(`${file.name}: ${info.width}x${info.height}, embedded in ${info.encode_ms} ms. Draw a box.`);
  } catch (err) {
    status(`Could not open ${file.name}: ${err.message}`, true);
  }
}

function imagePoint(event) {
  const rect = overlay.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.width;
  const y = ((event.clientY - rect.top) / rect.height) * state.height;
  return [Math.min(Math.max(x, 0), state.width), Math.min(Math.max(y, 0), state.height)];
}

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

// Prompts -> requests: boxes alone give one mask each; clicks refine the last box (one mask).
function requests() {
  const boxes = state.actions.filter((a) => a.box).map((a) => a.box);
  const clicks = state.actions.filter((a) => a.point);
  if (!clicks.length) return boxes.length ? [{ boxes }] : [];
  const withClicks = {
    boxes: boxes.slice(-1),
    points: clicks.map((a) => a.point),
    point_labels: clicks.map((a) => a.label),
  };
  return boxes.length > 1 ? [{ boxes: boxes.slice(0, -1) }, withClicks] : [withClicks];
}

async function decodeMasks(masks) {
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const ctx = canvas.getContext("2d");
  const union = new Uint8Array(state.width * state.height);
  for (const m of masks) {
    const img = new Image();
    img.src = `data:image/png;base64,${m.png}`;
    await img.decode();
    ctx.clearRect(0, 0, state.width, state.height);
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, state.width, state.height).data;
    for (let i = 0; i < union.length; i++) if (data[4 * i] > 127) union[i] = 1;
  }
  return union;
}

async function segment() {
  const id = ++state.request; // only the latest prompt's answer is shown
  const bodies = requests();
  $("undo").disabled = $("clear").disabled = !state.actions.length;
  if (!bodies.length) {
    state.mask = null;
    redraw();
    return;
  }
  try {
    const started = performance.now();
    const answers = await Promise.all(bodies.map((body) => api(`/v1/sessions/${state.session}/segment`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    })));
    const mask = await decodeMasks(answers.flatMap((a) => a.masks));
    if (id !== state.request) return;
    state.mask = mask;
    redraw();
    const decode = answers.reduce((s, a) => s + a.decode_ms, 0).toFixed(1);
    const area = mask.reduce((s, v) => s + v, 0);
    status(`Mask: ${area} pixels; decoder ${decode} ms, round trip ${(performance.now() - started).toFixed(0)} ms.`);
  } catch (err) {
    if (id === state.request) status(`Segmentation failed: ${err.message}`, true);
  }
}

function maskCanvas(rgbaOn, rgbaOff) {
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(state.width, state.height);
  for (let i = 0; i < state.mask.length; i++) pixels.data.set(state.mask[i] ? rgbaOn : rgbaOff, 4 * i);
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function redraw() {
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const link = $("download");
  if (state.mask) {
    ctx.drawImage(maskCanvas(MASK_RGBA, [0, 0, 0, 0]), 0, 0);
    link.href = maskCanvas([255, 255, 255, 255], [0, 0, 0, 255]).toDataURL("image/png");
    link.classList.remove("disabled");
  } else {
    link.removeAttribute("href");
    link.classList.add("disabled");
  }
  const scale = Math.max(state.width, state.height) / 500;
  ctx.lineWidth = 2 * scale;
  for (const a of state.actions.concat(state.drag ? [{ box: state.drag }] : [])) {
    if (a.box) {
      ctx.strokeStyle = "#ffd400";
      const [x0, y0, x1, y1] = a.box;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    } else {
      ctx.fillStyle = a.label ? "#2ecc40" : "#ff4136";
      ctx.beginPath();
      ctx.arc(a.point[0], a.point[1], 5 * scale, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}

function orderedBox(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

overlay.addEventListener("pointerdown", (event) => {
  if (!state.session) return;
  const p = imagePoint(event);
  if (tool() === "box") {
    state.drag = [...p, ...p];
    state.dragStart = p;
    overlay.setPointerCapture(event.pointerId);
  } else {
    state.actions.push({ point: p.map(Math.round), label: tool() === "object" ? 1 : 0 });
    redraw();
    segment();
  }
});
overlay.addEventListener("pointermove", (event) => {
  if (!state.drag) return;
  state.drag = orderedBox(state.dragStart, imagePoint(event));
  redraw();
});
overlay.addEventListener("pointerup", (event) => {
  if (!state.drag) return;
  const box = orderedBox(state.dragStart, imagePoint(event)).map(Math.round);
  state.drag = null;
  if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) {
    state.actions.push({ box });
    segment();
  }
  redraw();
});

$("undo").addEventListener("click", () => { state.actions.pop(); segment(); });
$("clear").addEventListener("click", () => { state.actions = []; segment(); });
$("file").addEventListener("change", (event) => { if (event.target.files[0]) openImage(event.target.files[0]); });
$("window").addEventListener("change", () => { if (state.file) openImage(state.file); });  // re-read with the new window
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  if (event.dataTransfer.files[0]) openImage(event.dataTransfer.files[0]);
});

api("/healthz").then((h) => { $("model").textContent = `model: ${h.model}`; })
  .catch(() => status("The kdsam server does not answer.", true));

// For tests and scripts: the mask shown, as a 0/255 PNG data URL (null before the first prompt).
window.kdsam = { state, maskPNG: () => (state.mask ? $("download").href : null) };

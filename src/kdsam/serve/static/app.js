// kdsam's interactive page: no build step, no dependencies. An image is embedded once on the server
// (a session; a volume's slices are embedded there in the background); every prompt is then decoded
// against the stored embeddings. Prompts belong to objects (objects.js); the viewport is view.js.
"use strict";

import { Objects, labelSlice, overlayCanvas } from "./objects.js";
import { setupPacs } from "./pacs.js";
import { Viewport, displayCopy } from "./view.js";

const $ = (id) => document.getElementById(id);
const VOLUME_SUFFIXES = [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".npz", ".dcm", ".dicom", ".ima"];
const state = {
  doc: null, // {kind: "image"|"volume", id, name, width, height, depth, label, load(window), window}
  z: 0,
  slices: new Map(), // z -> display copy of the slice
  masks: new Map(), // object id -> Map(z -> Uint8Array of width*height, 1 = object)
  answers: new Map(), // request key -> Promise of Map(z -> Uint8Array)
  busy: 0,
  generation: 0,
  drag: null,
  windowDrag: null,
  boxOnly: false,
  latencies: [], // {kind, ms}: mouse release -> mask drawn
  moves: [], // ms from a pointer move to the frame that shows it
  pendingLatency: null,
  pendingMove: null,
  serverMs: 0, // model time (decode_ms) of the requests since the last prompt
};
const objects = new Objects(() => changed());
const view = new Viewport($("view"), framed);

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

function setBusy(delta) {
  state.busy += delta;
  const busy = state.busy > 0;
  $("spinner").hidden = !busy;
  $("stage").classList.toggle("locked", busy);
  $("view").setAttribute("aria-busy", String(busy));
}

async function working(promise) {
  setBusy(1);
  try {
    return await promise;
  } finally {
    setBusy(-1);
  }
}

// ---- opening files ----------------------------------------------------------------------------

function isVolume(files) {
  const name = files[0].name.toLowerCase();
  return files.length > 1 || VOLUME_SUFFIXES.some((s) => name.endsWith(s));
}

function windowValue() {
  const preset = $("window").value;
  if (preset !== "custom") return preset;
  return `${Number($("level").value)},${Number($("width").value)}`;
}

function showWindow(record) {
  let level = 127.5;
  let width = 255;
  if (record?.level !== undefined) [level, width] = [record.level, record.width];
  else if (record?.low !== undefined) [level, width] = [(record.low + record.high) / 2, record.high - record.low];
  $("level").value = +level.toFixed(2);
  $("width").value = +width.toFixed(2);
  const fixed = record?.method === "none" && state.doc?.kind === "volume";
  for (const id of ["window", "level", "width"]) $(id).disabled = fixed;
}

// Open a document: `load(window)` asks the server for it (a volume's or an image session's
// description, with its `name`). On failure the open document and its objects stay as they were.
// keep: a window change of the same document, which keeps the objects and reruns their prompts.
async function openDoc(label, load, keep = false) {
  status(`Opening ${label}…`);
  try {
    const info = await working(load(windowValue()));
    const volume = info.volume_id !== undefined;
    const doc = volume
      ? { kind: "volume", id: info.volume_id, name: info.name, width: info.width, height: info.height, depth: info.depth }
      : { kind: "image", id: info.session_id, name: info.name, width: info.width, height: info.height, depth: 1 };
    Object.assign(doc, { label, load, window: info.window });
    const first = volume ? Math.floor(doc.depth / 2) : 0;
    const picture = await working(fetchSlice(doc, first));
    closeDoc();
    state.doc = doc;
    state.slices = new Map([[first, picture]]);
    state.z = keep ? Math.min(state.z, doc.depth - 1) : first;
    if (!keep) objects.reset();
    state.masks = new Map();
    state.answers = new Map();
    view.setSize(doc.width, doc.height);
    view.image = picture;
    showWindow(info.window);
    setupSlices();
    $("hint").hidden = true;
    $("new-object").disabled = false;
    const embedded = info.encode_ms === undefined ? "" : `, embedded in ${info.encode_ms} ms`;
    const how = volume ? `${doc.width}x${doc.height}x${doc.depth} volume` : `${doc.width}x${doc.height}${embedded}`;
    status(`${label}: ${how}. Draw a box.`);
    if (keep) changed();
    else refreshControls();
    showSlice(state.z);
  } catch (err) {
    status(`Could not open ${label}: ${err.message}`, true);
    if (keep) showSlice(state.z); // undo a window preview: the open document stays as it was
  }
}

// Upload files as a new document (a photo's session, or a volume).
function openFiles(files, folder = null) {
  files = Array.from(files);
  if (!files.length) return;
  const label = folder || (files.length > 1 ? `${files.length} files` : files[0].name);
  const volume = isVolume(files);
  return openDoc(label, async (window) => {
    const form = new FormData();
    for (const f of files) form.append(volume ? "files" : "image", f, f.name);
    form.append("window", window);
    if (folder) form.append("name", folder);
    const info = await api(volume ? "/v1/volumes" : "/v1/sessions", { method: "POST", body: form });
    return volume ? info : { ...info, name: baseName(files[0].name) };
  });
}

function baseName(name) {
  return name.replace(/\.(nii\.gz|[^.]+)$/i, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "image";
}

function closeDoc() {
  const doc = state.doc;
  if (!doc) return;
  const path = doc.kind === "volume" ? `/v1/volumes/${doc.id}` : `/v1/sessions/${doc.id}`;
  fetch(path, { method: "DELETE", keepalive: true }).catch(() => {});
}

async function fetchSlice(doc, z) {
  const url = doc.kind === "volume" ? `/v1/volumes/${doc.id}/slices/${z}` : `/v1/sessions/${doc.id}/image`;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`slice ${z}: ${response.status}`);
  return displayCopy(await response.blob(), doc.width, doc.height);
}

// ---- slices -------------------------------------------------------------------------------------

function setupSlices() {
  const doc = state.doc;
  const volume = doc.kind === "volume";
  $("slicebar").hidden = !volume;
  $("zhalf-label").hidden = !volume;
  $("slice").max = String(doc.depth - 1);
  if (volume) pollProgress(doc);
}

async function pollProgress(doc) {
  while (state.doc === doc) {
    let info;
    try {
      info = await api(`/v1/volumes/${doc.id}`);
    } catch {
      return;
    }
    $("embed-progress").max = info.depth;
    $("embed-progress").value = info.embedded;
    $("embed-label").textContent = info.embedded < info.depth ? `embedding ${info.embedded}/${info.depth}` : "all slices embedded";
    if (info.embedded >= info.depth) return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function showSlice(z) {
  const doc = state.doc;
  if (!doc) return;
  z = Math.min(Math.max(Math.round(z), 0), doc.depth - 1);
  state.z = z;
  $("slice").value = String(z);
  $("slice-label").textContent = `${z + 1} / ${doc.depth}`;
  describeCanvas();
  if (!state.slices.has(z)) {
    const picture = fetchSlice(doc, z);
    state.slices.set(z, picture);
    try {
      state.slices.set(z, await picture);
    } catch (err) {
      state.slices.delete(z);
      status(err.message, true);
      return;
    }
    for (const near of [z + 1, z - 1]) {
      if (near >= 0 && near < doc.depth && !state.slices.has(near)) {
        const ahead = fetchSlice(doc, near);
        state.slices.set(near, ahead);
        ahead.then((p) => state.slices.set(near, p)).catch(() => state.slices.delete(near));
      }
    }
  }
  if (state.doc !== doc || state.z !== z) return;
  const picture = state.slices.get(z);
  if (picture instanceof Promise) return;
  view.image = picture;
  rebuildOverlay();
}

function describeCanvas() {
  const doc = state.doc;
  const where = doc.kind === "volume" ? `, slice ${state.z + 1} of ${doc.depth}` : "";
  $("view").setAttribute("aria-label", `${doc.name}: ${doc.width} by ${doc.height} pixels${where}, ${objects.list.length} objects`);
}

// ---- prompts -> masks ---------------------------------------------------------------------------

// The requests that make one object's masks: [{path, body}], applied in order (later slices win).
function requestsFor(object) {
  const doc = state.doc;
  const clicks = object.clicks;
  if (!object.box && !clicks.length) return [];
  if (doc.kind === "image") {
    const body = clicks.length
      ? { boxes: object.box ? [object.box] : [], points: clicks.map((c) => [c.x, c.y]), point_labels: clicks.map((c) => c.label) }
      : { boxes: [object.box] };
    return [{ path: `/v1/sessions/${doc.id}/segment`, body }];
  }
  // a volume: one request with the box and every click, oldest first; the server reruns the
  // interactive 3D rule and answers every slice the object covers (clicks change their neighbours too)
  const body = {};
  if (object.box) {
    const [x0, y0, x1, y1] = object.box;
    body.box3d = [Math.round(x0), Math.round(y0), object.zRange[0],
      Math.min(doc.width - 1, Math.round(x1)), Math.min(doc.height - 1, Math.round(y1)), object.zRange[1]];
  }
  if (clicks.length) {
    body.points = clicks.map((c) => [c.x, c.y, c.z]);
    body.point_labels = clicks.map((c) => c.label);
  }
  return [{ path: `/v1/volumes/${doc.id}/segment`, body }];
}

function answer(request) {
  const key = `${request.path} ${JSON.stringify(request.body)}`;
  if (!state.answers.has(key)) {
    const promise = working(api(request.path, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(request.body),
    }).then((body) => { state.serverMs += body.decode_ms; return decodeAnswer(body); }));
    promise.catch(() => state.answers.delete(key));
    state.answers.set(key, promise);
  }
  return state.answers.get(key);
}

async function decodeAnswer(body) {
  const slices = body.slices || body.masks.map((m) => ({ z: 0, png: m.png }));
  const out = new Map();
  for (const s of slices) out.set(s.z, await decodeMask(s.png, body.width, body.height));
  return out;
}

async function decodeMask(png, width, height) {
  const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i++) mask[i] = data[4 * i] > 127 ? 1 : 0;
  return mask;
}

// Prompts changed (an action, undo or redo): fetch what is not cached, then show the new masks.
async function changed() {
  refreshControls();
  if (!state.doc) return;
  const generation = ++state.generation;
  const doc = state.doc;
  try {
    const results = await Promise.all(objects.list.map(async (o) => {
      const parts = await Promise.all(requestsFor(o).map(answer));
      const merged = new Map();
      for (const part of parts) for (const [z, m] of part) merged.set(z, m);
      return [o.id, merged];
    }));
    if (generation !== state.generation || doc !== state.doc) return;
    state.masks = new Map(results);
    rebuildOverlay();
    refreshControls();
    const area = results.reduce((s, [, m]) => s + [...m.values()].reduce((t, v) => t + v.reduce((a, b) => a + b, 0), 0), 0);
    status(`${objects.list.length} object(s), ${area} mask pixels.`);
  } catch (err) {
    if (generation === state.generation) status(`Segmentation failed: ${err.message}`, true);
  }
}

function rebuildOverlay() {
  const doc = state.doc;
  if (!doc || !(view.image && !(view.image instanceof Promise))) return;
  view.overlay = overlayCanvas(objects.list, (id) => state.masks.get(id), state.z, doc.width, doc.height,
    view.image.width, view.image.height, Number($("opacity").value));
  view.request();
}

function hasMask() {
  for (const m of state.masks.values()) for (const s of m.values()) if (s.some((v) => v)) return true;
  return false;
}

// ---- drawing markers ----------------------------------------------------------------------------

view.decorate = (ctx, v) => {
  const doc = state.doc;
  if (!doc) return;
  for (const o of objects.list) {
    if (!o.visible) continue;
    const rgb = `rgb(${o.color.join(",")})`;
    const selected = o.id === objects.selected;
    if (o.box && (doc.kind === "image" || (state.z >= o.zRange[0] && state.z <= o.zRange[1]))) {
      const [x0, y0] = v.toScreen([o.box[0], o.box[1]]);
      const [x1, y1] = v.toScreen([o.box[2], o.box[3]]);
      ctx.setLineDash(doc.kind === "volume" && state.z !== o.boxZ ? [6, 4] : []);
      ctx.lineWidth = selected ? 3 : 1.5;
      ctx.strokeStyle = rgb;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.setLineDash([]);
    }
    for (const c of o.clicks) {
      if (doc.kind === "volume" && c.z !== state.z) continue;
      const [x, y] = v.toScreen([c.x, c.y]);
      ctx.beginPath();
      ctx.arc(x, y, selected ? 6 : 4.5, 0, 2 * Math.PI);
      ctx.fillStyle = c.label ? "#2ecc40" : "#ff4136";
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = rgb;
      ctx.stroke();
    }
  }
  if (state.drag?.box) {
    const [x0, y0] = v.toScreen(state.drag.box.slice(0, 2));
    const [x1, y1] = v.toScreen(state.drag.box.slice(2));
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ffd400";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
};

function framed(time) {
  if (state.pendingMove !== null) {
    state.moves.push(performance.now() - state.pendingMove);
    if (state.moves.length > 500) state.moves.shift();
    state.pendingMove = null;
  }
  const pending = state.pendingLatency;
  if (pending && pending.generation <= state.generation && !state.busy && view.overlay) {
    state.latencies.push({ kind: pending.kind, ms: performance.now() - pending.start, model_ms: state.serverMs });
    state.pendingLatency = null;
  }
}

// ---- mouse ----------------------------------------------------------------------------------------

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

function clampPoint([x, y]) {
  return [Math.min(Math.max(x, 0), state.doc.width), Math.min(Math.max(y, 0), state.doc.height)];
}

function orderedBox(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

const canvas = $("view");
canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("pointerdown", (event) => {
  if (!state.doc) return;
  canvas.focus();
  const at = view.local(event);
  canvas.setPointerCapture(event.pointerId);
  if (event.button === 1 || (event.button === 0 && event.shiftKey)) {
    state.drag = { pan: at };
  } else if (event.button === 2) {
    if (!$("level").disabled) state.windowDrag = { at, level: Number($("level").value), width: Number($("width").value) };
  } else if (event.button === 0 && !state.busy) {
    const p = clampPoint(view.toImage(at));
    if (tool() === "box") state.drag = { start: p, box: [...p, ...p] };
    else click(p, tool() === "object" ? 1 : 0, event.timeStamp);
  }
});
canvas.addEventListener("pointermove", (event) => {
  const at = view.local(event);
  if (state.drag?.pan) {
    view.pan(at[0] - state.drag.pan[0], at[1] - state.drag.pan[1]);
    state.drag.pan = at;
  } else if (state.drag?.start) {
    state.drag.box = orderedBox(state.drag.start, clampPoint(view.toImage(at)));
    view.request();
  } else if (state.windowDrag) {
    const w = state.windowDrag;
    $("width").value = +Math.max(1, w.width * Math.exp((at[0] - w.at[0]) / 200)).toFixed(2);
    $("level").value = +(w.level - ((at[1] - w.at[1]) * w.width) / 400).toFixed(2);
    previewWindow();
    return;
  } else {
    return;
  }
  if (state.pendingMove === null) state.pendingMove = event.timeStamp;
});
canvas.addEventListener("pointerup", (event) => {
  if (state.windowDrag) {
    const moved = Number($("level").value) !== state.windowDrag.level || Number($("width").value) !== state.windowDrag.width;
    state.windowDrag = null;
    if (moved) applyWindow("custom");
    else showSlice(state.z);
    return;
  }
  const drag = state.drag;
  state.drag = null;
  if (!drag?.start) return;
  const box = drag.box.map((v) => Math.round(v));
  if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) addBox(box, event.timeStamp);
  view.request();
});
canvas.addEventListener("wheel", (event) => {
  if (!state.doc) return;
  event.preventDefault();
  if (state.doc.kind === "volume" && !event.ctrlKey && !event.metaKey) {
    showSlice(state.z + (event.deltaY > 0 ? 1 : -1));
  } else {
    const [x, y] = view.local(event);
    view.zoomAt(Math.exp(-event.deltaY / 300), x, y);
  }
}, { passive: false });

function expectMask(kind, start) {
  state.pendingLatency = { kind, start, generation: state.generation + 1 };
  state.serverMs = 0;
}

function addBox(box, start) {
  const doc = state.doc;
  const k = Math.max(0, Math.round(Number($("zhalf").value) || 0));
  expectMask("box", start);
  objects.act((o) => {
    let target = o.current;
    if (!target || target.box) target = o.add(); // a box starts an object, unless the selected one has none
    target.box = box;
    target.boxZ = state.z;
    target.zRange = [Math.max(0, state.z - k), Math.min(doc.depth - 1, state.z + k)];
  });
}

function click(point, label, start) {
  const current = objects.current;
  if (state.boxOnly && !current?.box) {
    status("This model was trained on boxes only: clicks need a box. Draw a box first.", true);
    return;
  }
  expectMask("click", start);
  objects.act((o) => {
    const target = o.current || o.add(); // clicks refine the selected object, never another's box
    const [x, y] = [Math.min(Math.round(point[0]), state.doc.width - 1), Math.min(Math.round(point[1]), state.doc.height - 1)];
    target.clicks.push({ x, y, label, z: state.z }); // on a pixel: x == width is past the last one
  });
}

// ---- window -----------------------------------------------------------------------------------------

// While the right button drags, the shown 8-bit slice is remapped from the old window to the new one
// (once per frame); the file is read again with the new window on release.
function previewWindow() {
  if (state.previewing) return;
  state.previewing = true;
  requestAnimationFrame(() => {
    state.previewing = false;
    const drag = state.windowDrag;
    const picture = state.slices.get(state.z);
    if (!drag || !picture || picture instanceof Promise) return;
    const [l0, w0] = [drag.level, drag.width];
    const [l1, w1] = [Number($("level").value), Number($("width").value)];
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = ((l0 - w0 / 2 + (v * w0) / 255 - (l1 - w1 / 2)) / w1) * 255;
    const copy = new OffscreenCanvas(picture.width, picture.height);
    const ctx = copy.getContext("2d");
    ctx.drawImage(picture, 0, 0);
    const pixels = ctx.getImageData(0, 0, copy.width, copy.height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      data[i] = lut[data[i]];
      data[i + 1] = lut[data[i + 1]];
      data[i + 2] = lut[data[i + 2]];
    }
    ctx.putImageData(pixels, 0, 0);
    view.image = copy;
    view.request();
  });
}

function applyWindow(preset) {
  $("window").value = preset;
  const doc = state.doc;
  if (doc) openDoc(doc.label, doc.load, true); // new pixels, new embedding; the prompts are kept and rerun
}

$("window").addEventListener("change", () => applyWindow($("window").value));
for (const id of ["level", "width"]) $(id).addEventListener("change", () => applyWindow("custom"));

// ---- object list and controls -----------------------------------------------------------------------

function refreshControls() {
  $("undo").disabled = !objects.past.length;
  $("redo").disabled = !objects.future.length;
  $("download").disabled = !state.doc || !hasMask();
  $("save-pacs").disabled = state.doc?.kind !== "volume" || !hasMask();
  const list = $("objects");
  list.replaceChildren(...objects.list.map((o) => {
    const item = document.createElement("li");
    item.className = o.id === objects.selected ? "selected" : "";
    item.dataset.id = String(o.id);
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "swatch";
    pick.style.background = `rgb(${o.color.join(",")})`;
    pick.title = "select";
    pick.setAttribute("aria-label", `select ${o.name}`);
    pick.setAttribute("aria-pressed", String(o.id === objects.selected));
    pick.addEventListener("click", () => select(o.id));
    const name = document.createElement("input");
    name.value = o.name;
    name.setAttribute("aria-label", "object name");
    name.addEventListener("focus", () => select(o.id));
    name.addEventListener("change", () => objects.act((s) => { s.list.find((x) => x.id === o.id).name = name.value; }));
    const hide = document.createElement("button");
    hide.type = "button";
    hide.textContent = o.visible ? "Hide" : "Show";
    hide.addEventListener("click", () => toggleHidden(o.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `delete ${o.name}`);
    remove.addEventListener("click", () => objects.act((s) => s.remove(o.id)));
    item.append(pick, name, hide, remove);
    if (state.doc?.kind === "volume" && o.box) item.append(zRangeControl(o));
    return item;
  }));
  $("objects-hint").hidden = objects.list.length > 0;
  if (state.doc) describeCanvas();
}

// The slices a volume object's box covers (shown 1-based), editable: the 3D box runs again over them.
function zRangeControl(object) {
  const row = document.createElement("div");
  row.className = "zrange";
  row.append("slices ");
  object.zRange.forEach((value, end) => {
    const input = document.createElement("input");
    input.type = "number";
    input.min = "1";
    input.max = String(state.doc.depth);
    input.value = String(value + 1);
    input.setAttribute("aria-label", `${object.name}: ${end ? "last" : "first"} slice`);
    input.addEventListener("change", () => input.value !== "" && objects.act((s) => {
      const o = s.list.find((x) => x.id === object.id);
      const z = Math.min(Math.max(Math.round(Number(input.value)) - 1, 0), state.doc.depth - 1);
      o.zRange = end ? [Math.min(o.zRange[0], z), Math.max(z, o.boxZ)] : [Math.min(z, o.boxZ), Math.max(o.zRange[1], z)];
    }));
    row.append(input, end ? "" : " – ");
  });
  return row;
}

function select(id) {
  if (objects.selected === id) return;
  objects.selected = id; // not an action: undo restores prompts, not which row was highlighted
  refreshControls();
  view.request();
}

function toggleHidden(id) {
  objects.act((s) => { const o = s.list.find((x) => x.id === id); o.visible = !o.visible; });
}

$("new-object").addEventListener("click", () => objects.act((s) => s.add()));
$("undo").addEventListener("click", () => objects.undo());
$("redo").addEventListener("click", () => objects.redo());
$("zoom-in").addEventListener("click", () => zoomCentre(1.25));
$("zoom-out").addEventListener("click", () => zoomCentre(0.8));
$("fit").addEventListener("click", () => view.fit());
$("opacity").addEventListener("input", rebuildOverlay);
$("slice").addEventListener("input", () => showSlice(Number($("slice").value)));
$("download").addEventListener("click", download);

function zoomCentre(factor) {
  const [w, h] = view.cssSize();
  view.zoomAt(factor, w / 2, h / 2);
}

// ---- download: a label map, one label per object (1, 2, ... in list order) -------------------------

async function download() {
  const doc = state.doc;
  const size = doc.width * doc.height;
  const masksOf = (id) => state.masks.get(id);
  let blob;
  let name;
  if (doc.kind === "image") {
    const labels = labelSlice(objects.list, masksOf, 0, size);
    const canvas = new OffscreenCanvas(doc.width, doc.height);
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(doc.width, doc.height);
    for (let p = 0; p < size; p++) pixels.data.set([labels[p], labels[p], labels[p], 255], 4 * p);
    ctx.putImageData(pixels, 0, 0);
    blob = await canvas.convertToBlob({ type: "image/png" });
    name = `${doc.name}_labels.png`;
  } else {
    const response = await working(fetch(`/v1/volumes/${doc.id}/nifti`, { method: "POST", body: (await volumeLabels()).body }));
    if (!response.ok) {
      status(`Download failed: ${(await response.json()).error}`, true);
      return;
    }
    blob = await response.blob();
    name = `${doc.name}_mask.nii.gz`;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  status(`Downloaded ${name}.`);
}

// The open volume's label map as the server takes it (gzip of D*H*W uint8, C order), with the names
// of its labels 1..N (N: the last object with a mask, which later objects never cover).
async function volumeLabels() {
  const doc = state.doc;
  const size = doc.width * doc.height;
  const masksOf = (id) => state.masks.get(id);
  const volume = new Uint8Array(size * doc.depth);
  for (let z = 0; z < doc.depth; z++) volume.set(labelSlice(objects.list, masksOf, z, size), z * size);
  const gzipped = new Blob([volume]).stream().pipeThrough(new CompressionStream("gzip"));
  const filled = objects.list.map((o) => [...(masksOf(o.id)?.values() || [])].some((m) => m.some((v) => v)));
  const names = objects.list.slice(0, filled.lastIndexOf(true) + 1).map((o) => o.name);
  return { volume: doc.id, body: await new Response(gzipped).blob(), names };
}

// ---- keyboard, files, theme, help -----------------------------------------------------------------

const TOOLS = { b: "box", o: "object", g: "background" };
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target.matches?.("input[type=text], input:not([type]), input[type=number], select");
  const ownArrows = target.matches?.("input[type=range], input[type=radio]") && event.key.startsWith("Arrow");
  if (typing || ownArrows || ($("help").open && event.key !== "Escape")) return;
  const key = event.key.toLowerCase();
  const ctrl = event.ctrlKey || event.metaKey;
  let handled = true;
  if (ctrl && key === "z") event.shiftKey ? objects.redo() : objects.undo();
  else if (ctrl && key === "y") objects.redo();
  else if (ctrl) handled = false;
  else if (TOOLS[key]) document.querySelector(`input[name=tool][value=${TOOLS[key]}]`).checked = true;
  else if (event.key === "?") $("help").showModal();
  else if (event.key === "Escape" && $("help").open) $("help").close();
  else if (event.key === "Escape") { state.drag = null; view.request(); }
  else if (!state.doc) handled = false;
  else if (["ArrowUp", "ArrowRight"].includes(event.key)) showSlice(state.z + 1);
  else if (["ArrowDown", "ArrowLeft"].includes(event.key)) showSlice(state.z - 1);
  else if (event.key === "PageUp") showSlice(state.z + 10);
  else if (event.key === "PageDown") showSlice(state.z - 10);
  else if (key === "n") objects.act((s) => s.add());
  else if (key === "h" && objects.current) toggleHidden(objects.selected);
  else if ((event.key === "Delete" || event.key === "Backspace") && objects.current) objects.act((s) => s.remove(s.selected));
  else if (key === "f" || key === "0") view.fit();
  else if (key === "+" || key === "=") zoomCentre(1.25);
  else if (key === "-") zoomCentre(0.8);
  else handled = false;
  if (handled) event.preventDefault();
});

$("file").addEventListener("change", (event) => {
  const files = Array.from(event.target.files);
  event.target.value = ""; // choosing the same file again is a change, and reloads it
  openFiles(files);
});
$("folder").addEventListener("change", (event) => {
  const files = Array.from(event.target.files);
  const folder = files[0]?.webkitRelativePath?.split("/")[0] || null;
  event.target.value = "";
  openFiles(files, folder);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  if (event.dataTransfer.files.length) openFiles(event.dataTransfer.files);
});
window.addEventListener("pagehide", closeDoc); // the server forgets a closed tab's session now, not at its timeout

function setTheme(dark) {
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("theme").setAttribute("aria-pressed", String(dark));
  $("theme").textContent = dark ? "Light theme" : "Dark theme";
  localStorage.setItem("kdsam-theme", dark ? "dark" : "light");
}
setTheme((localStorage.getItem("kdsam-theme") || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light")) === "dark");
$("theme").addEventListener("click", () => setTheme(document.documentElement.dataset.theme !== "dark"));
$("help-button").addEventListener("click", () => $("help").showModal());

api("/healthz").then((h) => {
  $("model").textContent = `model: ${h.model}`;
  state.boxOnly = h.prompts !== undefined && !h.prompts.includes("point");
  if (state.boxOnly) {
    $("model-note").hidden = false;
    $("model-note").textContent = "trained on boxes only: clicks need a box";
  }
  if (h.pacs) {
    setupPacs({
      api, working,
      open: (label, load) => openDoc(label, load),
      labels: () => (state.doc?.kind === "volume" && hasMask() ? volumeLabels() : null),
    });
  }
}).catch(() => status("The kdsam server does not answer.", true));

// For tests and scripts.
function maskPNG(index, z = 0) {
  const doc = state.doc;
  const mask = state.masks.get(objects.list[index]?.id)?.get(z);
  if (!mask) return null;
  const canvas = document.createElement("canvas");
  canvas.width = doc.width;
  canvas.height = doc.height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(doc.width, doc.height);
  for (let p = 0; p < mask.length; p++) { const v = mask[p] ? 255 : 0; pixels.data.set([v, v, v, 255], 4 * p); }
  ctx.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}
window.kdsam = { state, objects, view, maskPNG, requestsFor, showSlice, idle: () => state.busy === 0 };

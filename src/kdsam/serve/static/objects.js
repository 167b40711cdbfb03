// Objects and their history: each object has its own box, clicks, colour, name and visibility; every
// change goes through `act`, which keeps the state before it for undo. Masks are not history: they
// follow from the prompts (and are cached by prompt), so undo restores prompts and the masks follow.
"use strict";

const PALETTE = [
  [30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
  [0, 206, 209], [255, 140, 0], [255, 105, 180], [154, 205, 50], [100, 149, 237],
];

export class Objects {
  constructor(onChange) {
    this.onChange = onChange; // called after every change, undo and redo
    this.reset();
  }

  reset() {
    this.list = [];
    this.selected = null;
    this.past = [];
    this.future = [];
    this.nextId = 1;
  }

  snapshot() {
    return JSON.stringify({ list: this.list, selected: this.selected, nextId: this.nextId });
  }

  restore(text) {
    Object.assign(this, JSON.parse(text));
  }

  // Run `change` as one undoable action.
  act(change) {
    const before = this.snapshot();
    change(this);
    if (this.snapshot() === before) return;
    this.past.push(before);
    this.future = [];
    this.onChange();
  }

  undo() {
    return this.travel(this.past, this.future);
  }

  redo() {
    return this.travel(this.future, this.past);
  }

  // Restore the newest state of `from`, keeping the present in `to`.
  travel(from, to) {
    if (!from.length) return false;
    to.push(this.snapshot());
    this.restore(from.pop());
    this.onChange();
    return true;
  }

  get current() {
    return this.list.find((o) => o.id === this.selected) || null;
  }

  add() {
    const id = this.nextId++;
    const object = { id, name: `object ${id}`, color: PALETTE[(id - 1) % PALETTE.length], visible: true,
      box: null, boxZ: 0, zRange: null, clicks: [] };
    this.list.push(object);
    this.selected = id;
    return object;
  }

  remove(id) {
    this.list = this.list.filter((o) => o.id !== id);
    if (this.selected === id) this.selected = this.list.length ? this.list[this.list.length - 1].id : null;
  }
}

// Masks of every visible object on one slice -> RGBA at display size: a fill at `opacity` and an
// opaque outline (pixels with a neighbour of another label). Later objects are drawn over earlier ones.
export function overlayCanvas(objects, masksOf, z, width, height, displayWidth, displayHeight, opacity) {
  const canvas = document.createElement("canvas");
  canvas.width = displayWidth;
  canvas.height = displayHeight;
  const layers = objects.filter((o) => o.visible).map((o) => [o, masksOf(o.id)?.get(z)]).filter(([, m]) => m);
  if (!layers.length) return canvas;
  const n = displayWidth * displayHeight;
  const labels = new Uint8Array(n);
  const colX = new Uint32Array(displayWidth);
  for (let i = 0; i < displayWidth; i++) colX[i] = Math.min(width - 1, Math.floor(((i + 0.5) * width) / displayWidth));
  layers.forEach(([, mask], k) => {
    for (let j = 0; j < displayHeight; j++) {
      const row = Math.min(height - 1, Math.floor(((j + 0.5) * height) / displayHeight)) * width;
      const out = j * displayWidth;
      for (let i = 0; i < displayWidth; i++) if (mask[row + colX[i]]) labels[out + i] = k + 1;
    }
  });
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(displayWidth, displayHeight);
  const data = pixels.data;
  const fill = Math.round(opacity * 255);
  for (let p = 0; p < n; p++) {
    const label = labels[p];
    if (!label) continue;
    const i = p % displayWidth;
    const edge = i === 0 || i === displayWidth - 1 || p < displayWidth || p >= n - displayWidth ||
      labels[p - 1] !== label || labels[p + 1] !== label ||
      labels[p - displayWidth] !== label || labels[p + displayWidth] !== label;
    const [r, g, b] = layers[label - 1][0].color;
    data[4 * p] = r;
    data[4 * p + 1] = g;
    data[4 * p + 2] = b;
    data[4 * p + 3] = edge ? 255 : Math.max(fill, 1);
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

// One label per object (1, 2, ... in list order; later over earlier) on one slice, full size.
export function labelSlice(objects, masksOf, z, size) {
  const labels = new Uint8Array(size);
  objects.forEach((o, k) => {
    const mask = masksOf(o.id)?.get(z);
    if (mask) for (let p = 0; p < size; p++) if (mask[p]) labels[p] = k + 1;
  });
  return labels;
}

// The viewport: one canvas that shows an image (or a volume's slice) fitted to the window, with zoom and
// pan, sharp pixels when magnified, an overlay of masks on top, and markers drawn in screen pixels so
// they keep their size at any zoom. Redraws are coalesced to one per display frame.
"use strict";

export const MAX_DISPLAY_SIDE = 2048; // larger images are shown downscaled to this (masks keep full size)

export class Viewport {
  constructor(canvas, onDrawn) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onDrawn = onDrawn; // called after each frame, with the frame's timestamp
    this.width = 0; // image pixels
    this.height = 0;
    this.scale = 1; // CSS pixels per image pixel
    this.offset = [0, 0]; // CSS pixels of the image's top-left corner
    this.image = null; // what is drawn: a canvas or ImageBitmap at display resolution
    this.overlay = null; // masks at display resolution
    this.decorate = null; // (ctx, view) => draws markers in CSS pixels
    this.pending = false;
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
  }

  setSize(width, height) {
    this.width = width;
    this.height = height;
    this.fit();
  }

  resize() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(box.width * ratio));
    this.canvas.height = Math.max(1, Math.round(box.height * ratio));
    this.canvas.style.width = `${box.width}px`;
    this.canvas.style.height = `${box.height}px`;
    if (this.fitted) this.fit();
    else this.request();
  }

  cssSize() {
    const ratio = window.devicePixelRatio || 1;
    return [this.canvas.width / ratio, this.canvas.height / ratio];
  }

  fit() {
    if (!this.width) return;
    const [w, h] = this.cssSize();
    this.scale = Math.min(w / this.width, h / this.height) * 0.98;
    this.offset = [(w - this.width * this.scale) / 2, (h - this.height * this.scale) / 2];
    this.fitted = true;
    this.request();
  }

  zoomAt(factor, cx, cy) {
    const next = Math.min(Math.max(this.scale * factor, 0.02), 64);
    const real = next / this.scale;
    this.offset = [cx - (cx - this.offset[0]) * real, cy - (cy - this.offset[1]) * real];
    this.scale = next;
    this.fitted = false;
    this.request();
  }

  pan(dx, dy) {
    this.offset = [this.offset[0] + dx, this.offset[1] + dy];
    this.fitted = false;
    this.request();
  }

  // CSS pixel position inside the canvas of a mouse event
  local(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  toImage([x, y]) {
    return [(x - this.offset[0]) / this.scale, (y - this.offset[1]) / this.scale];
  }

  toScreen([x, y]) {
    return [this.offset[0] + x * this.scale, this.offset[1] + y * this.scale];
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame((time) => {
      this.pending = false;
      this.draw();
      if (this.onDrawn) this.onDrawn(time);
    });
  }

  draw() {
    const ctx = this.ctx;
    const ratio = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const [x, y] = this.offset;
    const w = this.width * this.scale;
    const h = this.height * this.scale;
    // magnified: each image pixel a sharp square; minified: smooth, so thin structures do not vanish
    ctx.imageSmoothingEnabled = this.scale * ratio < this.image.width / this.width;
    ctx.drawImage(this.image, x, y, w, h);
    ctx.imageSmoothingEnabled = false;
    if (this.overlay) ctx.drawImage(this.overlay, x, y, w, h);
    if (this.decorate) this.decorate(ctx, this);
  }
}

// An image's display copy: the source scaled down so its longer side is at most MAX_DISPLAY_SIDE.
export async function displayCopy(blob, width, height) {
  const factor = Math.min(1, MAX_DISPLAY_SIDE / Math.max(width, height));
  if (factor === 1) return createImageBitmap(blob);
  return createImageBitmap(blob, {
    resizeWidth: Math.max(1, Math.round(width * factor)),
    resizeHeight: Math.max(1, Math.round(height * factor)),
    resizeQuality: "high",
  });
}

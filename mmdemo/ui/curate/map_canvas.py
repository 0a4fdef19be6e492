"""The embedding map's browser side: a ``gr.HTML`` drawing points on a ``<canvas>``.

Gradio's ScatterPlot cannot select points, so this small component does it itself. Its value
is the payload :func:`mmdemo.ui.curate.map.map_payload` builds (``ids``, ``x``, ``y`` in the unit
square, a colour index ``c`` per point, a ``legend`` and the ``selected`` ids) as a JSON string
(a string passes through Gradio's frontend quickly; a dict of 10,000 points took seconds); a new
value redraws. In the browser:

- hovering a point shows its thumbnail and caption, fetched through the component's server
  function ``pair_card(pair_id)``; the caption is set as text (``textContent``), never as HTML;
- a click on a point fires ``map_click`` with ``{"pair_id": id}`` (Curate opens the pair);
- dragging draws a box (or a lasso, with the Lasso tool) and fires ``map_select`` with
  ``{"pair_ids": [...]}``; Shift adds to the selection; a click on empty space clears it.

The overlay canvas keeps the drawn points' positions on ``canvas.mmPoints()`` (``[[id, x, y],
...]`` in CSS pixels) and ``canvas.mmRedraw()`` (lay out and draw again, returns the draw's
milliseconds); the points canvas has ``data-points``, ``data-collection``, the last draw's time
in ``data-draw-ms`` and the last new value's (parse, lay out, draw) in ``data-load-ms``: for
tests and the timing in ``bench/bench_map.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

MAP_HTML = """
<div class="mm-map">
  <div class="mm-map-bar">
    <button type="button" class="mm-map-tool on" data-mode="box">Box</button>
    <button type="button" class="mm-map-tool" data-mode="lasso">Lasso</button>
    <button type="button" class="mm-map-clear">Clear selection</button>
    <span class="mm-map-legend"></span>
  </div>
  <div class="mm-map-stage">
    <canvas class="mm-map-points"></canvas>
    <canvas class="mm-map-overlay"></canvas>
    <div class="mm-map-empty"></div>
    <div class="mm-map-tip" hidden>
      <img class="mm-map-thumb" alt="">
      <div class="mm-map-caption"></div>
      <div class="mm-map-meta"></div>
    </div>
  </div>
</div>
"""

MAP_CSS = """
.mm-map { display: flex; flex-direction: column; gap: 6px; }
.mm-map-bar { display: flex; align-items: center; gap: 6px; flex-wrap: wrap; font-size: 13px; }
.mm-map-bar button { padding: 2px 10px; border: 1px solid var(--border-color-primary);
  border-radius: 6px; background: var(--background-fill-secondary); cursor: pointer; }
.mm-map-bar button.on { background: var(--color-accent-soft); border-color: var(--color-accent); }
.mm-map-legend { display: flex; gap: 12px; margin-left: auto; flex-wrap: wrap; }
.mm-map-key { display: inline-flex; align-items: center; gap: 4px; }
.mm-map-swatch { width: 10px; height: 10px; border-radius: 50%; display: inline-block; }
.mm-map-stage { position: relative; height: 520px; border: 1px solid var(--border-color-primary);
  border-radius: 8px; overflow: hidden; background: var(--background-fill-primary); }
.mm-map-stage canvas { position: absolute; left: 0; top: 0; }
.mm-map-overlay { cursor: crosshair; }
.mm-map-empty { position: absolute; inset: 0; display: flex; align-items: center;
  justify-content: center; color: var(--body-text-color-subdued); pointer-events: none; }
.mm-map-tip { position: absolute; z-index: 5; max-width: 240px; padding: 6px;
  pointer-events: none; background: var(--background-fill-primary);
  border: 1px solid var(--border-color-primary); border-radius: 6px;
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.2); font-size: 12px; }
.mm-map-thumb { display: block; max-width: 120px; max-height: 120px; margin-bottom: 4px; }
.mm-map-caption { white-space: pre-wrap; word-break: break-word; }
.mm-map-meta { color: var(--body-text-color-subdued); margin-top: 2px; }
"""

# Runs once when the component mounts (`element`, `trigger`, `props`, `server`, `watch` come
# from Gradio). No template syntax (dollar-brace, backticks) may appear in it or in MAP_HTML.
MAP_JS = """
const stage = element.querySelector('.mm-map-stage');
const base = element.querySelector('.mm-map-points');
const over = element.querySelector('.mm-map-overlay');
const tip = element.querySelector('.mm-map-tip');
const tipImg = element.querySelector('.mm-map-thumb');
const tipCaption = element.querySelector('.mm-map-caption');
const tipMeta = element.querySelector('.mm-map-meta');
const legend = element.querySelector('.mm-map-legend');
const empty = element.querySelector('.mm-map-empty');
const PAD = 16, CELL = 16, HIT = 7;
let R = 3;
let data = null, px = new Float32Array(0), py = new Float32Array(0);
let W = 1, H = 1, dpr = 1, cols = 1, rows = 1, cellStart = null, cellItems = null;
let selected = new Set(), mode = 'box', hover = -1, drag = null;
let cards = new Map();

function size() {
  const rect = stage.getBoundingClientRect();
  W = Math.max(1, Math.round(rect.width));
  H = Math.max(1, Math.round(rect.height));
  dpr = window.devicePixelRatio || 1;
  for (const canvas of [base, over]) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.width = W + 'px';
    canvas.style.height = H + 'px';
  }
}

function place() {
  const n = data ? data.ids.length : 0;
  px = new Float32Array(n);
  py = new Float32Array(n);
  // Fit the points' bounding box into the stage, one scale for both axes (distances keep
  // their ratios), centred.
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, data.x[i]); x1 = Math.max(x1, data.x[i]);
    y0 = Math.min(y0, data.y[i]); y1 = Math.max(y1, data.y[i]);
  }
  const spanX = Math.max(x1 - x0, 1e-9), spanY = Math.max(y1 - y0, 1e-9);
  const scale = Math.max(1e-9, Math.min((W - 2 * PAD) / spanX, (H - 2 * PAD) / spanY));
  const ox = (W - spanX * scale) / 2, oy = (H - spanY * scale) / 2;
  for (let i = 0; i < n; i++) {
    px[i] = ox + (data.x[i] - x0) * scale;
    py[i] = oy + (y1 - data.y[i]) * scale;
  }
  R = n > 3000 ? 2 : n > 500 ? 2.5 : 3.5;
  cols = Math.ceil(W / CELL) + 1;
  rows = Math.ceil(H / CELL) + 1;
  const cellOf = new Int32Array(n), counts = new Int32Array(cols * rows + 1);
  for (let i = 0; i < n; i++) {
    const cx = Math.min(cols - 1, Math.max(0, Math.floor(px[i] / CELL)));
    const cy = Math.min(rows - 1, Math.max(0, Math.floor(py[i] / CELL)));
    cellOf[i] = cy * cols + cx;
    counts[cellOf[i] + 1]++;
  }
  for (let k = 1; k < counts.length; k++) counts[k] += counts[k - 1];
  cellStart = counts.slice();
  cellItems = new Int32Array(n);
  const fill = counts.slice();
  for (let i = 0; i < n; i++) cellItems[fill[cellOf[i]]++] = i;
}

function draw() {
  const t0 = performance.now();
  const ctx = base.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const n = data ? data.ids.length : 0;
  empty.textContent = n ? '' : (data && data.empty) || '';
  if (n) {
    const keys = data.legend.map((entry, k) => k);
    keys.sort((a, b) => data.legend[b].count - data.legend[a].count);
    for (const k of keys) {
      ctx.fillStyle = data.legend[k].color;
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        if (data.c[i] === k) ctx.rect(px[i] - R, py[i] - R, 2 * R, 2 * R);
      }
      ctx.fill();
    }
    if (selected.size) {
      ctx.strokeStyle = '#111';
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        if (!selected.has(data.ids[i])) continue;
        ctx.rect(px[i] - R - 1.5, py[i] - R - 1.5, 2 * R + 3, 2 * R + 3);
      }
      ctx.stroke();
    }
  }
  const ms = performance.now() - t0;
  base.dataset.drawMs = ms.toFixed(1);
  base.dataset.points = String(n);
  base.dataset.collection = (data && data.collection) || '';
  return ms;
}

function showLegend() {
  legend.replaceChildren();
  if (!data) return;
  for (const entry of data.legend) {
    const key = document.createElement('span');
    key.className = 'mm-map-key';
    const swatch = document.createElement('span');
    swatch.className = 'mm-map-swatch';
    swatch.style.background = entry.color;
    const text = document.createElement('span');
    text.textContent = entry.name + ' (' + entry.count + ')';
    key.append(swatch, text);
    legend.append(key);
  }
}

function redraw() { size(); place(); draw(); paintOverlay(); }

function load(value) {
  const t0 = performance.now();
  let parsed = value;
  if (typeof value === 'string') {
    try { parsed = value ? JSON.parse(value) : null; } catch (error) { parsed = null; }
  }
  data = parsed && parsed.ids ? parsed : null;
  selected = new Set((data && data.selected) || []);
  cards = new Map();
  hover = -1;
  tip.hidden = true;
  showLegend();
  redraw();
  base.dataset.loadMs = (performance.now() - t0).toFixed(1);
  base.dataset.loadedAt = String(performance.now());
}

function nearest(x, y) {
  if (!cellStart) return -1;
  const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
  let best = -1, bestD = HIT * HIT;
  for (let gy = cy - 1; gy <= cy + 1; gy++) {
    if (gy < 0 || gy >= rows) continue;
    for (let gx = cx - 1; gx <= cx + 1; gx++) {
      if (gx < 0 || gx >= cols) continue;
      const cell = gy * cols + gx;
      for (let j = cellStart[cell]; j < cellStart[cell + 1]; j++) {
        const i = cellItems[j], dx = px[i] - x, dy = py[i] - y, d = dx * dx + dy * dy;
        if (d <= bestD) { best = i; bestD = d; }
      }
    }
  }
  return best;
}

function paintOverlay() {
  const ctx = over.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  if (hover >= 0 && hover < px.length) {
    ctx.strokeStyle = '#111';
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(px[hover], py[hover], R + 4, 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (drag && drag.moved) {
    ctx.strokeStyle = '#333';
    ctx.fillStyle = 'rgba(80, 120, 220, 0.12)';
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    if (mode === 'box') {
      ctx.rect(Math.min(drag.x0, drag.x1), Math.min(drag.y0, drag.y1),
        Math.abs(drag.x1 - drag.x0), Math.abs(drag.y1 - drag.y0));
    } else {
      drag.path.forEach((p, k) => (k ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
      ctx.closePath();
    }
    ctx.fill();
    ctx.stroke();
    ctx.setLineDash([]);
  }
}

function inside(path, x, y) {
  let hit = false;
  for (let a = 0, b = path.length - 1; a < path.length; b = a++) {
    const [xa, ya] = path[a], [xb, yb] = path[b];
    if ((ya > y) !== (yb > y) && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) hit = !hit;
  }
  return hit;
}

function chosen() {
  const ids = [];
  const x0 = Math.min(drag.x0, drag.x1), x1 = Math.max(drag.x0, drag.x1);
  const y0 = Math.min(drag.y0, drag.y1), y1 = Math.max(drag.y0, drag.y1);
  for (let i = 0; i < px.length; i++) {
    const ok = mode === 'box'
      ? px[i] >= x0 && px[i] <= x1 && py[i] >= y0 && py[i] <= y1
      : inside(drag.path, px[i], py[i]);
    if (ok) ids.push(data.ids[i]);
  }
  return ids;
}

function select(ids, add) {
  selected = add ? new Set([...selected, ...ids]) : new Set(ids);
  draw();
  trigger('map_select', { pair_ids: Array.from(selected) });
}

function showCard(i) {
  const id = data.ids[i];
  tipCaption.textContent = '…';
  tipMeta.textContent = 'pair ' + id;
  tipImg.removeAttribute('src');
  tipImg.hidden = true;
  tip.hidden = false;
  const left = px[i] + 14 + 240 > W ? px[i] - 14 - 240 : px[i] + 14;
  tip.style.left = Math.max(4, left) + 'px';
  tip.style.top = Math.max(4, Math.min(H - 190, py[i] - 20)) + 'px';
  const fill = (card) => {
    if (hover !== i) return;
    if (!card) { tipCaption.textContent = 'This pair is gone.'; return; }
    tipCaption.textContent = card.caption;
    tipMeta.textContent = card.meta;
    if (card.thumb) { tipImg.src = card.thumb; tipImg.hidden = false; }
  };
  if (cards.has(id)) { fill(cards.get(id)); return; }
  Promise.resolve(server.pair_card(id)).then((card) => { cards.set(id, card); fill(card); },
    () => fill(null));
}

function local(event) {
  const rect = over.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}

over.addEventListener('pointerdown', (event) => {
  if (event.button !== 0 || !data) return;
  const [x, y] = local(event);
  drag = { x0: x, y0: y, x1: x, y1: y, path: [[x, y]], moved: false, add: event.shiftKey };
  over.setPointerCapture(event.pointerId);
});

over.addEventListener('pointermove', (event) => {
  if (!data) return;
  const [x, y] = local(event);
  if (drag) {
    drag.x1 = x;
    drag.y1 = y;
    drag.path.push([x, y]);
    if (Math.abs(x - drag.x0) + Math.abs(y - drag.y0) > 4) drag.moved = true;
    if (drag.moved) { hover = -1; tip.hidden = true; paintOverlay(); }
    return;
  }
  const i = nearest(x, y);
  if (i !== hover) {
    hover = i;
    if (i >= 0) showCard(i); else tip.hidden = true;
    paintOverlay();
  }
});

over.addEventListener('pointerup', (event) => {
  if (!drag) return;
  const current = drag;
  if (current.moved) {
    select(chosen(), current.add);
  } else {
    const [x, y] = local(event);
    const i = nearest(x, y);
    if (i >= 0) trigger('map_click', { pair_id: data.ids[i] });
    else if (selected.size) select([], false);
  }
  drag = null;
  paintOverlay();
});

over.addEventListener('pointerleave', () => {
  if (drag) return;
  hover = -1;
  tip.hidden = true;
  cards = new Map();
  paintOverlay();
});

element.querySelectorAll('.mm-map-tool').forEach((button) => {
  button.addEventListener('click', () => {
    mode = button.dataset.mode;
    element.querySelectorAll('.mm-map-tool').forEach((b) => b.classList.toggle('on', b === button));
  });
});
element.querySelector('.mm-map-clear').addEventListener('click', () => {
  if (selected.size) select([], false);
});

over.mmPoints = () => Array.from(px, (x, i) => [data.ids[i], x, py[i]]);
over.mmRedraw = () => { size(); place(); return draw(); };
new ResizeObserver(() => redraw()).observe(stage);
watch('value', () => load(props.value));
load(props.value);
"""


def map_component(card: Callable[[int], dict[str, Any] | None], **kwargs: Any) -> gr.HTML:
    """The map's ``gr.HTML``; ``card(pair_id)`` answers a hover (``None`` when the pair is gone)."""

    def pair_card(pair_id: int) -> dict[str, Any] | None:  # the name the browser calls
        return card(pair_id)

    return gr.HTML(
        None,
        html_template=MAP_HTML,
        css_template=MAP_CSS,
        js_on_load=MAP_JS,
        server_functions=[pair_card],
        apply_default_css=False,
        **kwargs,
    )

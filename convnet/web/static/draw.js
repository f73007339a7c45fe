/* Drawing helpers for the explorer: pixels from base64, canvases, SVG charts and the sliding
   window. No dependencies; everything the page draws is made here. */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function decodeBytes(b64) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/* A canvas of h x w pixels; fill(rgba, i) writes pixel i. */
function pixelCanvas(w, h, fill) {
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) fill(image.data, i);
  ctx.putImageData(image, 0, 0);
  return canvas;
}

/* Gray bytes (h*w) -> canvas; remap(byte) may rescale them first. */
function grayCanvas(bytes, w, h, remap) {
  return pixelCanvas(w, h, (data, i) => {
    const v = remap ? remap(bytes[i]) : bytes[i];
    data[4 * i] = data[4 * i + 1] = data[4 * i + 2] = v;
    data[4 * i + 3] = 255;
  });
}

/* Channels-first bytes (C, H, W) with C = 1 or 3 -> canvas. */
function chwCanvas(bytes, c, h, w) {
  const plane = h * w;
  return pixelCanvas(w, h, (data, i) => {
    for (let k = 0; k < 3; k++) data[4 * i + k] = bytes[(c === 3 ? k * plane : 0) + i];
    data[4 * i + 3] = 255;
  });
}

/* Channels-last bytes (H, W, 3) -> canvas. */
function hwcCanvas(bytes, h, w) {
  return pixelCanvas(w, h, (data, i) => {
    for (let k = 0; k < 3; k++) data[4 * i + k] = bytes[3 * i + k];
    data[4 * i + 3] = 255;
  });
}

/* A colour from a 0..1 value for vectors: dark blue -> yellow (viridis-like). */
function ramp(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
}

function vectorCanvas(bytes) {
  return pixelCanvas(bytes.length, 1, (data, i) => {
    const [r, g, b] = ramp(bytes[i] / 255);
    data[4 * i] = r; data[4 * i + 1] = g; data[4 * i + 2] = b; data[4 * i + 3] = 255;
  });
}

/* The window of a conv/pool layer sliding over the zero-padded input (one output position
   per step), with the output grid beside it. Large inputs are cropped to their top-left. */
function drawWindow(svg, a, step) {
  const [ah, aw] = a.axes;
  const padded = [ah.n + ah.p_before + ah.p_after, aw.n + aw.p_before + aw.p_after];
  const shownIn = [Math.min(padded[0], 20), Math.min(padded[1], 20)];
  const out = [ah.out, aw.out];
  const shownOut = [Math.min(out[0], 12), Math.min(out[1], 12)];
  const cell = Math.max(6, Math.min(14, Math.floor(260 / Math.max(shownIn[0], shownIn[1]))));
  const outCell = Math.max(6, Math.min(14, Math.floor(150 / Math.max(shownOut[0], shownOut[1]))));
  const left = 10, top = 22, gap = 60;
  const width = left + shownIn[1] * cell + gap + shownOut[1] * outCell + 20;
  const height = top + Math.max(shownIn[0] * cell, shownOut[0] * outCell) + 30;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.replaceChildren();
  // Visit only output positions whose window is fully drawn.
  const fitsRows = [], fitsCols = [];
  for (let r = 0; r < out[0]; r++) if (r * ah.s + ah.f <= shownIn[0] && r < shownOut[0]) fitsRows.push(r);
  for (let c = 0; c < out[1]; c++) if (c * aw.s + aw.f <= shownIn[1] && c < shownOut[1]) fitsCols.push(c);
  const positions = Math.max(1, fitsRows.length * fitsCols.length);
  const k = step % positions;
  const r = fitsRows.length ? fitsRows[Math.floor(k / Math.max(1, fitsCols.length))] : 0;
  const c = fitsCols.length ? fitsCols[k % Math.max(1, fitsCols.length)] : 0;
  const cropped = padded[0] > shownIn[0] || padded[1] > shownIn[1];
  svg.append(svgEl("text", {x: left, y: 14},
    `input ${ah.n}x${aw.n} + padding` + (cropped ? " (top-left corner)" : "")));
  for (let i = 0; i < shownIn[0]; i++) {
    for (let j = 0; j < shownIn[1]; j++) {
      const isPad = i < ah.p_before || i >= ah.p_before + ah.n ||
                    j < aw.p_before || j >= aw.p_before + aw.n;
      svg.append(svgEl("rect", {x: left + j * cell, y: top + i * cell, width: cell,
                                height: cell, class: isPad ? "pad" : "cell"}));
    }
  }
  svg.append(svgEl("rect", {x: left + c * aw.s * cell, y: top + r * ah.s * cell,
                            width: aw.f * cell, height: ah.f * cell, class: "window",
                            id: "window-rect"}));
  const ox = left + shownIn[1] * cell + gap;
  svg.append(svgEl("text", {x: ox, y: 14}, `output ${ah.out}x${aw.out}`));
  svg.append(svgEl("text", {x: ox - gap + 12, y: top + (shownIn[0] * cell) / 2}, "→"));
  for (let i = 0; i < shownOut[0]; i++) {
    for (let j = 0; j < shownOut[1]; j++) {
      svg.append(svgEl("rect", {x: ox + j * outCell, y: top + i * outCell, width: outCell,
                                height: outCell,
                                class: i === r && j === c ? "out-cell out-on" : "out-cell"}));
    }
  }
  return {row: r, col: c, positions};
}

/* Line chart: series = [{points: [[x, y], ...], cls: "train"|"max"|"val", dots: bool}].
   opts.log: a log10 y axis (values <= 0 are left out). */
function drawChart(svg, series, opts = {}) {
  const W = 300, H = 150, L = 42, R = 8, T = 8, B = 20;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const log = Boolean(opts.log);
  const usable = (p) => Number.isFinite(p[1]) && (!log || p[1] > 0);
  const shown = series.map((s) => ({...s, points: s.points.filter(usable)}));
  const all = shown.flatMap((s) => s.points);
  if (!all.length) {
    svg.append(svgEl("text", {x: W / 2 - 30, y: H / 2}, "waiting…"));
    return;
  }
  const ty = (v) => (log ? Math.log10(v) : v);
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => ty(p[1]))), Math.max(...all.map((p) => ty(p[1])))];
  if (opts.yMin !== undefined && !log) y0 = Math.min(y0, opts.yMin);
  if (opts.yMax !== undefined && !log) y1 = Math.max(y1, opts.yMax);
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((ty(y) - y0) / (y1 - y0)) * (H - T - B);
  svg.append(svgEl("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}));
  svg.append(svgEl("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}));
  const fmt = opts.format || ((v) => fmtNumber(v));
  svg.append(svgEl("text", {x: 2, y: T + 8}, fmt(log ? 10 ** y1 : y1)));
  svg.append(svgEl("text", {x: 2, y: H - B}, fmt(log ? 10 ** y0 : y0)));
  if (log) svg.append(svgEl("text", {x: 2, y: (T + H - B) / 2}, "log"));
  svg.append(svgEl("text", {x: L, y: H - 5}, `step ${Math.round(x0)}`));
  svg.append(svgEl("text", {x: W - R - 50, y: H - 5}, `${Math.round(x1)}`));
  for (const s of shown) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
    svg.append(svgEl("path", {d: d.join(""), class: s.cls}));
    if (s.dots) {
      for (const p of s.points) svg.append(svgEl("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 3, class: "val-dot"}));
    }
  }
}

/* Numbers for people: 3 significant digits, exponent notation when tiny or huge. */
function fmtNumber(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toString();
}

/* A colour for a value on a diverging scale: blue (-limit) .. white (0) .. red (+limit). */
function diverging(value, limit) {
  const t = limit > 0 ? Math.max(-1, Math.min(1, value / limit)) : 0;
  const [r, g, b] = t >= 0 ? [255, 255 - 155 * t, 255 - 175 * t] : [255 + 195 * t, 255 + 115 * t, 255];
  return `rgb(${Math.round(r)},${Math.round(g)},${Math.round(b)})`;
}

/* A colour scale with its range: a gradient bar between two labelled ends. */
const SCALES = {
  gray: "linear-gradient(to right, #000, #fff)",
  diverging: "linear-gradient(to right, rgb(60,140,255), #fff, rgb(255,100,80))",
  viridis: "linear-gradient(to right, rgb(68,1,84), rgb(59,82,139), rgb(33,145,140), rgb(94,201,98), rgb(253,231,37))",
  hot: "linear-gradient(to right, #000, #e00, #ff0, #fff)",
  jet: "linear-gradient(to right, #00008f, #00f, #0ff, #ff0, #f00, #800000)",
};

function scaleLegend(kind, low, high, note = "") {
  return el("div", {class: "scale", title: `colour scale: ${low} … ${high}`}, [
    el("span", {class: "end", text: String(low)}),
    el("span", {class: "bar", style: `background:${SCALES[kind] || SCALES.gray}`}),
    el("span", {class: "end", text: String(high)}),
    note ? el("span", {class: "muted", text: ` ${note}`}) : "",
  ]);
}

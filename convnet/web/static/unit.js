/* Inside one output unit: the numbers from /api/unit (convnet.viz.unit) laid out as the
   lecture writes them: per depth slice the input patch, the filter's weights and their
   products, the slice sums, + bias = the pre-activation, then the ReLU; the window where it
   sits on the zero-padded input; the receptive field on the original image. Arrow keys and
   the buttons step the unit; every view follows. */
"use strict";

async function openUnit(stage, channel, row, col) {
  const changed = !state.unit || state.unit.stage !== stage;
  state.unit = {stage, channel, row, col};
  if (changed) state.unitSlice = 0;
  if (state.stage !== stage) selectStage(stage);
  await refreshUnit();
}

async function refreshUnit() {
  const u = state.unit;
  if (!u || !state.imageId) return;
  const ticket = (state.unitTicket = (state.unitTicket || 0) + 1);
  const view = await api(`/api/unit/${state.imageId}?layer=${enc(u.stage)}&channel=${u.channel}` +
                         `&row=${u.row}&col=${u.col}`);
  if (ticket !== state.unitTicket) return;
  state.unitView = view;
  renderUnit(view);
  const rf = view.receptive_field;
  if (rf && !rf.whole_image) {
    await showReceptiveField(u.stage, u.channel, u.row, u.col, rf);
  } else {
    $("#rf-box").hidden = true;
    for (const old of document.querySelectorAll(".map .unit")) old.remove();
    $("#rf-caption").textContent = `${u.stage} unit ${u.channel} sees the whole image`;
  }
}

function stepUnit(dr, dc) {
  const u = state.unit, view = state.unitView;
  if (!u || !view) return;
  const out = view.output_shape;
  if (out.length === 3) {
    u.row = Math.max(0, Math.min(out[1] - 1, u.row + dr));
    u.col = Math.max(0, Math.min(out[2] - 1, u.col + dc));
  } else {
    u.channel = Math.max(0, Math.min(out[0] - 1, u.channel + dc + dr));
  }
  report(refreshUnit());
}

function closeUnit() {
  state.unit = null;
  state.unitView = null;
  const panel = $("#unit-panel");
  if (panel) panel.remove();
}

function unitPanel() {
  let panel = $("#unit-panel");
  if (panel) return panel;
  panel = el("section", {id: "unit-panel", class: "unit-panel", tabindex: "0",
                         "aria-label": "inside one unit: arrow keys move it"});
  panel.addEventListener("keydown", (event) => {
    const moves = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
    if (event.key in moves && event.target.tagName !== "INPUT") {
      event.preventDefault();
      stepUnit(...moves[event.key]);
    } else if (event.key === "Escape") {
      closeUnit();
    }
  });
  return panel;
}

/* The panel sits right under the map row of its layer. */
function placeUnitPanel(panel = $("#unit-panel")) {
  if (!panel || !state.unit) return;
  const row = document.querySelector(`.map-layer[data-layer="${CSS.escape(state.unit.stage)}"]`);
  if (row && row.nextSibling !== panel) row.after(panel);
  else if (!row) $("#maps").append(panel);
}

function stepButtons(view) {
  const spatial = view.output_shape.length === 3;
  const button = (id, label, dr, dc, aria) => el("button", {type: "button", id, "aria-label": aria,
                                                             onclick: () => stepUnit(dr, dc)}, [label]);
  const buttons = spatial
    ? [button("unit-left", "←", 0, -1, "unit to the left"), button("unit-up", "↑", -1, 0, "unit above"),
       button("unit-down", "↓", 1, 0, "unit below"), button("unit-right", "→", 0, 1, "unit to the right")]
    : [button("unit-left", "←", 0, -1, "previous unit"), button("unit-right", "→", 0, 1, "next unit")];
  return el("span", {class: "steps"}, [...buttons,
    el("button", {type: "button", id: "unit-close", "aria-label": "close", onclick: closeUnit}, ["×"])]);
}

function renderUnit(view) {
  const panel = unitPanel();
  placeUnitPanel(panel);
  panel.dataset.layer = view.layer;
  panel.dataset.channel = view.channel;
  panel.dataset.row = view.row;
  panel.dataset.col = view.col;
  const where = view.output_shape.length === 3
    ? `map ${view.channel}, unit (${view.row}, ${view.col})`
    : `unit ${view.channel}` + (view.class_name ? ` (class ${view.class_name})` : "");
  const head = el("div", {class: "unit-head"}, [
    el("h3", {text: `Inside ${view.layer} (${view.type}): ${where}`}),
    stepButtons(view),
    el("span", {class: "muted small", text: "arrow keys move the unit; Esc closes"}),
  ]);
  const body = el("div", {class: "unit-body"});
  body.append(receptiveFieldPicture(view));
  const builder = UNIT_VIEWS[view.kind] || otherView;
  body.append(...builder(view));
  panel.replaceChildren(head, body);
}

/* The input with the unit's receptive field, beside the numbers (not scrolled away). */
function receptiveFieldPicture(view) {
  const figure = el("figure", {class: "unit-rf"});
  if (!state.inputPicture) return figure;
  const frame = el("div", {class: "frame small-frame"});
  const canvas = document.createElement("canvas");
  canvas.width = state.inputPicture.width;
  canvas.height = state.inputPicture.height;
  canvas.getContext("2d").drawImage(state.inputPicture, 0, 0);
  frame.append(canvas);
  const rf = view.receptive_field;
  let caption = "receptive field: the whole image";
  if (rf && !rf.whole_image) {
    const box = el("div", {class: "rf-box", id: "unit-rf-box"});
    placeBox(box, rf);
    frame.append(box);
    caption = `receptive field ${rf.height}×${rf.width}: input rows ${rf.top}…` +
      `${rf.top + rf.height - 1}, cols ${rf.left}…${rf.left + rf.width - 1}`;
  }
  figure.append(frame, el("figcaption", {id: "unit-rf-caption", text: caption}));
  return figure;
}

/* A grid of numbers coloured on a diverging scale; cells carry (u, v) for hover links. */
function numberGrid(values, limit, kind, options = {}) {
  const table = el("table", {class: `grid ${kind}`});
  values.forEach((line, u) => {
    const tr = el("tr");
    line.forEach((value, v) => {
      const pad = options.padding && options.padding[u][v];
      const text = value === null ? "pad" : fmtNumber(value, 2);
      const td = el("td", {"data-u": u, "data-v": v, text,
        title: value === null ? "zero padding" : `${kind} (${u}, ${v}): ${value}`,
        style: value === null || pad ? "" : `background:${diverging(value, limit)}`});
      if (pad) td.classList.add("pad");
      if (options.winner && options.winner[0] === u && options.winner[1] === v) td.classList.add("winner");
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function linkHover(container) {
  container.addEventListener("mouseover", (event) => {
    const cell = event.target.closest("td[data-u]");
    for (const on of container.querySelectorAll("td.hot")) on.classList.remove("hot");
    if (!cell) return;
    const slice = cell.closest("[data-slice]");
    const scope = slice || container;
    for (const td of scope.querySelectorAll(`td[data-u="${cell.dataset.u}"][data-v="${cell.dataset.v}"]`)) {
      td.classList.add("hot");
    }
    const tap = document.querySelector(`#unit-plane rect[data-u="${cell.dataset.u}"][data-v="${cell.dataset.v}"]`);
    for (const on of document.querySelectorAll("#unit-plane rect.hot")) on.classList.remove("hot");
    if (tap) tap.classList.add("hot");
  });
}

const limitOf = (range) => Math.max(Math.abs(range[0]), Math.abs(range[1])) || 1;

/* The padded input plane with the window where it sits: padding cells are zeros, drawn apart. */
function paddedPlane(view, sliceIndex) {
  const svg = svgEl("svg", {id: "unit-plane", role: "img",
                            "aria-label": "the window on the zero-padded input"});
  const maps = view.plane_maps;
  if (!maps) return svg;
  const m = Math.min(sliceIndex, maps.shown - 1);
  const [ph, pw] = view.padded_hw;
  const [top, , left] = view.padding;
  const [H, W] = view.input_hw;
  const rows = view.window.rows, cols = view.window.cols;
  // Large planes: show the part around the window.
  const span = 24;
  const r0 = ph <= span ? 0 : Math.max(0, Math.min(ph - span, rows[0] - Math.floor((span - rows.length) / 2)));
  const c0 = pw <= span ? 0 : Math.max(0, Math.min(pw - span, cols[0] - Math.floor((span - cols.length) / 2)));
  const nh = Math.min(ph, span), nw = Math.min(pw, span);
  const cell = Math.max(6, Math.min(16, Math.floor(230 / Math.max(nh, nw))));
  svg.setAttribute("viewBox", `0 0 ${nw * cell + 2} ${nh * cell + 2}`);
  svg.setAttribute("width", nw * cell + 2);
  svg.setAttribute("height", nh * cell + 2);
  const bytes = decodeBytes(maps.data[m]);
  for (let i = 0; i < nh; i++) {
    for (let j = 0; j < nw; j++) {
      const r = r0 + i - top, c = c0 + j - left;
      const inside = r >= 0 && r < H && c >= 0 && c < W;
      const attrs = {x: 1 + j * cell, y: 1 + i * cell, width: cell, height: cell};
      if (inside) {
        const b = bytes[r * W + c];
        attrs.fill = `rgb(${b},${b},${b})`;
        attrs.class = "plane-cell";
      } else {
        attrs.class = "plane-pad";
      }
      svg.append(svgEl("rect", attrs));
    }
  }
  rows.forEach((r, u) => cols.forEach((c, v) => {
    if (r >= r0 && r < r0 + nh && c >= c0 && c < c0 + nw) {
      svg.append(svgEl("rect", {x: 1 + (c - c0) * cell, y: 1 + (r - r0) * cell, width: cell,
                                height: cell, class: "tap", "data-u": u, "data-v": v}));
    }
  }));
  const wr = rows[0] - r0, wc = cols[0] - c0;
  svg.append(svgEl("rect", {x: 1 + wc * cell, y: 1 + wr * cell,
                            width: (cols[cols.length - 1] - cols[0] + 1) * cell,
                            height: (rows[rows.length - 1] - rows[0] + 1) * cell,
                            class: "window", id: "unit-window"}));
  return svg;
}

function planeFigure(view) {
  const index = state.unitSlice || 0;
  const channel = view.plane_names ? view.plane_names[Math.min(index, view.plane_names.length - 1)] : 0;
  const [t, b, l, r] = view.padding;
  const padText = t || b || l || r ? `zero padding ${t === b && l === r && t === l ? t : view.padding.join(", ")} (hatched, all 0)`
    : "no padding";
  return el("figure", {class: "unit-plane"}, [
    paddedPlane(view, index),
    el("figcaption", {text: `${view.inputs[0]} map ${channel}, ` +
      (t || b || l || r ? `padded to ${shape(view.padded_hw)} (${padText})` : `${shape(view.padded_hw)} (${padText})`) +
      `; the window at rows ${view.window.rows[0]}–${view.window.rows[view.window.rows.length - 1]}, ` +
      `cols ${view.window.cols[0]}–${view.window.cols[view.window.cols.length - 1]}`}),
    scaleLegend("gray", fmtNumber(view.plane_maps.min[Math.min(index, view.plane_maps.shown - 1)]),
                fmtNumber(view.plane_maps.max[Math.min(index, view.plane_maps.shown - 1)])),
  ]);
}

/* A line of arithmetic: strings, and values as {text, id, title, tag, cls}. */
function equation(parts) {
  return el("div", {class: "equation mono"}, parts.filter((p) => p !== "").map((p) => {
    if (typeof p === "string") return el("span", {text: p});
    const attrs = {text: p.text};
    if (p.id) attrs.id = p.id;
    if (p.title) attrs.title = p.title;
    if (p.cls) attrs.class = p.cls;
    return el(p.tag || "b", attrs);
  }));
}

function nextStep(view, pre) {
  const next = view.next;
  if (!next) return [];
  if (next.value === null || next.value === undefined) {
    return [el("div", {class: "muted small", text: `then ${next.layer} (${next.type})`})];
  }
  return [equation([`then ${next.layer} (${next.type}): ${fmtNumber(pre, 4)} → `,
                    {id: "unit-next", text: fmtNumber(next.value, 4), title: String(next.value)}])];
}

function convView(view) {
  const ranges = view.ranges;
  const slices = el("div", {class: "slices"});
  view.slices.forEach((s, j) => {
    const box = el("div", {class: "unit-slice" + (j === (state.unitSlice || 0) ? " chosen" : ""),
                           "data-slice": j, "data-channel": s.channel,
                           title: `depth slice ${s.channel}: click to show it on the padded input`});
    const padMask = view.window.inside_rows.map((ir) => view.window.inside_cols.map((ic) => !(ir && ic)));
    box.append(el("div", {class: "small", text: `slice ${s.channel}`}),
               el("div", {class: "triple"}, [
                 el("div", {}, [el("span", {class: "tiny", text: "input"}),
                                numberGrid(s.patch, limitOf(ranges.patch), "patch", {padding: padMask})]),
                 el("span", {class: "op", text: "⊙"}),
                 el("div", {}, [el("span", {class: "tiny", text: "weights"}),
                                numberGrid(s.weights, limitOf(ranges.weights), "weights")]),
                 el("span", {class: "op", text: "="}),
                 el("div", {}, [el("span", {class: "tiny", text: "products"}),
                                numberGrid(s.products, limitOf(ranges.products), "products")]),
               ]),
               el("div", {class: "slice-sum mono", text: `sum ${fmtNumber(s.sum, 4)}`, title: String(s.sum)}));
    activates(box, () => {
      state.unitSlice = j;
      renderUnit(view);
    });
    slices.append(box);
  });
  linkHover(slices);
  const legends = el("div", {class: "legends small"}, [
    el("span", {text: "input "}), scaleLegend("diverging", fmtNumber(-limitOf(ranges.patch)), fmtNumber(limitOf(ranges.patch))),
    el("span", {text: " weights "}), scaleLegend("diverging", fmtNumber(-limitOf(ranges.weights)), fmtNumber(limitOf(ranges.weights))),
    el("span", {text: " products "}), scaleLegend("diverging", fmtNumber(-limitOf(ranges.products)), fmtNumber(limitOf(ranges.products))),
  ]);
  const sums = view.slices.map((s) => fmtNumber(s.sum, 3));
  const more = view.slices_total > view.slices_shown
    ? [` + ${view.slices_total - view.slices_shown} more slices (${fmtNumber(view.rest_sum, 3)})`] : [];
  const filter = `filter ${view.filter} (${view.kernel.join("×")}×${view.slices_total}` +
    `${view.dilation[0] > 1 || view.dilation[1] > 1 ? `, dilation ${view.dilation.join("×")}` : ""}` +
    `, stride ${view.stride.join("×")})`;
  const eq = equation([
    `${sums.join(" + ")}`, ...more, ` = ${fmtNumber(view.sum, 4)}`,
    view.has_bias ? ` + bias ${fmtNumber(view.bias, 4)}` : "", " = pre-activation ",
    {id: "unit-pre", text: fmtNumber(view.pre_activation, 4), title: String(view.pre_activation)},
    {tag: "span", cls: "muted", id: "unit-engine", title: String(view.engine_value),
     text: `  (the engine's output: ${fmtNumber(view.engine_value, 4)})`},
  ]);
  return [planeFigure(view), el("div", {class: "unit-numbers"}, [
    el("div", {class: "small muted", text: `${filter}: the window's input times the weights, slice by slice`}),
    slices, legends, eq, ...nextStep(view, view.pre_activation)])];
}

function poolView(view) {
  const values = view.values;
  const numbers = values.map((line) => line.map((v) => v));
  const limit = Math.max(...numbers.flat().filter((v) => v !== null).map(Math.abs), 1e-12);
  const grid = numberGrid(numbers, limit, "patch", {winner: view.winner});
  linkHover(grid);
  const result = view.kind === "maxpool"
    ? [`max = `, {id: "unit-pre", text: fmtNumber(view.result, 4), title: String(view.result)},
       ` (the highlighted value wins; ${view.text})`]
    : [`${view.text} = `, {id: "unit-pre", text: fmtNumber(view.result, 4), title: String(view.result)}];
  return [planeFigure(view), el("div", {class: "unit-numbers"}, [
    el("div", {class: "small muted", text: `${view.kernel.join("×")} window, stride ${view.stride.join("×")}, on map ${view.channel} only (depth is kept)`}),
    grid, equation(result), ...nextStep(view, view.result)])];
}

function fcView(view) {
  const rows = view.top.map((item) => el("tr", {}, [
    el("td", {text: item.from ? `${item.index} = map ${item.from[0]} (${item.from[1]}, ${item.from[2]})` : String(item.index)}),
    el("td", {class: "num", text: fmtNumber(item.value, 3), title: String(item.value)}),
    el("td", {class: "num", text: fmtNumber(item.weight, 3), title: String(item.weight)}),
    el("td", {class: "num", text: fmtNumber(item.product, 3), title: String(item.product),
              style: `background:${diverging(item.product, Math.abs(view.top[0].product) || 1)}`}),
  ]));
  const table = el("table", {class: "contributions"}, [
    el("tr", {}, ["input", "value", "weight", "value × weight"].map((h) => el("th", {text: h}))),
    ...rows]);
  return [el("div", {class: "unit-numbers"}, [
    el("div", {class: "small muted", text: `the ${view.top.length} largest of ${view.in_features.toLocaleString()} ` +
      `contributions (value × weight) from ${view.source}${view.source_shape ? " (" + shape(view.source_shape) + ", flattened)" : ""}`}),
    table,
    equation([`${fmtNumber(view.shown_sum, 4)} + the other ${view.rest_count.toLocaleString()}: ${fmtNumber(view.rest_sum, 4)}`,
              view.has_bias ? ` + bias ${fmtNumber(view.bias, 4)}` : "", " = ",
              {id: "unit-pre", text: fmtNumber(view.pre_activation, 4), title: String(view.pre_activation)},
              `  (the engine's output: ${fmtNumber(view.engine_value, 4)})`]),
    ...nextStep(view, view.pre_activation)])];
}

function deconvView(view) {
  const rows = view.contributors.map((c) => el("tr", {}, [
    el("td", {text: `(${c.row}, ${c.col})`}), el("td", {text: `(${c.tap[0]}, ${c.tap[1]})`}),
    el("td", {class: "num", text: fmtNumber(c.sum, 4), title: String(c.sum)})]));
  return [el("div", {class: "unit-numbers"}, [
    el("div", {class: "small muted", text: view.text}),
    el("table", {class: "contributions"}, [
      el("tr", {}, ["input unit", "kernel tap", `Σ over ${view.channels} channels`].map((h) => el("th", {text: h}))),
      ...rows]),
    equation([`${fmtNumber(view.sum, 4)}${view.has_bias ? ` + bias ${fmtNumber(view.bias, 4)}` : ""} = `,
              {id: "unit-pre", text: fmtNumber(view.pre_activation, 4), title: String(view.pre_activation)},
              `  (the engine's output: ${fmtNumber(view.engine_value, 4)})`]),
    el("div", {class: "small", id: "unit-scatter", text: `input (${view.scatter.input.join(", ")}) scatters ` +
      `to output rows ${view.scatter.rows.join(", ")} × columns ${view.scatter.cols.join(", ")}`}),
    ...nextStep(view, view.pre_activation)])];
}

function resizeView(view) {
  const rows = view.reads.map((r) => el("tr", {}, [
    el("td", {text: `(${r.row}, ${r.col})`}),
    el("td", {class: "num", text: fmtNumber(r.value, 4), title: String(r.value)}),
    el("td", {class: "num", text: fmtNumber(r.weight, 4), title: String(r.weight)}),
    el("td", {class: "num", text: fmtNumber(r.product, 4), title: String(r.product)})]));
  return [planeFigure(view), el("div", {class: "unit-numbers"}, [
    el("div", {class: "small muted", text: view.text}),
    el("table", {class: "contributions"}, [
      el("tr", {}, ["input pixel", "value", "weight", "value × weight"].map((h) => el("th", {text: h}))),
      ...rows]),
    equation(["sum = ", {id: "unit-pre", text: fmtNumber(view.result, 4), title: String(view.result)},
              {tag: "span", cls: "muted", text: `  (the engine's output: ${fmtNumber(view.engine_value, 4)})`}]),
    ...nextStep(view, view.result)])];
}

function textView(lines) {
  return [el("div", {class: "unit-numbers"}, lines)];
}

function otherView(view) {
  return textView([equation([view.text || `${view.type}: `, {id: "unit-pre", text: fmtNumber(view.engine_value, 4)}])]);
}

const UNIT_VIEWS = {
  conv: convView,
  maxpool: poolView,
  avgpool: poolView,
  fc: fcView,
  deconv: deconvView,
  resize: resizeView,
  moved: (v) => textView([equation([`${v.text}: `, {id: "unit-pre", text: fmtNumber(v.result, 4), title: String(v.result)}])]),
  concat: (v) => textView([el("div", {id: "unit-text", text: v.text}),
                           equation(["value ", {id: "unit-pre", text: fmtNumber(v.value, 4)}])]),
  merge: (v) => textView([equation([`${v.sources.join(` ${v.symbol} `)}: ${v.text} = `,
                                    {id: "unit-pre", text: fmtNumber(v.engine_value, 4)}])]),
  elementwise: (v) => textView([equation([`${v.rule}: `,
    v.input_value === null ? "" : `${fmtNumber(v.input_value, 4)} → `,
    {id: "unit-pre", text: fmtNumber(v.result, 4), title: String(v.result)}]),
    v.mean !== undefined ? el("div", {class: "small muted", text: `mean ${fmtNumber(v.mean, 4)}, var ` +
      `${fmtNumber(v.var, 4)}, gamma ${fmtNumber(v.gamma, 4)}, beta ${fmtNumber(v.beta, 4)} (running statistics)`}) : ""]),
  gap: (v) => textView([equation([`${v.text} = `, {id: "unit-pre", text: fmtNumber(v.result, 4)}])]),
  flatten: (v) => textView([equation([`${v.text}: `, {id: "unit-pre", text: fmtNumber(v.result, 4)}])]),
};

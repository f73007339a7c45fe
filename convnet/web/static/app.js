/* The convnet explorer page, its core: the model and its layers, images and predictions,
   activation maps, saliency and filters. Talks to the JSON API of convnet.web.app; every number
   it shows comes from there (the page formats, never recomputes). Other files: unit.js (inside
   one unit), network.js (graph models), playground.js, drawing.js, training.js, main.js. */
"use strict";

const state = {
  info: null,
  layer: null,          // selected layer (a row of the layer table, by name)
  stage: null,          // selected stage (a chain's layer, a graph's node, by name)
  imageId: null,        // current input (val-N or up-HASH)
  prediction: null,
  maps: new Map(),      // stage name -> its encoded maps for the current image
  rf: null,             // {layer, map, row, col} of the clicked unit
  unit: null,           // {stage, channel, row, col} shown inside
  windowStep: 0,
  windowTimer: null,
  playing: true,
  filterLayer: null,
  filterIndex: null,
  events: null,
  chartQueued: false,
  live: {busy: false, pending: false},
};

const $ = (selector) => document.querySelector(selector);

// The server's token for requests that change something (convnet/web/guard.py): a page of
// another site cannot read it, so it cannot start or stop runs or upload through this page.
const TOKEN = document.querySelector('meta[name="convnet-token"]').content;

async function api(path, options = {}) {
  if ((options.method || "GET").toUpperCase() !== "GET") {
    options = {...options, headers: {...(options.headers || {}), "X-Convnet-Token": TOKEN}};
  }
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ")
      : `${response.status} ${response.statusText}`;
    const error = new Error(text);
    error.status = response.status;
    throw error;
  }
  return body;
}

let errorTimer = null;
function showError(message) {
  const banner = $("#error-banner");
  banner.textContent = message;
  banner.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { banner.hidden = true; }, 12000);
}

function report(promise) {
  return promise.catch((error) => showError(error.message));
}

const shape = (dims) => dims.join("×");
const pct = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
const enc = encodeURIComponent;

/* Keyboard: Enter or Space on a focusable element does what a click does. */
function activates(node, handler) {
  node.setAttribute("tabindex", "0");
  node.addEventListener("click", handler);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      handler(event);
    }
  });
  return node;
}

/* ---------------------------------------------------------------- model and layers */

function stageByName(name) {
  return state.info ? state.info.stages.find((s) => s.name === name) : null;
}

function rowOfStage(stage) {
  return state.info.layers.find((l) => l.name === stage.layer && l.depth === 0) ||
         state.info.layers.find((l) => l.name === stage.layer);
}

async function loadModel(options = {}) {
  const ticket = (state.modelTicket = (state.modelTicket || 0) + 1);
  const info = await (options.request || api("/api/model"));
  if (ticket !== state.modelTicket) return;  // a newer request is on its way
  state.info = info;
  const src = info.source;
  $("#model-title").textContent = `${src.name} · input ${shape(info.input_shape)} · ` +
    `${info.total_params.toLocaleString()} parameters`;
  const badge = $("#model-badge");
  const folder = (src.folder || "").split("/").filter(Boolean).pop() || "";
  const story = info.accuracy;
  const which = story && story.checkpoint ? ` · ${story.checkpoint} checkpoint` +
    (story.checkpoint_epoch !== null && story.checkpoint_epoch !== undefined
      ? ` (epoch ${story.checkpoint_epoch})` : "") : "";
  badge.textContent = src.kind === "training" ? `training → ${folder}`
    : src.kind === "run" ? `run ${folder}${which}` : src.note || src.kind;
  badge.title = src.folder || "";
  badge.className = `badge ${src.kind}`;
  renderAccuracy(story);
  $("#model-facts").textContent = `${info.stages.length} ${info.graph ? "nodes" : "layers"}, ` +
    `${info.total_macs.toLocaleString()} multiply-adds per image, output ${shape(info.output_shape)}`;
  renderLayers(info);
  fillSelect($("#filter-layer"), info.layers.filter((l) => l.has_filters).map((l) => l.name));
  fillSelect($("#explain-layer"), info.stages.filter((s) => s.maps === "maps").map((s) => s.name),
             info.gradcam_default);
  fillSelect($("#explain-class"), ["predicted", ...info.class_names.map((n, i) => `${i}: ${n}`)]);
  $("#segment-panel").hidden = info.task !== "segment";
  $("#explain-panel").hidden = info.task === "segment";  // one score per pixel, not per image
  $("#draw-view").hidden = info.input_shape[0] !== 1;
  const names = info.stages.map((s) => s.name);
  if (!state.stage || !names.includes(state.stage)) {
    const first = info.stages.find((s) => (rowOfStage(s) || {}).arithmetic) || info.stages[0];
    state.stage = first ? first.name : null;
  }
  if (state.filterLayer && !info.layers.some((l) => l.name === state.filterLayer)) {
    state.filterLayer = null;
  }
  if (info.graph) {
    await loadNetwork();
  } else {
    $("#network-panel").hidden = true;
  }
  const convs = info.layers.filter((l) => l.has_filters);
  if (!state.filterLayer && convs.length) state.filterLayer = convs[0].name;
  state.filtersShown = null;
  selectStage(state.stage, {quiet: true});
  if (!state.filterLayer) {
    $("#filters-grid").replaceChildren(el("span", {class: "muted small", text: "no conv layers"}));
  } else if (!options.deferFilters) {
    await showFilters(state.filterLayer);
  }
}

/* The filters of a layer unless they are on the page already. */
async function showFilters(name) {
  if (state.filtersShown === `${name}@${state.info.version}`) return;
  $("#filter-layer").value = name;
  await loadFilters(name);
}

function renderAccuracy(story) {
  const line = $("#accuracy-line");
  if (!story || !story.lines || !story.lines.length) {
    line.textContent = "";
    return;
  }
  const parts = [];
  if (story.test) {
    parts.push(`held-out ${story.test.split} accuracy ${pct(story.test.accuracy)} ` +
               `(${story.test.count ? story.test.count.toLocaleString() + " images, " : ""}` +
               `${story.test.checkpoint} checkpoint)`);
  }
  if (story.best) {
    parts.push(`best validation ${pct(story.best.accuracy)} (epoch ${story.best.epoch}, best checkpoint)`);
  }
  line.textContent = parts.join(" · ");
  line.title = story.lines.join("\n") + (story.validation ? `\nvalidation split: ${story.validation}` : "");
}

function fillSelect(select, values, chosen) {
  const previous = select.value;
  select.replaceChildren(...values.map((v) => el("option", {value: v, text: v})));
  if (chosen && values.includes(chosen)) select.value = chosen;
  else if (values.includes(previous)) select.value = previous;
}

function rfText(layer) {
  if (layer.whole_image) return "whole image";
  return `${layer.receptive_field[0]}×${layer.receptive_field[1]}`;
}

function renderLayers(info) {
  const body = $("#layers tbody");
  body.replaceChildren();
  for (const layer of info.layers) {
    const row = el("tr", {"data-layer": layer.name, class: layer.depth ? "nested" : ""}, [
      el("td", {}, [el("b", {text: layer.name}), el("br"),
                    el("span", {class: "type", text: layer.type})]),
      el("td", {class: "num", text: shape(layer.output_shape)}),
      el("td", {class: "formula", text: layer.formula || (layer.params ? layer.params.toLocaleString() : "0")}),
      el("td", {class: "num", text: rfText(layer),
                title: layer.whole_image ? "each value depends on every input pixel"
                  : `jump ${layer.jump.join("×")}: neighbouring units see windows ` +
                    `${layer.jump.join("×")} input pixels apart`}),
    ]);
    activates(row, () => selectLayer(layer.name));
    row.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      event.preventDefault();
      const next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
      if (next) { next.focus(); selectLayer(next.dataset.layer); }
    });
    body.append(row);
  }
}

function selectLayer(name) {
  if (!state.info) return;
  const stage = state.info.stages.find((s) => s.layer === name || s.name === name);
  if (stage) {
    selectStage(stage.name);
  } else {
    showLayerDetail(state.info.layers.find((l) => l.name === name));
  }
}

function selectStage(name, options = {}) {
  const stage = stageByName(name);
  if (!stage) return;
  const changed = state.stage !== name;
  state.stage = name;
  const row = rowOfStage(stage);
  showLayerDetail(row, stage);
  for (const node of document.querySelectorAll(".map-layer")) {
    node.classList.toggle("selected", node.dataset.layer === name);
  }
  if (typeof highlightNetwork === "function") highlightNetwork(name);
  if (state.info.maps_per_stage && state.imageId && (changed || !state.maps.has(name)) && !options.quiet) {
    report(showStageMaps(name));
  }
}

function showLayerDetail(layer, stage) {
  if (!layer) return;
  state.layer = layer.name;
  for (const row of document.querySelectorAll("#layers tr[data-layer]")) {
    row.classList.toggle("selected", row.dataset.layer === layer.name);
  }
  const title = stage && stage.name !== layer.name ? `${stage.name} (${layer.type}, a call of ${layer.name})`
    : `${layer.name} (${layer.type})`;
  $("#layer-name").textContent = title;
  const inputs = stage && stage.inputs.length ? ` from ${stage.inputs.join(" and ")}` : "";
  const facts = [`input ${Array.isArray(layer.input_shape[0]) ? layer.input_shape.map(shape).join(" + ")
                 : shape(layer.input_shape)}${inputs} → output ${shape(layer.output_shape)}`];
  facts.push(layer.formula ? `parameters ${layer.formula}` : "no parameters");
  if (layer.output_shape.length === 3) {
    facts.push(`each output unit sees a ${layer.receptive_field.join("×")} window of the input ` +
               `(its receptive field); the jump, ${layer.jump.join("×")}, is how far apart on the ` +
               `input the windows of neighbouring units are`);
  } else {
    facts.push("each value depends on the whole image");
  }
  if (layer.macs) facts.push(`${layer.macs.toLocaleString()} multiply-adds per image`);
  $("#layer-info").replaceChildren(...facts.map((f) => el("div", {text: f})));
  renderSharing(layer);
  const view = $("#window-view");
  clearInterval(state.windowTimer);
  if (layer.arithmetic) {
    view.hidden = false;
    renderArithmetic(layer);
    state.windowStep = 0;
    drawWindowStep(layer);
    state.windowTimer = setInterval(() => {
      if (!state.playing) return;
      state.windowStep += 1;
      drawWindowStep(layer);
    }, 650);
  } else {
    view.hidden = true;
  }
  if (layer.has_filters && state.filterLayer !== layer.name) {
    state.filterLayer = layer.name;
    report(showFilters(layer.name));
  }
}

function renderSharing(layer) {
  const box = $("#sharing");
  if (!layer.sharing) { box.hidden = true; return; }
  const s = layer.sharing;
  box.hidden = false;
  box.replaceChildren(
    el("h3", {class: "small", text: "Weight sharing: the same output volume, three ways"}),
    el("table", {class: "sharing"}, [
      el("tr", {}, [el("td", {text: "this conv layer (one filter slides over every position)"}),
                    el("td", {class: "mono", text: s.conv.text})]),
      el("tr", {}, [el("td", {text: `locally connected (a filter of its own at each of the ${s.positions.toLocaleString()} positions of each map)`}),
                    el("td", {class: "mono", text: s.locally_connected.text})]),
      el("tr", {}, [el("td", {text: "fully connected (every input value to every output value)"}),
                    el("td", {class: "mono", text: s.fully_connected.text})]),
    ]));
}

function renderArithmetic(layer) {
  const a = layer.arithmetic;
  const [h, w] = a.axes;
  const lines = [];
  const pad = (x) => (x.p_before === x.p_after ? `${x.p_before}` : `${x.p_before}+${x.p_after}`);
  const what = a.kind === "conv"
    ? `${a.filters} filters of ${a.kernel[0]}×${a.kernel[1]}×${a.input[0]}`
    : `${a.kernel[0]}×${a.kernel[1]} pooling window`;
  const pads = a.padding.every((p) => p === a.padding[0]) ? `${a.padding[0]}`
    : `top ${a.padding[0]}, bottom ${a.padding[1]}, left ${a.padding[2]}, right ${a.padding[3]}`;
  const strides = a.stride[0] === a.stride[1] ? `${a.stride[0]}` : a.stride.join("×");
  lines.push(el("div", {text: `${layer.name}: ${what}, stride ${strides}, pad ${pads}`}));
  if (a.dilation && (a.dilation[0] > 1 || a.dilation[1] > 1)) {
    lines.push(el("div", {class: "muted", text: `dilation ${a.dilation.join("×")}: the taps are ` +
      `${a.dilation.join("×")} pixels apart, so the ${a.kernel.join("×")} filter spans ` +
      `${h.f}×${w.f} (F below is that span)`}));
  }
  const same = h.n === w.n && h.f === w.f && h.s === w.s && pad(h) === pad(w);
  const axes = same ? [h] : [h, w];
  for (const x of axes) {
    lines.push(el("div", {class: "lecture",
      text: `${same ? "" : x.axis + ": "}N = ${x.n}, F = ${x.f}, S = ${x.s}, P = ${pad(x)}` +
            `  →  (N − F + 2P)/S + 1`}));
    lines.push(el("div", {}, [el("span", {text: `${same ? "" : x.axis + ": "}${x.text}`}),
      x.dropped ? el("span", {class: "muted", text: `  (last ${x.dropped} pixel(s) never covered)`})
                : ""]));
  }
  lines.push(el("div", {}, [el("span", {text: "output volume "}),
                            el("b", {text: shape(a.output)})]));
  lines.push(el("div", {class: "muted", text: a.params_text}));
  $("#arithmetic").replaceChildren(...lines);
}

function drawWindowStep(layer) {
  const a = layer.arithmetic;
  const where = drawWindow($("#window-svg"), a, state.windowStep);
  const [h, w] = a.axes;
  const r0 = where.row * h.s, c0 = where.col * w.s;
  $("#window-caption").textContent = `output (${where.row}, ${where.col}) ← padded input rows ` +
    `${r0}–${r0 + h.f - 1}, cols ${c0}–${c0 + w.f - 1} (stride ${h.s === w.s ? h.s : a.stride.join("×")})`;
}

/* ---------------------------------------------------------------- images and predictions */

async function loadSamples(request) {
  const list = await (request || api("/api/samples?limit=60"));
  const gallery = $("#gallery");
  const version = state.info ? state.info.version : 0;
  // One picture for all thumbnails (one request), each about 36 pixels on the page.
  const tile = list.sprite ? list.sprite.tile : [36, 36];
  const scale = Math.max(1, Math.round(36 / Math.max(...tile)));
  const sprite = `/api/samples/sprite.png?limit=60&scale=${scale}&v=${version}`;
  gallery.replaceChildren(...list.items.map((item) => {
    const [tw, th] = [scale * tile[1], scale * tile[0]];
    const img = el("img", {
      src: sprite, alt: `sample ${item.index}: ${item.class_name}`, role: "option",
      title: `${item.id}: ${item.class_name}`, "data-id": item.id,
      style: `object-position:-${item.sprite[0] * tw}px -${item.sprite[1] * th}px;` +
             `width:${tw}px;height:${th}px`,
    });
    return activates(img, () => report(selectImage(item.id)));
  }));
  $("#gallery-note").textContent = list.count
    ? `${list.count.toLocaleString()} images: ${list.description || ""}` : (list.note || "");
  return list;
}

async function selectImage(id, options = {}) {
  state.imageId = id;
  state.rf = null;
  state.maps = new Map();
  for (const img of document.querySelectorAll("#gallery img")) {
    img.classList.toggle("selected", img.dataset.id === id);
    img.setAttribute("aria-selected", img.dataset.id === id ? "true" : "false");
  }
  await refreshPrediction();
  if (state.unit) await refreshUnit();
  if (!options.skipExplain) await refreshExplain();
  await refreshSegment();
}

async function refreshPrediction() {
  if (!state.imageId) return;
  const ticket = (state.predictTicket = (state.predictTicket || 0) + 1);
  const stageParam = state.info && state.info.maps_per_stage && state.stage
    ? `&layers=${enc(state.stage)}` : "";
  const p = await api(`/api/predict/${state.imageId}?top_k=5${stageParam}`);
  if (ticket !== state.predictTicket) return;
  state.prediction = p;
  for (const layer of p.layers || []) state.maps.set(layer.name, layer);
  drawInput(p.input);
  const label = p.label_name !== null && p.label_name !== undefined ? ` · true class ${p.label_name}` : "";
  $("#input-caption").textContent = `${p.description} · ${shape(p.input.shape)}${label}`;
  $("#input-notes").textContent = p.notes.length ? `converted: ${p.notes.join("; ")}` : "";
  const list = $("#prediction");
  list.replaceChildren(...p.top_k.map((item, i) => el("li", {class: i === 0 ? "top1" : ""}, [
    el("span", {class: "name", text: item.name, title: `class ${item.index}: ${item.name}`}),
    el("span", {class: "bar"}, [el("div", {style: `width:${(100 * item.probability).toFixed(1)}%`})]),
    el("span", {class: "p", text: pct(item.probability)}),
  ])));
  renderMaps();
}

function drawInput(input) {
  const [c, h, w] = input.shape;
  const source = chwCanvas(decodeBytes(input.data), c, h, w);
  const canvas = $("#input-canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").drawImage(source, 0, 0);
  state.inputPicture = source;
  $("#rf-box").hidden = true;
  $("#rf-caption").textContent = "";
}

function mapScale(h, w, count) {
  const target = count > 16 ? 44 : 60;
  return Math.max(1, Math.floor(target / Math.max(h, w)));
}

/* The maps panel: every stage for a chain; the selected node for a large graph. */
function renderMaps() {
  const container = $("#maps");
  container.replaceChildren();
  if (!state.info || !state.prediction) return;
  const names = state.info.maps_per_stage ? [state.stage] : state.info.stages.map((s) => s.name);
  $("#maps-intro").firstChild.textContent = state.info.maps_per_stage
    ? `The output of ${state.stage} for this input (a large graph: choose a node in the ` +
      `network or the table). Click a unit (or focus a map and press Enter) to see inside it. `
    : "Every layer's output for this input. Click a unit (or focus a map and press Enter) to " +
      "see inside it: the numbers that make it and the input pixels it depends on. ";
  for (const name of names) {
    const layer = state.maps.get(name);
    if (layer) container.append(mapRow(layer));
  }
  if (state.unit) placeUnitPanel();
}

async function showStageMaps(name) {
  if (!state.imageId) return;
  if (!state.maps.has(name)) {
    const layer = await api(`/api/activations/${state.imageId}?layer=${enc(name)}`);
    state.maps.set(name, layer);
  }
  if (state.stage === name) renderMaps();
}

function mapRow(layer) {
  const perMap = $("#per-map").checked;
  const stage = stageByName(layer.name);
  const label = el("div", {class: "label"}, [el("b", {text: layer.name}),
    el("span", {class: "muted", text: `${layer.type} ${shape(layer.shape)}` +
                (layer.shown < layer.count ? ` (first ${layer.shown})` : "")})]);
  const list = el("div", {class: "map-list"});
  if (layer.kind === "maps") {
    const low = Math.min(...layer.min), high = Math.max(...layer.max);
    label.append(perMap ? scaleLegend("gray", "min", "max", "of each map")
                        : scaleLegend("gray", fmtNumber(low), fmtNumber(high)));
    const s = mapScale(layer.height, layer.width, layer.shown);
    layer.data.forEach((b64, m) => {
      const bytes = decodeBytes(b64);
      const lo = layer.min[m], hi = layer.max[m];
      const remap = perMap || high === low ? null
        : (b) => Math.round(((lo + (b / 255) * (hi - lo)) - low) / (high - low) * 255);
      const canvas = grayCanvas(bytes, layer.width, layer.height, remap);
      canvas.style.width = `${layer.width * s}px`;
      canvas.style.height = `${layer.height * s}px`;
      canvas.title = `${layer.name} map ${m}: ${fmtNumber(lo)} … ${fmtNumber(hi)}`;
      canvas.setAttribute("aria-label", canvas.title);
      const wrap = el("div", {class: "map", "data-map": m}, [canvas]);
      canvas.addEventListener("click", (event) => {
        const col = Math.min(layer.width - 1, Math.floor(event.offsetX / canvas.clientWidth * layer.width));
        const row = Math.min(layer.height - 1, Math.floor(event.offsetY / canvas.clientHeight * layer.height));
        report(openUnit(layer.name, m, row, col));
      });
      canvas.setAttribute("tabindex", "0");
      canvas.addEventListener("keydown", (event) => {
        const moves = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
        const here = state.unit && state.unit.stage === layer.name && state.unit.channel === m;
        if (here && event.key in moves) {
          event.preventDefault();
          stepUnit(...moves[event.key]);
        } else if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          const unit = state.unit && state.unit.stage === layer.name && state.unit.channel === m
            ? state.unit : {row: Math.floor(layer.height / 2), col: Math.floor(layer.width / 2)};
          report(openUnit(layer.name, m, unit.row, unit.col));
        }
      });
      list.append(wrap);
    });
  } else {
    label.append(scaleLegend("viridis", fmtNumber(layer.min), fmtNumber(layer.max)));
    list.append(vectorView(layer, stage));
  }
  const row = el("div", {class: "map-layer", "data-layer": layer.name}, [label, list]);
  row.classList.toggle("selected", layer.name === state.stage);
  return row;
}

/* A vector: labelled cells (class names on the output) when short, a strip when long. */
function vectorView(layer, stage) {
  const info = state.info;
  const last = info.stages[info.stages.length - 1];
  const classes = stage && last && stage.name === last.name && layer.count === info.class_names.length
    ? info.class_names : null;
  const bytes = decodeBytes(layer.data);
  const open = (i) => report(openUnit(layer.name, i, 0, 0));
  if (layer.count <= 40) {
    const cells = [];
    for (let i = 0; i < layer.shown; i++) {
      const [r, g, b] = ramp(bytes[i] / 255);
      const value = layer.values ? layer.values[i] : null;
      const name = classes ? classes[i] : String(i);
      const cell = el("div", {class: "vcell", "data-index": i,
        title: `${layer.name} ${classes ? "class " + name : "unit " + i}: ${fmtNumber(value, 4)}`}, [
        el("span", {class: "swatch", style: `background:rgb(${r},${g},${b})`}),
        el("span", {class: "vname", text: name}),
      ]);
      cells.push(activates(cell, () => open(i)));
    }
    return el("div", {class: "vector-cells" + (classes ? " classes" : "")}, cells);
  }
  const canvas = vectorCanvas(bytes);
  canvas.title = `${layer.name}: ${layer.count} values from ${fmtNumber(layer.min)} to ${fmtNumber(layer.max)}`;
  canvas.addEventListener("click", (event) => {
    open(Math.min(layer.shown - 1, Math.floor(event.offsetX / canvas.clientWidth * layer.shown)));
  });
  return el("div", {class: "vector", style: "width:100%"}, [canvas]);
}

async function showReceptiveField(layerName, mapIndex, row, col, rf) {
  rf = rf || await api(`/api/receptive-field?layer=${enc(layerName)}&row=${row}&col=${col}`);
  state.rf = {layer: layerName, map: mapIndex, row, col};
  for (const old of document.querySelectorAll(".map .unit")) old.remove();
  const mapRowNode = document.querySelector(`.map-layer[data-layer="${CSS.escape(layerName)}"]`);
  const wrap = mapRowNode && mapRowNode.querySelector(`.map[data-map="${mapIndex}"]`);
  const layer = state.maps.get(layerName);
  if (wrap && layer) {
    wrap.append(el("div", {class: "unit", style:
      `left:${(100 * col) / layer.width}%;top:${(100 * row) / layer.height}%;` +
      `width:${100 / layer.width}%;height:${100 / layer.height}%`}));
  }
  placeBox($("#rf-box"), rf);
  const [H, W] = rf.input_hw;
  const outside = rf.top < 0 || rf.left < 0 || rf.top + rf.height > H || rf.left + rf.width > W;
  $("#rf-caption").textContent = `${layerName} map ${mapIndex}, unit (${row}, ${col}) sees input ` +
    `rows ${rf.top}…${rf.top + rf.height - 1}, cols ${rf.left}…${rf.left + rf.width - 1} ` +
    `(${rf.height}×${rf.width})` + (outside ? ", partly zero padding" : "") +
    (rf.whole_image ? ": the whole image" : "");
}

/* An input window (clipped to the image) as a box over a picture of the input. */
function placeBox(box, rf) {
  const [H, W] = rf.input_hw;
  const c = rf.clipped;
  box.style.left = `${(100 * c.left) / W}%`;
  box.style.top = `${(100 * c.top) / H}%`;
  box.style.width = `${(100 * c.width) / W}%`;
  box.style.height = `${(100 * c.height) / H}%`;
  box.hidden = false;
}

async function upload(file, params = "") {
  const form = new FormData();
  form.append("file", file);
  const result = await api(`/api/images${params}`, {method: "POST", body: form});
  for (const img of document.querySelectorAll("#gallery img")) img.classList.remove("selected");
  await selectImage(result.id);
  return result;
}

/* ---------------------------------------------------------------- saliency and Grad-CAM */

async function refreshExplain() {
  if (!state.imageId || (state.info && state.info.task === "segment")) return;
  const choice = $("#explain-class").value;
  const params = new URLSearchParams();
  if (choice && choice !== "predicted") params.set("class_index", choice.split(":")[0]);
  if ($("#explain-layer").value) params.set("layer", $("#explain-layer").value);
  const e = await api(`/api/explain/${state.imageId}?${params}`);
  $("#saliency-img").src = e.saliency;
  $("#gradcam-img").src = e.gradcam;
  $("#saliency-legend").replaceChildren(scaleLegend("hot", fmtNumber(e.saliency_range[0]),
                                                    fmtNumber(e.saliency_range[1]), "|d score / d pixel|"));
  $("#gradcam-caption").textContent = `Grad-CAM at ${e.gradcam_layer} ` +
    `(${shape(e.gradcam_shape)}) for "${e.class_name}" (${pct(e.probability)})`;
  document.body.dataset.explained = state.imageId;
}

function drawLegends() {
  for (const node of document.querySelectorAll(".scale-legend")) {
    node.replaceChildren(scaleLegend(node.dataset.cmap, node.dataset.low, node.dataset.high));
  }
}

/* ---------------------------------------------------------------- segmentation */

async function refreshSegment() {
  if (!state.imageId || !state.info || state.info.task !== "segment") return;
  const s = await api(`/api/segment/${state.imageId}`);
  $("#seg-input").src = s.input;
  $("#seg-predicted").src = s.predicted;
  $("#seg-overlay").src = s.overlay;
  $("#seg-truth-figure").hidden = !s.truth;
  if (s.truth) $("#seg-truth").src = s.truth;
  renderIou($("#seg-image-iou"), s.image_iou, s, "this image");
  renderIou($("#seg-samples-iou"), s.samples_iou, s,
            s.samples_iou ? `${s.samples_iou.images} samples` : "");
}

function renderIou(box, iou, s, what) {
  if (!iou) { box.replaceChildren(); return; }
  const value = (v) => (v === null ? "n/a" : v.toFixed(3));
  const head = el("p", {text: `${what}: mean IoU ${value(iou.mean_iou)}, pixel accuracy ` +
                               `${pct(iou.pixel_accuracy)}`});
  const rows = s.class_names.map((name, i) => {
    const v = iou.per_class[name];
    return el("div", {class: "iou"}, [
      el("span", {class: "swatch", style: `background:${s.colours[i]}`}),
      el("span", {text: name}),
      el("span", {class: "bar"}, [el("div", {style: `width:${(100 * (v || 0)).toFixed(1)}%`})]),
      el("span", {text: value(v)}),
    ]);
  });
  box.replaceChildren(head, ...rows);
}

/* ---------------------------------------------------------------- filters */

async function loadFilters(layerName) {
  const f = await api(`/api/filters/${enc(layerName)}`);
  const [k, c, kh, kw] = f.shape;
  const s = Math.max(2, Math.floor(36 / Math.max(kh, kw)));
  $("#filter-info").textContent = `${k} filters of ${kh}×${kw}×${c}` +
    (f.rgb ? ", shown in colour" : f.shown_channels > 1 ? `, one gray tile per input channel` +
     (f.shown_channels < c ? ` (first ${f.shown_channels})` : "") : "") +
    (f.shown_filters < k ? `; first ${f.shown_filters}` : "") + "; numbered under each";
  const low = Math.min(...f.min), high = Math.max(...f.max);
  $("#filter-legend").replaceChildren(scaleLegend("gray", "its lowest weight", "its highest",
    `(each filter scaled by its own range; across the layer ${fmtNumber(low)} … ${fmtNumber(high)}; ` +
    "hover a filter for its own)"));
  const grid = $("#filters-grid");
  grid.replaceChildren();
  f.filters.forEach((b64, index) => {
    const bytes = decodeBytes(b64);
    const tiles = [];
    if (f.rgb) {
      tiles.push(hwcCanvas(bytes, kh, kw));
    } else {
      for (let ch = 0; ch < f.shown_channels; ch++) {
        tiles.push(grayCanvas(bytes.subarray(ch * kh * kw, (ch + 1) * kh * kw), kw, kh));
      }
    }
    for (const t of tiles) { t.style.width = `${kw * s}px`; t.style.height = `${kh * s}px`; }
    const range = `${fmtNumber(f.min[index])} … ${fmtNumber(f.max[index])}`;
    const node = el("div", {class: "filter", "data-index": index,
                            title: `filter ${index}: weights from ${range} (black to white)`,
                            role: "option", "aria-label": `filter ${index}, weights ${range}`},
                    [el("div", {class: "tiles"}, tiles), el("span", {class: "idx", text: `#${index}`})]);
    activates(node, () => report(loadTopImages(layerName, index)));
    node.classList.toggle("selected", index === state.filterIndex && layerName === state.filterLayer);
    grid.append(node);
  });
  state.filterLayer = layerName;
  state.filterTopLevel = f.top_level;
  state.filtersShown = `${layerName}@${f.version}`;
}

async function loadTopImages(layerName, index) {
  state.filterIndex = index;
  for (const node of document.querySelectorAll(".filter")) {
    node.classList.toggle("selected", Number(node.dataset.index) === index);
  }
  const box = $("#top-images");
  if (!state.filterTopLevel) {
    box.textContent = `${layerName} sits inside a residual block; the search runs on top-level layers.`;
    return;
  }
  box.textContent = "searching…";
  const result = await api(`/api/top-images?layer=${enc(layerName)}&filter=${index}&k=8`);
  box.replaceChildren(...result.items.map((item) => el("figure", {}, [
    activates(el("img", {src: `/api/images/${item.id}.png?scale=2`, alt: item.id, title: `open ${item.id}`}),
              () => report(selectImage(item.id))),
    el("figcaption", {text: `${item.class_name} · ${item.activation.toFixed(2)}`}),
  ])));
  if (!result.items.length) box.textContent = "no sample images to search";
}

/* The convnet explorer page: talks to the JSON API of convnet.web.app and draws with draw.js. */
"use strict";

const state = {
  info: null,
  layer: null,          // selected layer name
  imageId: null,        // current input (val-N or up-HASH)
  prediction: null,
  rf: null,             // {layer, map, row, col} of the clicked unit
  windowStep: 0,
  windowTimer: null,
  playing: true,
  filterLayer: null,
  filterIndex: null,
  events: null,
  curves: {loss: [], acc: [], valLoss: [], valAcc: []},
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

/* ---------------------------------------------------------------- model and layers */

async function loadModel() {
  const ticket = (state.modelTicket = (state.modelTicket || 0) + 1);
  const info = await api("/api/model");
  if (ticket !== state.modelTicket) return;  // a newer request is on its way
  state.info = info;
  const src = info.source;
  $("#model-title").textContent = `${src.name} · input ${shape(info.input_shape)} · ` +
    `${info.total_params.toLocaleString()} parameters`;
  const badge = $("#model-badge");
  const folder = (src.folder || "").split("/").filter(Boolean).pop() || "";
  badge.textContent = src.kind === "training" ? `training → ${folder}`
    : src.kind === "run" ? `run ${folder}` : src.note || src.kind;
  badge.title = src.folder || "";
  badge.className = `badge ${src.kind}`;
  $("#model-facts").textContent = `${info.layers.length} layers, ` +
    `${info.total_macs.toLocaleString()} multiply-adds per image, output ${shape(info.output_shape)}`;
  renderLayers(info);
  fillSelect($("#filter-layer"), info.layers.filter((l) => l.has_filters).map((l) => l.name));
  fillSelect($("#explain-layer"), info.layers.filter((l) => l.has_maps).map((l) => l.name),
             info.gradcam_default);
  fillSelect($("#explain-class"), ["predicted", ...info.class_names.map((n, i) => `${i}: ${n}`)]);
  $("#segment-panel").hidden = info.task !== "segment";
  $("#explain-panel").hidden = info.task === "segment";  // one score per pixel, not per image
  const names = info.layers.map((l) => l.name);
  if (!state.layer || !names.includes(state.layer)) {
    const first = info.layers.find((l) => l.arithmetic) || info.layers[0];
    state.layer = first ? first.name : null;
  }
  if (state.filterLayer && !names.includes(state.filterLayer)) state.filterLayer = null;
  selectLayer(state.layer);
  const convs = info.layers.filter((l) => l.has_filters);
  if (!state.filterLayer && convs.length) state.filterLayer = convs[0].name;
  if (state.filterLayer) {
    $("#filter-layer").value = state.filterLayer;
    await loadFilters(state.filterLayer);
  } else {
    $("#filters-grid").replaceChildren(el("span", {class: "muted small", text: "no conv layers"}));
  }
}

function fillSelect(select, values, chosen) {
  const previous = select.value;
  select.replaceChildren(...values.map((v) => el("option", {value: v, text: v})));
  if (chosen && values.includes(chosen)) select.value = chosen;
  else if (values.includes(previous)) select.value = previous;
}

function renderLayers(info) {
  const body = $("#layers tbody");
  body.replaceChildren();
  for (const layer of info.layers) {
    const rf = layer.output_shape.length === 3
      ? `${layer.receptive_field[0]}×${layer.receptive_field[1]}` : "all";
    const row = el("tr", {"data-layer": layer.name, class: layer.depth ? "nested" : "",
                          onclick: () => selectLayer(layer.name)}, [
      el("td", {}, [el("b", {text: layer.name}), el("br"),
                    el("span", {class: "type", text: layer.type})]),
      el("td", {class: "num", text: shape(layer.output_shape)}),
      el("td", {class: "formula", text: layer.formula || (layer.params ? layer.params.toLocaleString() : "0")}),
      el("td", {class: "num", text: rf, title: `jump ${layer.jump.join("×")}`}),
    ]);
    body.append(row);
  }
}

function selectLayer(name) {
  if (!state.info || !name) return;
  const layer = state.info.layers.find((l) => l.name === name);
  if (!layer) return;
  state.layer = name;
  for (const row of document.querySelectorAll("#layers tr[data-layer]")) {
    row.classList.toggle("selected", row.dataset.layer === name);
  }
  for (const row of document.querySelectorAll(".map-layer")) {
    row.classList.toggle("selected", row.dataset.layer === name);
  }
  $("#layer-name").textContent = `${layer.name} (${layer.type})`;
  const facts = [`input ${shape(layer.input_shape)} → output ${shape(layer.output_shape)}`];
  facts.push(layer.formula ? `parameters ${layer.formula}` : "no parameters");
  if (layer.output_shape.length === 3) {
    facts.push(`each output unit sees a ${layer.receptive_field.join("×")} window of the input` +
               ` (neighbouring units are ${layer.jump.join("×")} input pixels apart)`);
  }
  if (layer.macs) facts.push(`${layer.macs.toLocaleString()} multiply-adds per image`);
  $("#layer-info").replaceChildren(...facts.map((f) => el("div", {text: f})));
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
  if (layer.has_filters && state.filterLayer !== name) {
    state.filterLayer = name;
    $("#filter-layer").value = name;
    report(loadFilters(name));
  }
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

async function loadSamples() {
  const list = await api("/api/samples?limit=60");
  const gallery = $("#gallery");
  gallery.replaceChildren(...list.items.map((item) => el("img", {
    src: `/api/images/${item.id}.png?scale=2&v=${state.info ? state.info.version : 0}`,
    alt: `sample ${item.index}: ${item.class_name}`, title: `${item.id}: ${item.class_name}`,
    "data-id": item.id, onclick: () => report(selectImage(item.id)),
  })));
  $("#gallery-note").textContent = list.count
    ? `${list.count.toLocaleString()} images: ${list.description || ""}` : (list.note || "");
  return list;
}

async function selectImage(id) {
  state.imageId = id;
  state.rf = null;
  for (const img of document.querySelectorAll("#gallery img")) {
    img.classList.toggle("selected", img.dataset.id === id);
  }
  await refreshPrediction();
  await refreshExplain();
  await refreshSegment();
}

async function refreshPrediction() {
  if (!state.imageId) return;
  const p = await api(`/api/predict/${state.imageId}?top_k=5`);
  state.prediction = p;
  renderInput(p);
  renderPrediction(p);
  renderMaps(p.layers);
  if (state.rf) await showReceptiveField(state.rf.layer, state.rf.map, state.rf.row, state.rf.col);
  else $("#rf-box").hidden = true;
}

function renderInput(p) {
  const [c, h, w] = p.input.shape;
  const source = chwCanvas(decodeBytes(p.input.data), c, h, w);
  const canvas = $("#input-canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").drawImage(source, 0, 0);
  const label = p.label_name !== null && p.label_name !== undefined ? ` · true class ${p.label_name}` : "";
  $("#input-caption").textContent = `${p.description} · ${c}×${h}×${w}${label}`;
  $("#input-notes").textContent = p.notes && p.notes.length ? `converted: ${p.notes.join("; ")}` : "";
}

function renderPrediction(p) {
  const list = $("#prediction");
  list.replaceChildren(...p.top_k.map((t, i) => el("li", {class: i === 0 ? "top1" : "",
                                                          "data-class": t.name}, [
    el("span", {class: "name", text: t.name, title: t.name}),
    el("span", {class: "bar"}, [el("div", {style: `width:${(100 * t.probability).toFixed(1)}%`})]),
    el("span", {class: "p", text: pct(t.probability)}),
  ])));
}

function mapScale(h, w, count) {
  const target = count <= 16 ? 64 : count <= 32 ? 48 : 36;  // pixels on screen per map
  return Math.max(1, Math.floor(target / Math.max(h, w)));
}

function renderMaps(layers) {
  const perMap = $("#per-map").checked;
  const container = $("#maps");
  container.replaceChildren();
  for (const layer of layers) {
    const label = el("div", {class: "label"}, [el("b", {text: layer.name}),
      el("span", {class: "muted", text: `${layer.type} ${shape(layer.shape)}` +
                  (layer.shown < layer.count ? ` (first ${layer.shown})` : "")})]);
    const list = el("div", {class: "map-list"});
    if (layer.kind === "maps") {
      const low = Math.min(...layer.min), high = Math.max(...layer.max);
      const s = mapScale(layer.height, layer.width, layer.shown);
      layer.data.forEach((b64, m) => {
        const bytes = decodeBytes(b64);
        const lo = layer.min[m], hi = layer.max[m];
        const remap = perMap || high === low ? null
          : (b) => Math.round(((lo + (b / 255) * (hi - lo)) - low) / (high - low) * 255);
        const canvas = grayCanvas(bytes, layer.width, layer.height, remap);
        canvas.style.width = `${layer.width * s}px`;
        canvas.style.height = `${layer.height * s}px`;
        canvas.title = `${layer.name} map ${m}: ${lo.toPrecision(3)} … ${hi.toPrecision(3)}`;
        const wrap = el("div", {class: "map", "data-map": m}, [canvas]);
        canvas.addEventListener("click", (event) => {
          const col = Math.min(layer.width - 1, Math.floor(event.offsetX / canvas.clientWidth * layer.width));
          const row = Math.min(layer.height - 1, Math.floor(event.offsetY / canvas.clientHeight * layer.height));
          selectLayer(layer.name);
          report(showReceptiveField(layer.name, m, row, col));
        });
        list.append(wrap);
      });
    } else {
      const canvas = vectorCanvas(decodeBytes(layer.data));
      canvas.title = `${layer.name}: ${layer.count} values from ${layer.min.toPrecision(3)} to ` +
                     `${layer.max.toPrecision(3)}`;
      list.append(el("div", {class: "vector", style: "width:100%"}, [canvas]));
    }
    const row = el("div", {class: "map-layer", "data-layer": layer.name}, [label, list]);
    row.classList.toggle("selected", layer.name === state.layer);
    container.append(row);
  }
}

async function showReceptiveField(layerName, mapIndex, row, col) {
  const rf = await api(`/api/receptive-field?layer=${encodeURIComponent(layerName)}&row=${row}&col=${col}`);
  state.rf = {layer: layerName, map: mapIndex, row, col};
  for (const old of document.querySelectorAll(".map .unit")) old.remove();
  const mapRow = document.querySelector(`.map-layer[data-layer="${layerName}"]`);
  const wrap = mapRow && mapRow.querySelector(`.map[data-map="${mapIndex}"]`);
  const layer = state.prediction && state.prediction.layers.find((l) => l.name === layerName);
  if (wrap && layer) {
    wrap.append(el("div", {class: "unit", style:
      `left:${(100 * col) / layer.width}%;top:${(100 * row) / layer.height}%;` +
      `width:${100 / layer.width}%;height:${100 / layer.height}%`}));
  }
  const [H, W] = rf.input_hw;
  const box = $("#rf-box");
  const c = rf.clipped;
  box.style.left = `${(100 * c.left) / W}%`;
  box.style.top = `${(100 * c.top) / H}%`;
  box.style.width = `${(100 * c.width) / W}%`;
  box.style.height = `${(100 * c.height) / H}%`;
  box.hidden = false;
  const outside = rf.top < 0 || rf.left < 0 || rf.top + rf.height > H || rf.left + rf.width > W;
  $("#rf-caption").textContent = `${layerName} map ${mapIndex}, unit (${row}, ${col}) sees input ` +
    `rows ${rf.top}…${rf.top + rf.height - 1}, cols ${rf.left}…${rf.left + rf.width - 1} ` +
    `(${rf.height}×${rf.width})` + (outside ? ", partly zero padding" : "");
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  const result = await api("/api/images", {method: "POST", body: form});
  for (const img of document.querySelectorAll("#gallery img")) img.classList.remove("selected");
  await selectImage(result.id);
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
  $("#gradcam-caption").textContent = `Grad-CAM at ${e.gradcam_layer} ` +
    `(${shape(e.gradcam_shape)}) for "${e.class_name}" (${pct(e.probability)})`;
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
  const f = await api(`/api/filters/${encodeURIComponent(layerName)}`);
  const [k, c, kh, kw] = f.shape;
  const s = Math.max(2, Math.floor(36 / Math.max(kh, kw)));
  $("#filter-info").textContent = `${k} filters of ${kh}×${kw}×${c}` +
    (f.rgb ? ", shown in colour" : f.shown_channels > 1 ? `, one gray tile per input channel` +
     (f.shown_channels < c ? ` (first ${f.shown_channels})` : "") : "") +
    (f.shown_filters < k ? `; first ${f.shown_filters}` : "") + "; each scaled by its own range";
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
    const node = el("div", {class: "filter", "data-index": index, title: `filter ${index}`,
                            onclick: () => report(loadTopImages(layerName, index))},
                    [...tiles, el("span", {class: "idx", text: index})]);
    node.classList.toggle("selected", index === state.filterIndex && layerName === state.filterLayer);
    grid.append(node);
  });
  state.filterLayer = layerName;
  state.filterTopLevel = f.top_level;
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
  const result = await api(`/api/top-images?layer=${encodeURIComponent(layerName)}&filter=${index}&k=8`);
  box.replaceChildren(...result.items.map((item) => el("figure", {}, [
    el("img", {src: `/api/images/${item.id}.png?scale=2`, alt: item.id, title: `open ${item.id}`,
               onclick: () => report(selectImage(item.id))}),
    el("figcaption", {text: `${item.class_name} · ${item.activation.toFixed(2)}`}),
  ])));
  if (!result.items.length) box.textContent = "no sample images to search";
}

/* ---------------------------------------------------------------- training */

async function loadTraining() {
  const t = await api("/api/train");
  const ch = t.choices;
  fillSelect($("#train-model"), ch.models);
  fillSelect($("#train-dataset"), ch.datasets);
  $("#train-model").options[0].textContent = `current (${ch.current_model})`;
  $("#train-dataset").options[0].textContent = `current (${ch.current_dataset})`;
  $("#train-dataset").options[0].title = ch.default_dataset;
  if (t.session || t.watch) connectEvents();
}

function setTraining(running) {
  $("#train-start").disabled = running;
  $("#train-stop").disabled = !running;
}

function status(text) {
  $("#train-status").textContent = text;
}

function resetCurves() {
  state.curves = {loss: [], acc: [], valLoss: [], valAcc: []};
  queueCharts();
}

function smooth(points, alpha = 0.85) {
  let value = null;
  return points.map(([x, y]) => {
    value = value === null ? y : alpha * value + (1 - alpha) * y;
    return [x, value];
  });
}

function queueCharts() {
  if (state.chartQueued) return;
  state.chartQueued = true;
  requestAnimationFrame(() => {
    state.chartQueued = false;
    const c = state.curves;
    const train = (points) => (state.watching ? points : smooth(points));
    drawChart($("#loss-chart"), [{points: train(c.loss), cls: "train"},
                                 {points: c.valLoss, cls: "val", dots: true}]);
    drawChart($("#acc-chart"), [{points: train(c.acc), cls: "train"},
                                {points: c.valAcc, cls: "val", dots: true}],
              {format: (v) => pct(v), yMin: 0, yMax: 1});
  });
}

function log(message) {
  const pre = $("#train-log");
  pre.textContent += message + "\n";
  pre.scrollTop = pre.scrollHeight;
}

function connectEvents() {
  if (state.events) state.events.close();
  resetCurves();
  $("#train-log").textContent = "";
  const source = new EventSource("/api/train/events");
  state.events = source;
  const on = (name, handler) => source.addEventListener(name, (event) => {
    handler(event.data ? JSON.parse(event.data) : {});
  });
  on("idle", () => source.close());
  on("watch", (d) => {
    state.watching = true;
    state.plannedEpochs = d.epochs;
    status(`watching ${d.folder}: epochs and checkpoints appear here as \`convnet train\` ` +
           "writes them");
  });
  on("starting", (d) => {
    state.watching = false;
    setTraining(true);
    status(`starting ${d.config.model} on ${d.config.dataset}: loading data…`);
  });
  on("start", (d) => {
    setTraining(true);
    state.totalSteps = d.total_steps;
    status(`training ${d.config.model} on ${d.config.dataset} for ${d.config.epochs} epoch(s) ` +
           `→ ${d.out_dir}`);
    report(reloadAll(true));
  });
  on("batch", (d) => {
    state.curves.loss.push([d.step, d.loss]);
    state.curves.acc.push([d.step, d.accuracy]);
    $("#ips").textContent = Math.round(d.images_per_s).toLocaleString();
    $("#train-step").textContent = `${d.step} / ${d.total_steps} (epoch ${d.epoch})`;
    $("#train-progress div").style.width = `${(100 * d.step) / d.total_steps}%`;
    queueCharts();
  });
  on("epoch", (d) => {
    if (state.watching) {  // no batch events from another process: plot the epoch means
      state.curves.loss.push([d.step, d.train_loss]);
      state.curves.acc.push([d.step, d.train_accuracy]);
      $("#train-step").textContent = `epoch ${d.epoch}` +
        (state.plannedEpochs ? ` / ${state.plannedEpochs}` : "");
      $("#ips").textContent = Math.round(d.images_per_s).toLocaleString();
    }
    state.curves.valLoss.push([d.step, d.val_loss]);
    state.curves.valAcc.push([d.step, d.val_accuracy]);
    $("#val-acc").textContent = pct(d.val_accuracy);
    if (state.totalSteps) {
      $("#train-step").textContent = `${d.step} / ${state.totalSteps} (epoch ${d.epoch})`;
      $("#train-progress div").style.width = `${(100 * d.step) / state.totalSteps}%`;
    }
    queueCharts();
  });
  on("snapshot", () => liveRefresh());
  on("log", (d) => log(d.message));
  on("stopping", () => status("stopping after this step…"));
  on("stopped", (d) => {
    setTraining(false);
    status(`stopped after ${d.epochs_done} full epoch(s); checkpoint in ${d.out_dir}`);
    report(loadModel());
    liveRefresh();
  });
  on("finished", (d) => {
    setTraining(false);
    status(`finished: best val accuracy ${pct(d.best_val_accuracy)} · ${d.out_dir}`);
    $("#train-progress div").style.width = "100%";
    report(loadModel());
    liveRefresh();
  });
  on("failure", (d) => {
    setTraining(false);
    status(`failed: ${d.message}`);
    showError(`training failed: ${d.message}`);
  });
  on("done", () => source.close());
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) setTraining(false);
  };
}

async function startTraining(event) {
  event.preventDefault();
  const body = {
    model: $("#train-model").value, dataset: $("#train-dataset").value,
    epochs: Number($("#train-epochs").value), batch_size: Number($("#train-batch").value),
    lr: Number($("#train-lr").value),
  };
  setTraining(true);
  try {
    await api("/api/train", {method: "POST", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify(body)});
  } catch (error) {
    setTraining(false);
    throw error;
  }
  connectEvents();
}

/* Refresh what depends on the weights, at most one refresh at a time. */
async function liveRefresh() {
  if (state.live.busy || state.reloading) { state.live.pending = true; return; }
  state.live.busy = true;
  try {
    do {
      state.live.pending = false;
      await refreshPrediction();
      if (state.filterLayer) await loadFilters(state.filterLayer);
      await refreshExplain();
      await refreshSegment();
    } while (state.live.pending);
  } catch (error) {
    showError(error.message);
  } finally {
    state.live.busy = false;
  }
}

async function reloadAll(newModel) {
  state.reloading = true;
  try {
    await loadModel();
    const list = await loadSamples();
    const keep = state.imageId && !newModel;
    const first = list.items.length ? list.items[0].id : null;
    if (!keep && !first) state.imageId = null;  // an upload for the old model would not fit
    const next = keep ? state.imageId : first;
    if (next) await selectImage(next);
  } finally {
    state.reloading = false;
  }
  if (state.live.pending) liveRefresh();
}

/* ---------------------------------------------------------------- wiring */

function wire() {
  $("#upload-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) report(upload(file));
    event.target.value = "";
  });
  $("#per-map").addEventListener("change", () => {
    if (state.prediction) {
      renderMaps(state.prediction.layers);
      if (state.rf) report(showReceptiveField(state.rf.layer, state.rf.map, state.rf.row, state.rf.col));
    }
  });
  $("#filter-layer").addEventListener("change", (e) => report(loadFilters(e.target.value)));
  $("#explain-class").addEventListener("change", () => report(refreshExplain()));
  $("#explain-layer").addEventListener("change", () => report(refreshExplain()));
  $("#window-play").addEventListener("click", () => {
    state.playing = !state.playing;
    $("#window-play").textContent = state.playing ? "pause" : "play";
  });
  $("#train-form").addEventListener("submit", (e) => report(startTraining(e)));
  $("#train-stop").addEventListener("click", () => report(api("/api/train/stop", {method: "POST"})));
}

async function main() {
  wire();
  queueCharts();
  await loadModel();
  const list = await loadSamples();
  if (list.items.length) await selectImage(list.items[0].id);
  await loadTraining();
  document.body.dataset.ready = "1";
}

report(main());

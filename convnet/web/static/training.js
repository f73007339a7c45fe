/* Training from the page: choose the optimizer, learning rate and epochs, start and stop a
   run, change its learning rate while it trains, and watch honest charts: the mean and the
   maximum loss of the batches between two updates (nothing smoothed away), a log scale, and a
   flag when the loss explodes. */
"use strict";

const DEFAULT_LR = {sgd: 0.05, adam: 0.002};
const curves = {loss: [], lossMax: [], acc: [], valLoss: [], valAcc: []};

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
  $("#train-lr-set").disabled = !running;
}

function status(text) {
  $("#train-status").textContent = text;
}

function setState(name) {
  const pill = $("#train-state");
  pill.textContent = name;
  pill.className = `state ${name}`;
}

function flag(text) {
  const box = $("#train-flag");
  box.hidden = !text;
  box.textContent = text || "";
}

function resetCurves() {
  for (const key of Object.keys(curves)) curves[key] = [];
  queueCharts();
}

function queueCharts() {
  if (state.chartQueued) return;
  state.chartQueued = true;
  requestAnimationFrame(() => {
    state.chartQueued = false;
    const log = $("#loss-log").checked;
    drawChart($("#loss-chart"), [{points: curves.lossMax, cls: "max"},
                                 {points: curves.loss, cls: "train"},
                                 {points: curves.valLoss, cls: "val", dots: true}], {log});
    drawChart($("#acc-chart"), [{points: curves.acc, cls: "train"},
                                {points: curves.valAcc, cls: "val", dots: true}],
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
  flag("");
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
    setState("watching");
    status(`watching ${d.folder}: epochs and checkpoints appear here as \`convnet train\` ` +
           "writes them");
  });
  on("starting", (d) => {
    state.watching = false;
    setTraining(true);
    setState("starting");
    flag("");
    status(`starting ${d.config.model} on ${d.config.dataset} (${d.config.optimizer}, learning ` +
           `rate ${d.config.lr}): loading data…`);
  });
  on("start", (d) => {
    setTraining(true);
    setState("running");
    state.totalSteps = d.total_steps;
    $("#train-lr-live").value = d.config.lr;
    status(`training ${d.config.model} on ${d.config.dataset} for ${d.config.epochs} epoch(s) ` +
           `with ${d.config.optimizer}, learning rate ${d.config.lr} → ${d.out_dir}`);
    report(reloadAll(true));
  });
  on("batch", (d) => {
    const mean = d.loss_mean !== undefined ? d.loss_mean : d.loss;
    curves.loss.push([d.step, mean === null ? NaN : mean]);
    curves.lossMax.push([d.step, d.loss_max === null || d.loss_max === undefined ? NaN : d.loss_max]);
    curves.acc.push([d.step, d.accuracy_mean !== undefined ? d.accuracy_mean : d.accuracy]);
    $("#ips").textContent = Math.round(d.images_per_s).toLocaleString();
    $("#train-step").textContent = `${d.step} / ${d.total_steps} (epoch ${d.epoch})`;
    $("#train-progress div").style.width = `${(100 * d.step) / d.total_steps}%`;
    $("#train-lr-now").textContent = `now ${fmtNumber(d.lr, 3)} (with the schedule)`;
    queueCharts();
  });
  on("exploding", (d) => flag(d.message));
  on("lr", (d) => log(`learning rate ${d.lr} asked for at step ${d.step}`));
  on("epoch", (d) => {
    if (state.watching) {  // no batch events from another process: plot the epoch means
      curves.loss.push([d.step, d.train_loss]);
      curves.acc.push([d.step, d.train_accuracy]);
      $("#train-step").textContent = `epoch ${d.epoch}` +
        (state.plannedEpochs ? ` / ${state.plannedEpochs}` : "");
      $("#ips").textContent = Math.round(d.images_per_s).toLocaleString();
    }
    curves.valLoss.push([d.step, d.val_loss]);
    curves.valAcc.push([d.step, d.val_accuracy]);
    $("#val-acc").textContent = pct(d.val_accuracy);
    $("#val-acc-label").textContent = `validation accuracy (epoch ${d.epoch}, last checkpoint)`;
    if (state.totalSteps) {
      $("#train-step").textContent = `${d.step} / ${state.totalSteps} (epoch ${d.epoch})`;
      $("#train-progress div").style.width = `${(100 * d.step) / state.totalSteps}%`;
    }
    queueCharts();
  });
  on("snapshot", () => liveRefresh());
  on("log", (d) => log(d.message));
  on("stopping", () => { setState("stopping"); status("stopping after this step…"); });
  on("stopped", (d) => {
    setTraining(false);
    setState("stopped");
    status(`stopped after ${d.epochs_done} full epoch(s); checkpoint in ${d.out_dir}`);
    report(loadModel());
    liveRefresh();
  });
  on("finished", (d) => {
    setTraining(false);
    setState("finished");
    status(`finished: best validation accuracy ${pct(d.best_val_accuracy)} (best checkpoint) · ${d.out_dir}`);
    $("#train-progress div").style.width = "100%";
    report(loadModel());
    liveRefresh();
  });
  on("failure", (d) => {
    setTraining(false);
    setState("failed");
    status(`failed: ${d.message}`);
    if (d.diverged) flag(d.headline);
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
    optimizer: $("#train-optimizer").value,
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

async function setLiveLr() {
  const lr = Number($("#train-lr-live").value);
  await api("/api/train/lr", {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify({lr})});
  $("#train-lr-now").textContent = `set to ${lr}: applied from the next step`;
}

/* Refresh what depends on the weights, at most one refresh at a time. */
async function liveRefresh() {
  if (state.live.busy || state.reloading) { state.live.pending = true; return; }
  state.live.busy = true;
  try {
    do {
      state.live.pending = false;
      state.maps = new Map();
      await refreshPrediction();
      if (state.info && state.info.maps_per_stage && state.stage) await showStageMaps(state.stage);
      if (state.unit) await refreshUnit();
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

/* A new model (a run started from the page): keep an uploaded image or a drawing when it
   still fits the model's input; samples change with the model's own validation split. */
async function reloadAll(newModel) {
  state.reloading = true;
  const before = state.info ? state.info.input_shape.join("x") : null;
  try {
    await loadModel();
    const list = await loadSamples();
    const sameInput = before === state.info.input_shape.join("x");
    const upload = state.imageId && state.imageId.startsWith("up-");
    const keep = state.imageId && (!newModel || (upload && sameInput));
    const first = list.items.length ? list.items[0].id : null;
    if (!keep && !first) state.imageId = null;  // an upload for the old model would not fit
    const next = keep ? state.imageId : first;
    if (next) await selectImage(next);
  } finally {
    state.reloading = false;
  }
  if (state.live.pending) liveRefresh();
}

function wireTraining() {
  $("#train-form").addEventListener("submit", (e) => report(startTraining(e)));
  $("#train-stop").addEventListener("click", () => report(api("/api/train/stop", {method: "POST"})));
  $("#train-lr-set").addEventListener("click", () => report(setLiveLr()));
  $("#loss-log").addEventListener("change", queueCharts);
  $("#train-optimizer").addEventListener("change", (event) => {
    $("#train-lr").value = DEFAULT_LR[event.target.value];
  });
}

/* Wiring and the first load: the page is ready (body[data-ready]) once the model, the samples
   and the first prediction with its maps are drawn; explanations and training follow. */
"use strict";

function wire() {
  $("#upload-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) report(upload(file));
    event.target.value = "";
  });
  $("#upload-label").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("#upload-input").click(); }
  });
  $("#per-map").addEventListener("change", () => {
    if (state.prediction) {
      renderMaps();
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
  wireNetwork();
  wirePlayground();
  wireDrawing();
  wireTraining();
  drawLegends();
}

async function main() {
  wire();
  queueCharts();
  // The model and the samples are asked for at once; the filters, the explanation, the
  // playground and the training choices come after the page is ready.
  const model = api("/api/model");
  const samples = api("/api/samples?limit=60");
  await loadModel({request: model, deferFilters: true});
  const list = await loadSamples(samples);
  if (list.items.length) await selectImage(list.items[0].id, {skipExplain: true});
  document.body.dataset.ready = "1";
  document.body.dataset.readyAt = String(Math.round(performance.now()));  // since navigation
  await Promise.all([
    state.filterLayer ? showFilters(state.filterLayer) : null, updatePlayground(),
    state.imageId ? refreshExplain() : null, loadTraining()]);
  document.body.dataset.settled = "1";
}

report(main());

/* The arithmetic playground: N, F, S, P, D (and transposed) in, the engine's answer out
   (/api/arithmetic: output size, the formula with its numbers, where each window lands, or the
   refusal with its fixes). The page draws the square grid of that axis and slides the window. */
"use strict";

const pg = {data: null, step: 0, timer: null, ticket: 0};

function pgValue(id) {
  return Number($(id).value);
}

async function updatePlayground() {
  const transposed = $("#pg-transposed").checked;
  $("#pg-op-label").hidden = !transposed;
  const params = new URLSearchParams({n: pgValue("#pg-n"), f: pgValue("#pg-f"), s: pgValue("#pg-s"),
                                      p: pgValue("#pg-p"), d: pgValue("#pg-d")});
  if (transposed) {
    params.set("transposed", "true");
    params.set("output_padding", pgValue("#pg-op"));
  }
  const ticket = (pg.ticket += 1);
  let data;
  try {
    data = await api(`/api/arithmetic?${params}`);
  } catch (error) {
    if (ticket !== pg.ticket) return;
    pg.data = null;
    $("#pg-error").hidden = false;
    $("#pg-error").textContent = error.message;
    $("#pg-output").textContent = "–";
    $("#pg-formula").textContent = "";
    $("#pg-svg").replaceChildren();
    return;
  }
  if (ticket !== pg.ticket) return;
  pg.data = data;
  pg.step = 0;
  renderPlayground();
}

function renderPlayground() {
  const data = pg.data;
  if (!data) return;
  $("#pg-lecture").textContent = data.transposed
    ? `N_out = ${data.lecture}` : `output = ${data.lecture}`;
  $("#pg-formula").textContent = data.formula || "";
  $("#pg-output").textContent = data.output === null || data.output === undefined ? "–"
    : data.transposed ? `${data.output} (from ${data.n})` : `${data.output}×${data.output}`;
  $("#pg-dropped").textContent = data.dropped
    ? `(floored: the last ${data.dropped} pixel(s) of each row and column never covered)` : "";
  $("#pg-dilation").textContent = data.dilation_text || "";
  const error = $("#pg-error");
  error.hidden = data.fits !== false;
  error.textContent = data.fits === false
    ? `Does not fit. The engine says: ${data.error}` +
      (data.output ? ` Drawn below as PyTorch would floor it.` : "") : "";
  drawPlayground();
}

function drawPlayground() {
  const data = pg.data;
  const svg = $("#pg-svg");
  svg.replaceChildren();
  if (!data || !data.output) return;
  if (data.transposed) drawScatter(svg, data); else drawSlide(svg, data);
}

function gridCells(svg, x0, y0, count, cell, classOf, label) {
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < count; j++) {
      svg.append(svgEl("rect", {x: x0 + j * cell, y: y0 + i * cell, width: cell, height: cell,
                                class: classOf(i, j), "data-i": i, "data-j": j}));
    }
  }
  if (label) svg.append(svgEl("text", {x: x0, y: y0 - 6}, label));
}

/* A window sliding over the padded N x N input, the output grid beside it. */
function drawSlide(svg, data) {
  const padded = data.padded, out = data.output, p = data.p;
  const cell = Math.max(7, Math.min(24, Math.floor(300 / padded)));
  const outCell = Math.max(7, Math.min(24, Math.floor(200 / out)));
  const inLabel = `input ${data.n}×${data.n}` + (p ? `, padding ${p} (hatched: zeros)` : ", no padding");
  const left = 8, top = 22;
  const gap = Math.max(50, inLabel.length * 6.2 - padded * cell + 24);  // labels never overlap
  const width = left + padded * cell + gap + Math.max(out * outCell, 70) + 10;
  const height = top + Math.max(padded * cell, out * outCell) + 8;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const positions = out * out;
  const k = pg.step % positions;
  const r = Math.floor(k / out), c = k % out;
  const r0 = data.starts[r], c0 = data.starts[c];
  const covered = data.starts[data.starts.length - 1] + data.f_effective;  // padded cells reached
  const isPad = (i) => i < p || i >= p + data.n;
  gridCells(svg, left, top, padded, cell, (i, j) => {
    if (isPad(i) || isPad(j)) return "pad";
    if (i >= covered || j >= covered) return "cell uncovered";
    return "cell";
  }, inLabel);
  for (const tu of data.taps) {
    for (const tv of data.taps) {
      svg.append(svgEl("rect", {x: left + (c0 + tv) * cell, y: top + (r0 + tu) * cell,
                                width: cell, height: cell, class: "tap"}));
    }
  }
  svg.append(svgEl("rect", {x: left + c0 * cell, y: top + r0 * cell, width: data.f_effective * cell,
                            height: data.f_effective * cell, class: "window", id: "pg-window"}));
  const ox = left + padded * cell + gap;
  svg.append(svgEl("text", {x: ox - 30, y: top + (padded * cell) / 2}, "→"));
  gridCells(svg, ox, top, out, outCell, (i, j) => (i === r && j === c ? "out-cell out-on" : "out-cell"),
            `output ${out}×${out}`);
  $("#pg-caption").textContent = `output (${r}, ${c}) ← padded input rows ${r0}–${r0 + data.f_effective - 1}, ` +
    `cols ${c0}–${c0 + data.f_effective - 1}` + (data.d > 1 ? `, taps every ${data.d}` : "") +
    ` (window ${k + 1} of ${positions})`;
}

/* A transposed convolution: each input unit scatters its filter onto the output. */
function drawScatter(svg, data) {
  const n = data.n, out = data.output;
  const cell = Math.max(10, Math.min(22, Math.floor(180 / n)));
  const outCell = Math.max(7, Math.min(18, Math.floor(300 / out)));
  const left = 8, top = 22, gap = 50;
  const width = left + n * cell + gap + out * outCell + 10;
  const height = top + Math.max(n * cell, out * outCell) + 8;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const k = pg.step % (n * n);
  const i = Math.floor(k / n), j = k % n;
  const rows = data.scatter[i].filter((o) => o !== null);
  const cols = data.scatter[j].filter((o) => o !== null);
  gridCells(svg, left, top, n, cell, (a, b) => (a === i && b === j ? "out-cell out-on" : "cell"),
            `input ${n}×${n}`);
  const ox = left + n * cell + gap;
  svg.append(svgEl("text", {x: ox - gap + 16, y: top + (n * cell) / 2}, "→"));
  gridCells(svg, ox, top, out, outCell,
            (a, b) => (rows.includes(a) && cols.includes(b) ? "cell scatter" : "cell"),
            `output ${out}×${out}`);
  $("#pg-caption").textContent = `input (${i}, ${j}) adds its ${data.f}×${data.f} stamp to output rows ` +
    `${rows.join(", ") || "none (cropped)"} × cols ${cols.join(", ") || "none"}` +
    ` (o = i·S − P + k·D; outside 0…${out - 1} is cropped)`;
}

function wirePlayground() {
  for (const id of ["#pg-n", "#pg-f", "#pg-s", "#pg-p", "#pg-d", "#pg-op", "#pg-transposed"]) {
    $(id).addEventListener("input", () => report(updatePlayground()));
  }
  $("#pg-step").addEventListener("click", () => { pg.step += 1; drawPlayground(); });
  $("#pg-play").addEventListener("click", () => {
    if (pg.timer) {
      clearInterval(pg.timer);
      pg.timer = null;
      $("#pg-play").textContent = "play";
    } else {
      pg.timer = setInterval(() => { pg.step += 1; drawPlayground(); }, 600);
      $("#pg-play").textContent = "pause";
    }
  });
}

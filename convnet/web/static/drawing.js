/* A drawing canvas for single-channel models: mouse, touch and pen draw dark ink on white,
   as on paper. "Predict" uploads it as a PNG; the server inverts it and centres it as the
   model's training digits were (convnet.data.prepare) and says so in its notes. */
"use strict";

const ink = {drawing: false, last: null, strokes: 0};

function clearDrawing() {
  const canvas = $("#draw-canvas");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ink.strokes = 0;
}

function drawAt(event) {
  const canvas = $("#draw-canvas");
  const rect = canvas.getBoundingClientRect();
  const point = [(event.clientX - rect.left) * canvas.width / rect.width,
                 (event.clientY - rect.top) * canvas.height / rect.height];
  const ctx = canvas.getContext("2d");
  ctx.strokeStyle = "#111";
  ctx.lineWidth = canvas.width / 12;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  const from = ink.last || point;
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(point[0], point[1]);
  ctx.stroke();
  ink.last = point;
}

async function predictDrawing() {
  if (!ink.strokes) throw new Error("draw something first");
  const canvas = $("#draw-canvas");
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const result = await upload(new File([blob], "drawing.png", {type: "image/png"}),
                              "?invert=auto&centre=auto");
  $("#draw-note").textContent = result.notes.length ? result.notes.join("; ")
    : "used as drawn (no conversion needed)";
  return result;
}

function wireDrawing() {
  const canvas = $("#draw-canvas");
  clearDrawing();
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    ink.drawing = true;
    ink.last = null;
    ink.strokes += 1;
    drawAt(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (ink.drawing) drawAt(event);
  });
  const stop = () => { ink.drawing = false; ink.last = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("#draw-clear").addEventListener("click", clearDrawing);
  $("#draw-predict").addEventListener("click", () => report(predictDrawing()));
}

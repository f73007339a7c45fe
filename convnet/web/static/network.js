/* The network view of a graph model: boxes and arrows laid out by the server
   (/api/network, convnet.viz.network), blocks that open and close, zoom and pan, and a search
   by layer name. Clicking a box selects that node everywhere on the page. */
"use strict";

const net = {layout: null, collapsed: null, box: null, drag: null};

async function loadNetwork(collapsed) {
  $("#network-panel").hidden = false;
  const wanted = collapsed !== undefined ? collapsed : (net.collapsed ? [...net.collapsed] : null);
  const query = wanted === null ? "" : `?collapsed=${enc(wanted.join(","))}`;
  const layout = await api(`/api/network${query}`);
  net.layout = layout;
  net.collapsed = new Set(layout.blocks.filter((b) => b.collapsed).map((b) => b.id));
  const stages = state.info.stages.length;
  $("#network-facts").textContent = `${stages} nodes, ${layout.blocks.length} blocks` +
    (net.collapsed.size ? `, ${net.collapsed.size} closed` : "");
  drawNetwork();
}

function blockOf(name) {
  return net.layout ? net.layout.blocks.find((b) => b.members.includes(name)) : null;
}

function drawNetwork() {
  const layout = net.layout;
  const svg = $("#network-svg");
  svg.replaceChildren();
  const defs = svgEl("defs");
  const marker = svgEl("marker", {id: "arrow", viewBox: "0 0 8 8", refX: 7, refY: 4,
                                  markerWidth: 7, markerHeight: 7, orient: "auto"});
  marker.append(svgEl("path", {d: "M0,0 L8,4 L0,8 z", class: "arrowhead"}));
  defs.append(marker);
  svg.append(defs);
  const boxes = new Map(layout.nodes.map((n) => [n.id, n]));
  // Open blocks: a frame behind their members, with a handle that closes them.
  for (const block of layout.blocks) {
    if (block.collapsed) continue;
    const members = block.members.map((m) => boxes.get(m)).filter(Boolean);
    if (!members.length) continue;
    const x0 = Math.min(...members.map((n) => n.x)) - 8, x1 = Math.max(...members.map((n) => n.x + n.w)) + 8;
    const y0 = Math.min(...members.map((n) => n.y)) - 16, y1 = Math.max(...members.map((n) => n.y + n.h)) + 6;
    const frame = svgEl("g", {class: "block-frame", "data-block": block.id, role: "button",
                              "aria-label": `close ${block.id}`});
    frame.append(svgEl("rect", {x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 6}));
    frame.append(svgEl("text", {x: x0 + 6, y: y0 + 11}, `▾ ${block.title} (close)`));
    frame.addEventListener("click", () => report(toggleBlock(block.id)));
    svg.append(frame);
  }
  for (const edge of layout.edges) {
    const pts = edge.points;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${p[0]},${p[1]}`).join("");
    svg.append(svgEl("path", {d, class: "edge", "marker-end": "url(#arrow)",
                              "data-source": edge.source, "data-target": edge.target}));
    const a = pts[pts.length - 2], b = pts[pts.length - 1];
    svg.append(svgEl("text", {x: (a[0] + b[0]) / 2 + 4, y: (a[1] + b[1]) / 2 + 3, class: "edge-label"},
                     edge.label));
  }
  for (const node of layout.nodes) {
    const g = svgEl("g", {class: `node ${node.kind}`, "data-id": node.id, tabindex: "0",
                          role: "button", "aria-label": node.kind === "block"
                            ? `${node.label}, output ${shape(node.shape)}: open it`
                            : `${node.id} (${node.type}), output ${shape(node.shape)}`});
    g.append(svgEl("rect", {x: node.x, y: node.y, width: node.w, height: node.h, rx: 5}));
    const title = node.kind === "block" ? `▸ ${node.title}` : node.label;
    g.append(svgEl("text", {x: node.x + node.w / 2, y: node.y + 15, class: "name"}, title));
    const sub = node.kind === "block" ? `${node.members.length} layers → ${shape(node.shape)}`
      : node.kind === "input" ? `input ${shape(node.shape)}` : node.type;
    g.append(svgEl("text", {x: node.x + node.w / 2, y: node.y + 30, class: "sub"}, sub));
    const title2 = svgEl("title", {}, node.kind === "block" ? `${node.label}: click to open`
      : `${node.id} (${node.type}) → ${shape(node.shape)}`);
    g.append(title2);
    const open = () => {
      if (node.kind === "block") report(toggleBlock(node.id));
      else if (node.kind === "stage") selectStage(node.id);
    };
    g.addEventListener("click", open);
    g.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); }
    });
    svg.append(g);
  }
  if (!net.box) fitNetwork(); else applyView();
  highlightNetwork(state.stage);
  searchNetwork($("#network-search").value, false);
}

function applyView() {
  const b = net.box;
  $("#network-svg").setAttribute("viewBox", `${b.x} ${b.y} ${b.w} ${b.h}`);
}

/* The whole width in view (never enlarged past its natural size), from the top; a tall
   graph is then dragged or searched through. */
function fitNetwork() {
  const view = $("#network-view");
  const width = Math.max(view.clientWidth, 300), height = Math.max(view.clientHeight, 200);
  const w = Math.max(net.layout.width, width);
  const h = w * height / width;
  net.box = {x: -(w - net.layout.width) / 2, y: 0, w, h: Math.max(h, 1)};
  if (net.layout.height < h) net.box.y = -(h - net.layout.height) / 2;
  applyView();
}

function zoomNetwork(factor, cx, cy) {
  const b = net.box;
  if (!b) return;
  const px = cx === undefined ? b.x + b.w / 2 : cx;
  const py = cy === undefined ? b.y + b.h / 2 : cy;
  b.x = px - (px - b.x) * factor;
  b.y = py - (py - b.y) * factor;
  b.w *= factor;
  b.h *= factor;
  applyView();
}

function centreOn(id) {
  const node = net.layout.nodes.find((n) => n.id === id);
  if (!node) return;
  const b = net.box;
  b.x = node.x + node.w / 2 - b.w / 2;
  b.y = node.y + node.h / 2 - b.h / 2;
  applyView();
}

async function toggleBlock(id) {
  const closed = new Set(net.collapsed);
  const opening = closed.has(id);
  if (opening) closed.delete(id); else closed.add(id);
  await loadNetwork([...closed]);
  const block = net.layout.blocks.find((b) => b.id === id);
  centreOn(opening ? block.members[0] : id);  // the view follows the block just toggled
}

function highlightNetwork(name) {
  if (!net.layout) return;
  const block = blockOf(name);
  const shown = net.collapsed && block && net.collapsed.has(block.id) ? block.id : name;
  for (const g of document.querySelectorAll("#network-svg g.node")) {
    g.classList.toggle("selected", g.dataset.id === shown);
  }
}

/* Nodes whose names contain the text; Enter opens the first one's block and goes there. */
function searchNetwork(text, go) {
  const query = (text || "").trim().toLowerCase();
  for (const g of document.querySelectorAll("#network-svg g.node")) g.classList.remove("match");
  if (!query || !net.layout) { $("#network-found").textContent = ""; return []; }
  const matches = state.info.stages.filter((s) => s.name.toLowerCase().includes(query) ||
                                                  s.type.toLowerCase() === query);
  for (const stage of matches) {
    const block = blockOf(stage.name);
    const id = block && net.collapsed.has(block.id) ? block.id : stage.name;
    const g = document.querySelector(`#network-svg g.node[data-id="${CSS.escape(id)}"]`);
    if (g) g.classList.add("match");
  }
  $("#network-found").textContent = matches.length
    ? `${matches.length} found${matches.length > 1 ? ` (Enter: ${matches[0].name})` : ""}` : "none found";
  if (go && matches.length) report(goToStage(matches[0].name));
  return matches;
}

async function goToStage(name) {
  const block = blockOf(name);
  if (block && net.collapsed.has(block.id)) await toggleBlock(block.id);
  centreOn(name);
  selectStage(name);
  const g = document.querySelector(`#network-svg g.node[data-id="${CSS.escape(name)}"]`);
  if (g) g.focus({preventScroll: true});
}

function wireNetwork() {
  const view = $("#network-view");
  const svg = $("#network-svg");
  const toSvg = (event) => {
    const rect = svg.getBoundingClientRect();
    const b = net.box;
    return [b.x + (event.clientX - rect.left) / rect.width * b.w,
            b.y + (event.clientY - rect.top) / rect.height * b.h];
  };
  view.addEventListener("wheel", (event) => {
    if (!net.box) return;
    event.preventDefault();
    const [x, y] = toSvg(event);
    zoomNetwork(event.deltaY > 0 ? 1.15 : 1 / 1.15, x, y);
  }, {passive: false});
  view.addEventListener("pointerdown", (event) => {
    if (!net.box || event.target.closest("g.node, g.block-frame")) return;
    net.drag = {x: event.clientX, y: event.clientY, box: {...net.box}};
    view.setPointerCapture(event.pointerId);
  });
  view.addEventListener("pointermove", (event) => {
    if (!net.drag) return;
    const rect = svg.getBoundingClientRect();
    const d = net.drag;
    net.box.x = d.box.x - (event.clientX - d.x) / rect.width * d.box.w;
    net.box.y = d.box.y - (event.clientY - d.y) / rect.height * d.box.h;
    applyView();
  });
  const stop = () => { net.drag = null; };
  view.addEventListener("pointerup", stop);
  view.addEventListener("pointercancel", stop);
  view.addEventListener("keydown", (event) => {
    if (!net.box || event.target !== view) return;
    const step = net.box.w / 8;
    const moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
    if (event.key in moves) {
      event.preventDefault();
      net.box.x += moves[event.key][0];
      net.box.y += moves[event.key][1];
      applyView();
    } else if (event.key === "+" || event.key === "=") {
      zoomNetwork(1 / 1.25);
    } else if (event.key === "-") {
      zoomNetwork(1.25);
    }
  });
  $("#network-zoom-in").addEventListener("click", () => zoomNetwork(1 / 1.25));
  $("#network-zoom-out").addEventListener("click", () => zoomNetwork(1.25));
  $("#network-fit").addEventListener("click", () => fitNetwork());
  $("#network-expand").addEventListener("click", () => report(loadNetwork([]).then(fitNetwork)));
  $("#network-collapse").addEventListener("click", () =>
    report(loadNetwork(net.layout.blocks.map((b) => b.id)).then(fitNetwork)));
  const search = $("#network-search");
  search.addEventListener("input", () => searchNetwork(search.value, false));
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); searchNetwork(search.value, true); }
  });
}

// A task's DAG as SVG, laid out in layers from left to right.
//
// Plans are small (tens of steps), so a simple layered layout is enough and keeps the
// dashboard free of a vendored library: each step's column is its longest path from a
// source; within a column steps are ordered by the mean row of their predecessors.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 190;
const HEIGHT = 66;
const GAP_X = 60;
const GAP_Y = 18;

const INSTANCE = /^(.*)\[(\d+)\]$/;

const REFERENCE = /\$\{steps\.([^.}]+)/g;

/** The steps a step waits for: its needs and the steps its input refers to. */
function dependencies(step, ids) {
  const found = new Set(step.spec.needs || []);
  const walk = (value) => {
    if (typeof value === "string") {
      for (const match of value.matchAll(REFERENCE)) found.add(match[1]);
    } else if (value && typeof value === "object") {
      Object.values(value).forEach(walk);
    }
  };
  walk(step.spec.input);
  walk(step.spec.for_each);
  return [...found].filter((id) => ids.has(id) && id !== step.id);
}

/** The edges [from, to] of a task's steps: dependencies, and fan-out instances in their step. */
export function edgesOf(steps) {
  const ids = new Set(steps.map((s) => s.id));
  const instances = new Map();
  for (const step of steps) {
    const match = INSTANCE.exec(step.id);
    if (match && ids.has(match[1])) {
      if (!instances.has(match[1])) instances.set(match[1], []);
      instances.get(match[1]).push(step.id);
    }
  }
  const edges = [];
  for (const step of steps) {
    const match = INSTANCE.exec(step.id);
    if (match && ids.has(match[1])) {
      edges.push([match[1], step.id]); // an instance runs as part of its fan-out step
      continue;
    }
    for (const need of dependencies(step, ids)) {
      // A step that joins a fan-out waits for every instance of it.
      for (const from of instances.get(need) || [need]) edges.push([from, step.id]);
    }
  }
  return edges;
}

/** Positions {id: {x, y}} and the drawing's size for `ids` joined by `edges`. */
export function layout(ids, edges) {
  const preds = new Map(ids.map((id) => [id, []]));
  const succs = new Map(ids.map((id) => [id, []]));
  for (const [from, to] of edges) {
    preds.get(to).push(from);
    succs.get(from).push(to);
  }
  // Longest path from a source, in topological order (Kahn); plans have no cycles.
  const rank = new Map(ids.map((id) => [id, 0]));
  const waiting = new Map(ids.map((id) => [id, preds.get(id).length]));
  const queue = ids.filter((id) => waiting.get(id) === 0);
  while (queue.length) {
    const id = queue.shift();
    for (const next of succs.get(id)) {
      rank.set(next, Math.max(rank.get(next), rank.get(id) + 1));
      waiting.set(next, waiting.get(next) - 1);
      if (waiting.get(next) === 0) queue.push(next);
    }
  }
  const columns = [];
  for (const id of ids) (columns[rank.get(id)] ||= []).push(id);
  const row = new Map();
  columns.forEach((column, c) => {
    if (c > 0) {
      const mean = (id) => {
        const rows = preds.get(id).map((p) => row.get(p));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
      };
      column.sort((a, b) => mean(a) - mean(b)); // stable: plan order among equals
    }
    column.forEach((id, r) => row.set(id, r));
  });
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const positions = {};
  columns.forEach((column, c) => {
    const offset = ((tallest - column.length) * (HEIGHT + GAP_Y)) / 2;
    column.forEach((id, r) => {
      positions[id] = { x: c * (WIDTH + GAP_X), y: offset + r * (HEIGHT + GAP_Y) };
    });
  });
  return {
    positions,
    width: Math.max(1, columns.length) * (WIDTH + GAP_X) - GAP_X,
    height: tallest * (HEIGHT + GAP_Y) - GAP_Y,
  };
}

function element(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

/** An SVG of the steps; `onSelect(id)` on a click; `update(step)` redraws one node. */
export function drawGraph(steps, onSelect) {
  const edges = edgesOf(steps);
  const { positions, width, height } = layout(steps.map((s) => s.id), edges);
  const pad = 8;
  const svg = element("svg", {
    class: "dag",
    width: width + 2 * pad,
    height: height + 2 * pad,
    viewBox: `${-pad} ${-pad} ${width + 2 * pad} ${height + 2 * pad}`,
    role: "img",
    "aria-label": "the task's steps and what each needs",
  });
  const defs = element("defs", {}, svg);
  const marker = element("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, defs);
  element("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }, marker);
  for (const [from, to] of edges) {
    const a = positions[from];
    const b = positions[to];
    const x1 = a.x + WIDTH, y1 = a.y + HEIGHT / 2, x2 = b.x, y2 = b.y + HEIGHT / 2;
    const bend = (x2 - x1) / 2;
    element("path", {
      class: "edge",
      d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
      "marker-end": "url(#arrow)",
    }, svg);
  }
  const nodes = new Map();
  for (const step of steps) {
    const { x, y } = positions[step.id];
    const g = element("g", {
      class: "node", transform: `translate(${x} ${y})`, tabindex: 0, "data-step": step.id,
    }, svg);
    element("rect", { class: "box", width: WIDTH, height: HEIGHT, rx: 8 }, g);
    const title = element("title", {}, g);
    const name = element("text", { class: "name", x: 10, y: 20 }, g);
    const detail = element("text", { class: "detail", x: 10, y: 38 }, g);
    const note = element("text", { class: "note", x: 10, y: 54 }, g);
    element("rect", { class: "track", x: 10, y: HEIGHT - 7, width: WIDTH - 20, height: 3 }, g);
    const bar = element("rect", { class: "bar", x: 10, y: HEIGHT - 7, width: 0, height: 3 }, g);
    g.addEventListener("click", () => onSelect(step.id));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") onSelect(step.id); });
    nodes.set(step.id, { g, title, name, detail, note, bar });
  }
  const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);
  function update(step) {
    const node = nodes.get(step.id);
    if (!node) return false;
    node.g.setAttribute("data-state", step.state);
    node.name.textContent = clip(`${step.id} · ${step.state}`, 28);
    const agent = step.agent ? `${step.agent} · ` : "";
    node.detail.textContent = clip(`${agent}${step.spec.capability}`, 30);
    const attempts = step.attempts > 1 ? `attempt ${step.attempts} ` : "";
    const said = step.state === "failed" ? step.error : step.message || "";
    node.note.textContent = clip(`${attempts}${said || ""}`, 32);
    const fraction = step.state === "succeeded" ? 1 : Math.max(0, step.fraction ?? 0);
    node.bar.setAttribute("width", String((WIDTH - 20) * Math.min(1, fraction)));
    node.title.textContent = [step.id, step.state, step.agent, step.error || step.message]
      .filter(Boolean).join("\n");
    return true;
  }
  steps.forEach(update);
  return { svg, update };
}

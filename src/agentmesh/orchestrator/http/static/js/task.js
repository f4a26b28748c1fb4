// A task's page: its DAG, each node taking its state's colour as the task's events arrive.

import { call, watchTask } from "./api.js";
import { ago, badge, h, pretty } from "./dom.js";
import { drawGraph } from "./graph.js";

const FINAL = new Set(["succeeded", "failed", "cancelled", "rolled_back", "rollback_failed"]);

/** Folds one event into the task as the page holds it; false when a step is new to it. */
function apply(task, kind, event) {
  if (kind === "task_state") {
    task.state = event.state;
    if (event.reason) task.error = event.reason;
    return true;
  }
  const step = task.steps.find((s) => s.id === event.step_id);
  if (!step) return false;
  if (kind === "step_progress") {
    step.fraction = event.fraction;
    step.message = event.message;
  } else if (kind === "step_state") {
    step.state = event.state;
    if (event.agent) step.agent = event.agent;
    if (event.attempt) step.attempts = event.attempt;
    if (event.state === "failed") step.error = event.reason;
    else step.message = event.reason;
    if (event.output !== null && event.output !== undefined) step.output = event.output;
  }
  return true;
}

function stepRow(step, selected) {
  const progress = step.fraction > 0 && step.state === "running"
    ? `${Math.round(step.fraction * 100)}%` : "";
  return h("tr", { "data-step": step.id, "data-state": step.state, class: selected ? "selected" : null },
    h("td", {}, step.id),
    h("td", {}, badge(step.state)),
    h("td", {}, step.spec.capability),
    h("td", {}, step.agent),
    h("td", {}, String(step.attempts)),
    h("td", {}, progress, step.message ? ` ${step.message}` : ""),
    h("td", { class: "error" }, step.state === "failed" ? step.error : ""));
}

function stepDetail(step) {
  if (!step) return h("p", { class: "hint" }, "Select a step to see its input and output.");
  const parts = [
    h("h2", {}, step.id, " ", badge(step.state)),
    h("dl", {},
      h("dt", {}, "Capability"), h("dd", {}, step.spec.capability + (step.spec.version ? `@${step.spec.version}` : "")),
      h("dt", {}, "Agent"), h("dd", {}, step.agent || "—"),
      h("dt", {}, "Attempts"), h("dd", {}, String(step.attempts)),
      h("dt", {}, "Needs"), h("dd", {}, (step.spec.needs || []).join(", ") || "—"),
      h("dt", {}, "Started"), h("dd", {}, ago(step.started_at) || "—"),
      h("dt", {}, "Finished"), h("dd", {}, ago(step.finished_at) || "—")),
  ];
  if (step.error) parts.push(h("h3", {}, "Error"), h("pre", { class: "error" }, step.error));
  parts.push(h("h3", {}, "Input"), h("pre", {}, pretty(step.spec.input)));
  if (step.output !== null && step.output !== undefined) {
    parts.push(h("h3", {}, "Output"), h("pre", { class: "output" }, pretty(step.output)));
  }
  return h("div", {}, ...parts);
}

/** The page of task `taskId`, live until `signal` aborts. */
export async function taskView(root, { taskId, signal, onError, onConnection }) {
  let task = await call(`/v1/tasks/${encodeURIComponent(taskId)}`, { signal });
  let selected = null;
  let graph = null;
  const header = h("div", { class: "task-header" });
  const graphBox = h("div", { class: "graph" });
  const table = h("tbody");
  const detail = h("aside", { class: "detail" });
  const result = h("section", { class: "result" });
  root.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← all tasks")),
    header,
    graphBox,
    h("div", { class: "columns" },
      h("table", { class: "steps" },
        h("thead", {}, h("tr", {},
          ["Step", "State", "Capability", "Agent", "Attempts", "Progress", "Error"].map((t) => h("th", {}, t)))),
        table),
      detail),
    result,
  );
  const select = (id) => { selected = id; renderDetails(); };
  function renderHeader() {
    header.replaceChildren(
      h("h1", {}, "Task ", h("code", {}, task.task_id), " ", badge(task.state)),
      h("p", { class: "meta" }, `owner ${task.owner} · created ${ago(task.created_at)}`,
        task.partial ? " · partial result" : ""),
      task.error ? h("p", { class: "error task-error" }, task.error) : "");
    document.title = `${task.task_id} ${task.state} · agentmesh`;
  }
  function renderDetails() {
    table.replaceChildren(...task.steps.map((s) => stepRow(s, s.id === selected)));
    detail.replaceChildren(stepDetail(task.steps.find((s) => s.id === selected)));
    if (FINAL.has(task.state) && task.result !== null && task.result !== undefined) {
      result.replaceChildren(h("h2", {}, "Result"), h("pre", {}, pretty(task.result)));
    }
  }
  function renderAll() {
    graph = drawGraph(task.steps, select);
    graphBox.replaceChildren(graph.svg);
    renderHeader();
    renderDetails();
  }
  // One reload at a time: a new step (fan-out, follow-up) or the final state asks for the
  // task as stored, which also brings outputs and the result.
  let reloading = null;
  const reload = () => {
    reloading ||= call(`/v1/tasks/${encodeURIComponent(taskId)}`, { signal })
      .then((fresh) => { task = fresh; renderAll(); })
      .catch((error) => { if (!signal.aborted) onError(error); })
      .finally(() => { reloading = null; });
    return reloading;
  };
  renderAll();
  await watchTask(taskId, {
    signal,
    onConnection,
    onError,
    onEvent(kind, event) {
      if (!apply(task, kind, event)) {
        reload();
        return false;
      }
      if (kind === "task_state") {
        renderHeader();
        if (FINAL.has(event.state)) {
          reload();
          return true;
        }
      } else {
        const step = task.steps.find((s) => s.id === event.step_id);
        graph.update(step);
      }
      renderDetails();
      return false;
    },
  });
}

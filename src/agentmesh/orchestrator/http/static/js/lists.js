// The task list (live: changed tasks arrive as Server-Sent Events; filtered by state) and
// the agents.

import { call, watchTaskList } from "./api.js";
import { ago, badge, every, h } from "./dom.js";

export const TASK_STATES = [
  "pending", "running", "compensating", "succeeded", "failed",
  "cancelled", "rolled_back", "rollback_failed",
];

/** Tasks shown at most, newest first (as many as one list request reads). */
const SHOWN = 100;
/** How often the list is read again while its stream is down. */
const FALLBACK_MS = 10000;
/** How often the ages ("12 s ago") are redrawn, without asking the server. */
const AGES_MS = 5000;

function stepsDone(task) {
  // The list may leave the steps out (the task's page has them).
  if (!task.steps.length) return "";
  const done = task.steps.filter((s) => s.state === "succeeded").length;
  return `${done}/${task.steps.length}`;
}

/** The tasks page; `states` are the filter (none: every task). */
export function tasksView(root, { states, signal, onError, onConnection = () => {} }) {
  const chosen = new Set(states);
  const filter = h("fieldset", { class: "filter" }, h("legend", {}, "State"));
  for (const state of TASK_STATES) {
    filter.append(h("label", {},
      h("input", {
        type: "checkbox", name: "state", value: state, checked: chosen.has(state),
        onchange: (e) => {
          if (e.target.checked) chosen.add(state);
          else chosen.delete(state);
          const query = [...chosen].map((s) => `state=${s}`).join("&");
          window.location.hash = query ? `#/?${query}` : "#/";
        },
      }),
      badge(state)));
  }
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, "No tasks.");
  root.replaceChildren(
    h("h1", {}, "Tasks"),
    filter,
    h("table", { class: "tasks" },
      h("thead", {}, h("tr", {},
        ["Task", "State", "Steps", "Owner", "Created", "Updated", "Error"].map((t) => h("th", {}, t)))),
      body),
    empty,
  );
  const shownStates = (task) => !chosen.size || chosen.has(task.state);
  const time = (iso) => Date.parse(iso) || 0;
  // Each task as last known, from a list or from the stream: the newer of the two wins.
  let rows = new Map();
  // While a list is being read: the tasks that changed meanwhile, applied on top of it.
  let meanwhile = null;
  const take = (into, task) => {
    const known = into.get(task.task_id);
    if (!known || time(task.updated_at) >= time(known.updated_at)) into.set(task.task_id, task);
  };
  const render = () => {
    const shown = [...rows.values()]
      .filter(shownStates)
      .sort((a, b) => time(b.created_at) - time(a.created_at) || a.task_id.localeCompare(b.task_id))
      .slice(0, SHOWN);
    body.replaceChildren(...shown.map((task) =>
      h("tr", { "data-task": task.task_id, "data-state": task.state },
        h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(task.task_id)}` }, task.task_id)),
        h("td", {}, badge(task.state)),
        h("td", {}, stepsDone(task)),
        h("td", { class: "owner" }, task.owner.replace(/^spiffe:\/\/[^/]+\//, "")),
        h("td", { title: task.created_at }, ago(task.created_at)),
        h("td", { title: task.updated_at }, ago(task.updated_at)),
        h("td", { class: "error" }, task.error))));
    empty.hidden = shown.length > 0;
  };
  // One list request at a time; one asked for meanwhile runs after it (it may know more).
  let listing = null;
  let again = false;
  const relist = () => {
    if (listing) {
      again = true;
      return listing;
    }
    listing = (async () => {
      do {
        again = false;
        meanwhile = new Map();
        const query = new URLSearchParams({ page_size: String(SHOWN), omit_outputs: "true" });
        for (const state of chosen) query.append("state", state);
        try {
          const page = await call(`/v1/tasks?${query}`, { signal });
          const fresh = new Map(page.tasks.map((task) => [task.task_id, task]));
          for (const task of meanwhile.values()) take(fresh, task);
          rows = fresh;
          render();
        } catch (error) {
          if (!signal.aborted) onError(error);
        } finally {
          meanwhile = null;
        }
      } while (again && !signal.aborted);
      listing = null;
    })();
    return listing;
  };
  // While the stream is down (or refused): the list now, then every FALLBACK_MS, so that the
  // page still moves. Once the stream is back, its relist takes over.
  let fallback = null;
  const poll = (on) => {
    if (on && fallback === null && !signal.aborted) {
      relist();
      fallback = setInterval(relist, FALLBACK_MS);
    } else if (!on && fallback !== null) {
      clearInterval(fallback);
      fallback = null;
    }
  };
  const ages = setInterval(render, AGES_MS);
  signal.addEventListener("abort", () => { poll(false); clearInterval(ages); }, { once: true });
  watchTaskList({
    signal,
    onRelist: relist,
    onTask(task) {
      take(rows, task);
      if (meanwhile) take(meanwhile, task);
      render();
    },
    onConnection(up) {
      poll(!up);
      onConnection(up);
    },
    onError(error) {
      onError(error);
      if (error.status !== 401) poll(true);
    },
  });
}

function meter(share) {
  const fill = h("div");
  fill.style.width = `${Math.round(share * 100)}%`; // a style attribute would break the CSP
  return h("div", { class: "meter" }, fill);
}

function load(agent) {
  const max = agent.card.max_concurrency || 1;
  const share = Math.min(1, agent.active_assignments / max);
  return h("div", { class: "load", title: `${agent.active_assignments} of ${max} slots busy` },
    meter(share),
    `${agent.active_assignments}/${max}`);
}

function latency(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds >= 1) return `${seconds.toFixed(1)} s`;
  return seconds < 0.0005 ? "<1 ms" : `${Math.round(seconds * 1000)} ms`;
}

function success(agent) {
  if (agent.success_rate === null || agent.success_rate === undefined) return "—";
  const attempts = agent.successes + agent.failures;
  return h("span", { title: `${agent.successes} of ${attempts} attempts succeeded` },
    `${Math.round(agent.success_rate * 100)}%`);
}

function rotation(agent) {
  const weight = agent.weight === undefined ? 1 : agent.weight;
  const text = agent.drained ? "drained" : weight === 1 ? "in rotation" : `weight ${weight}`;
  return h("span", {
    class: "badge",
    "data-rotation": agent.drained ? "drained" : "in",
    title: agent.drained ? "an operator drained it: no new work" : `share of work × ${weight}`,
  }, agent.drained && weight !== 1 ? `${text}, weight ${weight}` : text);
}

/** The agents page: load, circuit, operators' overrides, latency, success rate, connection,
 * capabilities. */
export function agentsView(root, { signal, onError }) {
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, "No agents registered.");
  root.replaceChildren(
    h("h1", {}, "Agents"),
    h("table", { class: "agents" },
      h("thead", {}, h("tr", {},
        ["Agent", "Version", "Capabilities", "Load", "Circuit", "Rotation", "Latency", "Success",
          "Connection", "Last seen"]
          .map((t) => h("th", {}, t)))),
      body),
    empty,
  );
  every(3000, async () => {
    const agents = await call("/v1/agents", { signal });
    body.replaceChildren(...agents.map((agent) =>
      h("tr", { "data-agent": agent.card.name },
        h("td", { title: agent.identity }, agent.card.name),
        h("td", {}, agent.card.version),
        h("td", { class: "capabilities" },
          agent.card.capabilities.map((c) => h("code", { title: c.description }, `${c.name}@${c.version}`))),
        h("td", {}, load(agent)),
        h("td", {}, h("span", { class: "badge", "data-circuit": agent.circuit }, agent.circuit)),
        h("td", { class: "rotation" }, rotation(agent)),
        h("td", { class: "latency", title: "mean attempt latency, recent attempts weigh more" },
          latency(agent.latency_seconds)),
        h("td", { class: "success" }, success(agent)),
        h("td", {}, agent.connected ? (agent.draining ? "draining" : "connected") : "disconnected"),
        h("td", { title: agent.last_seen }, ago(agent.last_seen)))));
    empty.hidden = agents.length > 0;
  }, signal, onError);
}

// The dashboard: a hash router over the tasks, a task's page and the agents.

import { ApiError, forgetToken, setToken, takeTokenFromAddress } from "./api.js";
import { h } from "./dom.js";
import { agentsView, tasksView } from "./lists.js";
import { taskView } from "./task.js";

const view = document.getElementById("view");
const connection = document.getElementById("connection");
let current = null;

function showLogin(message) {
  const form = document.getElementById("login").content.firstElementChild.cloneNode(true);
  form.querySelector("[data-role=error]").textContent = message || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(form.elements.token.value);
    route();
  });
  view.replaceChildren(form);
}

function onError(error) {
  if (error instanceof ApiError && error.status === 401) {
    forgetToken();
    current?.abort();
    showLogin(error.reason);
    return;
  }
  // The page keeps what it shows; the bar says why it may be out of date.
  connection.textContent = error instanceof ApiError && error.code ? `${error.code}: ${error.message}` : error.message;
  connection.dataset.state = "error";
}

function onConnection(up) {
  connection.textContent = up ? "live" : "reconnecting…";
  connection.dataset.state = up ? "live" : "reconnecting";
}

async function route() {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  connection.textContent = "";
  delete connection.dataset.state;
  const [path, query = ""] = window.location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const section = path.startsWith("/agents") ? "agents" : "tasks";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  try {
    const task = /^\/tasks\/(.+)$/.exec(path);
    if (task) {
      await taskView(view, { taskId: decodeURIComponent(task[1]), signal, onError, onConnection });
    } else if (section === "agents") {
      agentsView(view, { signal, onError });
    } else {
      tasksView(view, { states: params.getAll("state"), signal, onError, onConnection });
    }
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ApiError && error.status !== 401) {
      view.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    }
    onError(error);
  }
}

takeTokenFromAddress();
window.addEventListener("hashchange", route);
route();

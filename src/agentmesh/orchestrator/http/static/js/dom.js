// Building the page from data: text always goes in as text, never as markup.

/** `h("td", {class: "x"}, "text", child)`: an element with attributes and children. */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A state as a coloured badge. */
export const badge = (state) => h("span", { class: "badge", "data-state": state }, state);

/** "12 s ago" style age of an ISO time. */
export function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

/** JSON for reading, keys in their order. */
export const pretty = (value) => JSON.stringify(value, null, 2);

/** Calls `tick` now and every `ms` until `signal` aborts; a tick's error goes to `onError`. */
export function every(ms, tick, signal, onError) {
  let timer = null;
  const run = async () => {
    try {
      await tick();
    } catch (error) {
      if (!signal.aborted) onError(error);
    }
    if (!signal.aborted) timer = setTimeout(run, ms);
  };
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  run();
}

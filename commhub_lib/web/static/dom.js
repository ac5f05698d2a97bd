// Building DOM without innerHTML: every piece of data becomes a text node, so nothing can inject markup.

/** h("tag", {class, onclick, dataset, attr...}, ...children): an element; strings become text nodes. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** The element with this id (throws when the page lacks it: a bug, not a state). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing element #${id}`);
  return el;
}

/**
 * Replace a container's children unless the content is unchanged (so a periodic refresh does not steal
 * focus or scroll); focus returns to the element with the same data-key after a change.
 */
export function render(container, signature, nodes) {
  if (container.dataset.signature === signature) return;
  container.dataset.signature = signature;
  const focused = document.activeElement;
  const key = focused && container.contains(focused) ? focused.dataset.key : undefined;
  container.replaceChildren(...[nodes].flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  if (key) {
    const again = [...container.querySelectorAll("[data-key]")].find((el) => el.dataset.key === key);
    if (again) again.focus();
  }
}

/** The hub writes UTC times as "YYYY-MM-DD HH:MM:SS" (or ISO 8601): a Date. */
export function parseTime(text) {
  if (!text) return null;
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text.replace(" ", "T") : `${text.replace(" ", "T")}Z`;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "12 s ago", "5 min ago", or the local date for older times. */
export function ago(text) {
  const date = parseTime(text);
  if (!date) return "";
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return date.toLocaleDateString();
}

/** A local clock time for a hub time (or for now). */
export function clock(text) {
  const date = text ? parseTime(text) : new Date();
  return date ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
}

/** A <time> element showing a relative time, with the exact UTC time as its title. */
export function timeEl(text, relative = true) {
  return h("time", { datetime: parseTime(text)?.toISOString(), title: text ? `${text} UTC` : null },
    relative ? ago(text) : clock(text));
}

/** Show a short result or error next to a form. */
export function say(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

/** The values of a form's named fields, trimmed. */
export function formValues(form) {
  const out = {};
  for (const [key, value] of new FormData(form).entries()) out[key] = typeof value === "string" ? value.trim() : value;
  return out;
}

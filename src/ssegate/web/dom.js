// Small DOM helpers shared by the page's views: elements, buttons, icons, and copying to the clipboard.
// Text always goes in as textContent: nothing here parses HTML.

export function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function button(label, action, { className = "act", aria } = {}) {
  const b = h("button", className, label);
  b.type = "button";
  if (action) b.dataset.action = action;
  if (aria) b.setAttribute("aria-label", aria);
  return b;
}

const ICONS = {
  rename: "M4 20h4L19 9l-4-4L4 16v4zM13.5 6.5l4 4",
  delete: "M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3",
};
export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // no clipboard API (plain http on another host): the old way
  }
  const ta = h("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.style.cssText = "position:fixed;top:0;left:0;opacity:0";
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

export async function copyWithFeedback(btn, text) {
  const ok = await copyText(text);
  const label = btn.dataset.label || btn.textContent;
  btn.dataset.label = label;
  btn.textContent = ok ? "Copied" : "Copy failed";
  setTimeout(() => {
    btn.textContent = label;
  }, 1500);
}

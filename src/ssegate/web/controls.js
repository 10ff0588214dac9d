// The page's furniture around the conversation: the chat drawer on narrow screens, the settings popover
// (the API key, kept in this browser), the dark-mode toggle (remembered; without a choice the page follows
// prefers-color-scheme), and the model picker, filled from GET /v1/models and remembered (in localStorage).
// A routing file's wildcard entries ("local/*") are listed by /v1/models but are not models one can ask for
// (the name to send is "local/<something>"), so the picker leaves out every name with a "*".

import { h } from "./dom.js";

/**
 * @param {{el: object, storage: Storage, keys: {apiKey: string, model: string, theme: string},
 *          focusList: () => boolean}} opts   focusList focuses the current chat in the drawer (false: none)
 */
export function setupControls({ el, storage, keys, focusList }) {
  const apiKey = () => el.apiKey.value.trim();

  // ------------------------------------------------------------ drawer (narrow screens)
  const drawerOpen = () => document.body.classList.contains("drawer-open");

  function openDrawer() {
    document.body.classList.add("drawer-open");
    el.sidebarToggle.setAttribute("aria-expanded", "true");
    el.backdrop.hidden = false;
    if (!focusList()) el.newChat.focus();
  }

  function closeDrawer() {
    if (!drawerOpen()) return false;
    document.body.classList.remove("drawer-open");
    el.sidebarToggle.setAttribute("aria-expanded", "false");
    el.backdrop.hidden = true;
    return true;
  }

  el.sidebarToggle.addEventListener("click", () => (drawerOpen() ? closeDrawer() : openDrawer()));
  el.backdrop.addEventListener("click", () => closeDrawer());
  window.matchMedia("(max-width: 800px)").addEventListener("change", () => closeDrawer());

  // ------------------------------------------------------------ settings popover
  document.addEventListener("click", (e) => {
    if (el.settings.open && !el.settings.contains(e.target)) el.settings.open = false;
  });
  el.settings.querySelector("form").addEventListener("submit", (e) => {
    e.preventDefault();
    el.settings.open = false;
  });

  /** Close the open popover or drawer, focusing what opened it; false when nothing was open. */
  function dismiss() {
    if (el.settings.open) {
      el.settings.open = false;
      el.settings.querySelector("summary").focus();
      return true;
    }
    if (closeDrawer()) {
      el.sidebarToggle.focus();
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------ theme
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  const theme = () => document.documentElement.dataset.theme || (systemDark.matches ? "dark" : "light");
  const renderTheme = () => el.theme.setAttribute("aria-pressed", String(theme() === "dark"));
  el.theme.addEventListener("click", () => {
    const next = theme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    storage.setItem(keys.theme, next);
    renderTheme();
  });
  systemDark.addEventListener("change", renderTheme);

  // ------------------------------------------------------------ models and the API key
  async function loadModels() {
    let ids = [];
    try {
      const key = apiKey();
      const response = await fetch("/v1/models", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
      if (response.ok) {
        const body = await response.json();
        const data = Array.isArray(body?.data) ? body.data : [];
        ids = data.map((m) => m && m.id).filter((id) => typeof id === "string" && id && !id.includes("*"));
      }
    } catch {
      // no list: the server's default model
    }
    const saved = storage.getItem(keys.model) || "";
    const options = ids.length ? ids : [""];
    el.model.replaceChildren(
      ...options.map((id) => {
        const option = h("option", "", id || "Server default");
        option.value = id;
        return option;
      }),
    );
    el.model.value = ids.includes(saved) ? saved : options[0];
    el.model.disabled = ids.length < 2; // nothing to choose
  }

  el.model.addEventListener("change", () => storage.setItem(keys.model, el.model.value));

  let modelsTimer = 0;
  el.apiKey.addEventListener("input", () => {
    const v = apiKey();
    if (v) storage.setItem(keys.apiKey, v);
    else storage.removeItem(keys.apiKey);
    clearTimeout(modelsTimer);
    modelsTimer = setTimeout(loadModels, 400); // the list may depend on who asks
  });

  function start() {
    el.apiKey.value = storage.getItem(keys.apiKey) || "";
    renderTheme();
    loadModels();
  }

  return { apiKey, closeDrawer, dismiss, start };
}

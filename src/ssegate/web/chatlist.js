// The list of saved conversations: open, rename (in place), delete (two presses: the first asks). It draws
// from the store's index and reports what the person chose; the page does the rest.

import { button, h, icon } from "./dom.js";

export class ChatList {
  /**
   * @param {{list: HTMLElement, empty: HTMLElement, store: import("./store.js").ChatStore,
   *          current: () => string|null, running: (id: string) => boolean,
   *          onOpen: (id: string) => void, onRename: (id: string, title: string) => void,
   *          onDelete: (id: string) => void}} opts
   */
  constructor(opts) {
    Object.assign(this, opts);
    this.list.addEventListener("click", (e) => this._click(e));
  }

  render() {
    const entries = this.store.list();
    const current = this.current();
    this.list.replaceChildren(...entries.map((entry) => this._item(entry, entry.id === current)));
    this.empty.hidden = entries.length > 0;
  }

  /** Focus the current chat's entry (or nothing); true when it did. */
  focusCurrent() {
    const open = this.list.querySelector(".current .chat-open");
    open?.focus();
    return Boolean(open);
  }

  _item(entry, current) {
    const li = h("li", "chat-item");
    li.dataset.id = entry.id;
    if (current) li.classList.add("current");
    const open = button("", "open", { className: "chat-open" });
    open.append(h("span", "chat-title", entry.title));
    if (this.running(entry.id)) {
      li.classList.add("running");
      open.append(h("span", "sr-only", " (answering)"));
    }
    if (current) open.setAttribute("aria-current", "page");
    const rename = button("", "rename", { className: "icon-btn", aria: `Rename “${entry.title}”` });
    rename.append(icon("rename"));
    const del = button("", "delete", { className: "icon-btn", aria: `Delete “${entry.title}”` });
    del.append(icon("delete"));
    li.append(open, rename, del);
    return li;
  }

  _click(e) {
    const target = e.target instanceof Element ? e.target : null;
    const btn = target && target.closest("button[data-action]");
    const li = btn && btn.closest("li.chat-item");
    if (!li) return;
    const id = li.dataset.id;
    const title = li.querySelector(".chat-title")?.textContent || "";
    if (btn.dataset.action === "open") {
      this.onOpen(id);
    } else if (btn.dataset.action === "rename") {
      this._rename(li, id, title);
    } else if (btn.dataset.action === "delete") {
      if (btn.dataset.confirm === "1") {
        this.onDelete(id);
        return;
      }
      btn.dataset.confirm = "1";
      btn.classList.add("confirm");
      btn.replaceChildren(document.createTextNode("Delete?"));
      btn.setAttribute("aria-label", `Confirm: delete “${title}”`);
      btn.addEventListener("blur", () => this.render(), { once: true });
    }
  }

  _rename(li, id, title) {
    const input = h("input", "rename-input");
    input.value = title;
    input.setAttribute("aria-label", "Chat title");
    input.maxLength = 120;
    li.replaceChildren(input);
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      const next = input.value.replace(/\s+/g, " ").trim();
      if (save && next && next !== title) this.onRename(id, next);
      this.render();
      this.list.querySelector(`li[data-id="${CSS.escape(id)}"] .chat-open`)?.focus();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        finish(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    input.focus();
    input.select();
  }
}

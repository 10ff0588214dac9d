// Conversations kept in the browser (localStorage), so they survive new tabs and restarts. No DOM: give it
// any Storage-like object (the page: localStorage; the tests: a Map-backed fake).
//
//   ssegate.chats          the index, newest first: [{id, title, updated}]
//   ssegate.chat.<id>      one conversation: {id, title, created, updated, messages}
//
// Each conversation has its own key, so saving one (several times a second while an answer streams) costs
// that conversation only, and two tabs on different conversations do not overwrite each other. A chat that
// has no message yet is never saved. Storage that is full or disabled makes save() return false; the page
// keeps working from memory.

const INDEX_KEY = "ssegate.chats";
const CHAT_PREFIX = "ssegate.chat.";

export class ChatStore {
  /** @param {Storage} storage */
  constructor(storage) {
    this.storage = storage;
  }

  _read(key) {
    try {
      const raw = this.storage.getItem(key);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  }

  _write(key, value) {
    try {
      this.storage.setItem(key, JSON.stringify(value));
      return true;
    } catch {
      return false;
    }
  }

  /** The saved conversations, newest first: [{id, title, updated}]. */
  list() {
    const index = this._read(INDEX_KEY);
    if (!Array.isArray(index)) return [];
    return index.filter((e) => e && typeof e.id === "string" && typeof e.title === "string");
  }

  /** One conversation, or null. */
  load(id) {
    const chat = this._read(CHAT_PREFIX + id);
    if (!chat || typeof chat !== "object" || !Array.isArray(chat.messages)) return null;
    chat.messages = chat.messages.filter(
      (m) => m && (m.role === "user" || m.role === "assistant") && typeof m.content === "string" && typeof m.id === "string",
    );
    return { id, title: typeof chat.title === "string" ? chat.title : "Chat", created: chat.created || 0, updated: chat.updated || 0, messages: chat.messages };
  }

  /** Save a conversation and move it to the top of the index (when `touch`). False when storage refused. */
  save(chat, { touch = true } = {}) {
    if (touch) chat.updated = Date.now();
    const { id, title, created, updated, messages } = chat;
    const ok = this._write(CHAT_PREFIX + id, { id, title, created, updated, messages });
    if (!ok) return false;
    const index = this.list().filter((e) => e.id !== id);
    const entry = { id, title, updated };
    if (touch) index.unshift(entry);
    else {
      const at = this.list().findIndex((e) => e.id === id);
      index.splice(at < 0 ? 0 : at, 0, entry);
    }
    return this._write(INDEX_KEY, index);
  }

  rename(id, title) {
    const chat = this.load(id);
    if (!chat) return false;
    chat.title = title;
    return this.save(chat, { touch: false });
  }

  remove(id) {
    try {
      this.storage.removeItem(CHAT_PREFIX + id);
    } catch {
      // nothing to do
    }
    return this._write(INDEX_KEY, this.list().filter((e) => e.id !== id));
  }

  /** Is this storage key one of ours (for the page's "storage" event listener)? */
  static owns(key) {
    return key === INDEX_KEY || (typeof key === "string" && key.startsWith(CHAT_PREFIX));
  }

  /** The chat id a storage key holds, or null. */
  static chatIdOf(key) {
    return typeof key === "string" && key.startsWith(CHAT_PREFIX) ? key.slice(CHAT_PREFIX.length) : null;
  }
}

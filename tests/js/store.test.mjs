// Conversations in localStorage: saved, listed newest first, renamed, deleted, and robust to bad data and
// full storage (run: node --test tests/js/).
import { test } from "node:test";
import assert from "node:assert/strict";

import { ChatStore } from "../../src/ssegate/web/store.js";

function memoryStorage({ quota = Infinity } = {}) {
  const m = new Map();
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem(k, v) {
      const size = [...m].reduce((n, [key, val]) => n + (key === k ? 0 : val.length), 0) + String(v).length;
      if (size > quota) throw new DOMException("full", "QuotaExceededError");
      m.set(k, String(v));
    },
    removeItem: (k) => m.delete(k),
  };
}

const chat = (id, title, messages = [{ id: "m1", role: "user", content: "hi" }]) => ({ id, title, created: 1, messages });

test("saved chats come back, newest first, each under its own key", async () => {
  const storage = memoryStorage();
  const store = new ChatStore(storage);
  store.save(chat("a", "Alpha"));
  await new Promise((r) => setTimeout(r, 2));
  store.save(chat("b", "Beta"));
  assert.deepEqual(store.list().map((e) => e.id), ["b", "a"]);
  assert.equal(store.load("a").title, "Alpha");
  assert.deepEqual(store.load("a").messages, [{ id: "m1", role: "user", content: "hi" }]);
  assert.ok(storage.map.has("ssegate.chat.a") && storage.map.has("ssegate.chat.b"));
  // a later save of "a" moves it up
  store.save(store.load("a"));
  assert.deepEqual(store.list().map((e) => e.id), ["a", "b"]);
});

test("rename keeps the order; remove drops the chat and its key", () => {
  const storage = memoryStorage();
  const store = new ChatStore(storage);
  store.save(chat("a", "Alpha"));
  store.save(chat("b", "Beta"));
  assert.ok(store.rename("a", "Renamed"));
  assert.deepEqual(store.list().map((e) => [e.id, e.title]), [["b", "Beta"], ["a", "Renamed"]]);
  assert.equal(store.load("a").title, "Renamed");
  store.remove("b");
  assert.deepEqual(store.list().map((e) => e.id), ["a"]);
  assert.equal(store.load("b"), null);
  assert.ok(!storage.map.has("ssegate.chat.b"));
});

test("garbage in storage is ignored, not fatal", () => {
  const storage = memoryStorage();
  storage.setItem("ssegate.chats", "{not json");
  storage.setItem("ssegate.chat.x", JSON.stringify({ title: 5, messages: [null, { role: "system", content: "s", id: "1" }, { id: "2", role: "user", content: "ok" }] }));
  const store = new ChatStore(storage);
  assert.deepEqual(store.list(), []);
  const loaded = store.load("x");
  assert.equal(loaded.title, "Chat");
  assert.deepEqual(loaded.messages, [{ id: "2", role: "user", content: "ok" }]);
});

test("full storage: save says so and nothing half-written breaks the index", () => {
  const store = new ChatStore(memoryStorage({ quota: 200 }));
  assert.equal(store.save(chat("a", "A")), true);
  assert.equal(store.save(chat("b", "B", [{ id: "m", role: "user", content: "x".repeat(500) }])), false);
  assert.deepEqual(store.list().map((e) => e.id), ["a"]);
});

test("storage keys it owns", () => {
  assert.ok(ChatStore.owns("ssegate.chats") && ChatStore.owns("ssegate.chat.a1"));
  assert.ok(!ChatStore.owns("ssegate.theme") && !ChatStore.owns(null));
  assert.equal(ChatStore.chatIdOf("ssegate.chat.a1"), "a1");
  assert.equal(ChatStore.chatIdOf("ssegate.chats"), null);
});

// The chat page: conversations, the composer, answers streaming in as markdown, stop/retry/continue,
// regenerate and edit, and resume across drops and reloads.
//
// Data and view: a conversation is plain data (answer.js), kept in localStorage (store.js) and drawn here.
// An answer being generated is a "run": one per conversation at most, independent of what is on screen, so
// switching to another chat does not stop it. A run writes its message object as events arrive and asks for
// a redraw; the current chat's views are redrawn at most once per animation frame. The message (its text,
// stream id and last seq together) is saved every SAVE_EVERY_MS and when the page is hidden, so a reload,
// a new tab or a restart finds it and resumes it with GET /v1/streams/{id}?after=lastSeq.
//
// Resume by default: every POST asks for a RESUME_GRACE_S resume grace, so the server keeps generating
// through a dropped connection or a reload; Stop is the explicit cancel (POST /v1/streams/{id}/cancel).
//
// Safety: user messages are text (textContent); answers are markdown rendered by markdown.js (no raw
// HTML, safe URLs only, sanitized by DOMPurify); reasoning and tool-call arguments are text. Tools are shown,
// never run.
//
// Accessibility: each message is an <article> labelled by its author; the only live region is #announcer,
// which gets the answer being generated a sentence at a time (and how it ended); Escape closes what is open,
// else stops the answer; focus returns to the message box.

import * as A from "./answer.js";
import { ChatList } from "./chatlist.js";
import { setupControls } from "./controls.js";
import { copyWithFeedback, h } from "./dom.js";
import { createMarkdown } from "./markdown.js";
import { Run } from "./run.js";
import { Speaker } from "./speech.js";
import { ChatStore } from "./store.js";
import { createView, openEditor } from "./views.js";

const RESUME_GRACE_S = 30;
const SAVE_EVERY_MS = 250;
const KEYS = { apiKey: "ssegate.apiKey", model: "ssegate.model", theme: "ssegate.theme", current: "ssegate.current" };

const $ = (id) => document.getElementById(id);
const el = {
  sidebarToggle: $("sidebar-toggle"),
  backdrop: $("backdrop"),
  chatList: $("chat-list"),
  noChats: $("no-chats"),
  newChat: $("new-chat"),
  model: $("model"),
  theme: $("theme"),
  settings: $("settings"),
  apiKey: $("api-key"),
  messages: $("messages"),
  empty: $("empty"),
  jump: $("jump"),
  status: $("status"),
  ttft: $("ttft"),
  tps: $("tps"),
  form: $("form"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  announcer: $("announcer"),
};

// ---------------------------------------------------------------- storage

/** localStorage, or a memory stand-in when the browser refuses it (private modes, disabled storage). */
function browserStorage(name) {
  try {
    const s = window[name];
    const probe = "ssegate.probe";
    s.setItem(probe, "1");
    s.removeItem(probe);
    return s;
  } catch {
    const m = new Map();
    return {
      getItem: (k) => (m.has(k) ? m.get(k) : null),
      setItem: (k, v) => m.set(k, String(v)),
      removeItem: (k) => m.delete(k),
    };
  }
}
const local = browserStorage("localStorage");
const session = browserStorage("sessionStorage");
const store = new ChatStore(local);
const md = createMarkdown();

// ---------------------------------------------------------------- state

/** What tests (and curious people) can read: the current chat's latest answer. No secrets in here. */
const state = {
  phase: "idle", // idle | connecting | streaming | reconnecting | done | cancelled | error
  chatId: null,
  streamId: null,
  lastSeq: 0,
  text: "",
  model: null,
  finishReason: null,
  usage: null,
  error: null,
  ttftMs: null,
  tps: null,
  deltas: 0,
  heartbeats: 0,
  reconnects: 0,
};
/** The phases the status line went through for the current chat, oldest first (for tests). */
const phases = [];
window.__ssegate = { state, phases };

/** @type {Map<string, object>} answers being generated, by chat id */
const runs = new Map();
/** @type {Map<string, object>} conversations loaded in this page, by id (runs write to these objects) */
const chats = new Map();
/** The conversation on screen: {id, title, created, updated, messages, saved, ui} */
let chat = null;
/** @type {Map<string, object>} the current chat's message views, by message id */
let views = new Map();

const controls = setupControls({ el, storage: local, keys: KEYS, focusList: () => chatList.focusCurrent() });
const apiKey = () => controls.apiKey();
const closeDrawer = () => controls.closeDrawer();

function newChatObject() {
  return { id: A.newId(), title: "New chat", created: Date.now(), updated: 0, messages: [], saved: false, ui: null };
}

function persist(c) {
  if (!c.saved) return;
  if (!store.save(c)) console.warn("ssegate: this chat could not be saved (browser storage full or disabled)");
}

// ---------------------------------------------------------------- announcements

/** The live region: the answer being generated, a sentence at a time, and how it ended. */
function announce(text) {
  if (!text) return;
  el.announcer.append(h("p", "", text));
  while (el.announcer.childElementCount > 4) el.announcer.firstElementChild.remove();
}

// ---------------------------------------------------------------- message views

const view = (msg) => views.get(msg.id);
const viewContext = {
  md,
  isLast: (msg) => Boolean(chat) && chat.messages[chat.messages.length - 1] === msg,
  busy: () => busyHere(),
};

function refreshActions() {
  for (const v of views.values()) v.renderActions();
}

function appendView(msg) {
  el.empty.hidden = true;
  const v = createView(msg, viewContext);
  views.set(msg.id, v);
  el.messages.append(v.root);
  v.update();
  return v;
}

function renderChat() {
  for (const v of views.values()) v.root.remove();
  views = new Map();
  for (const msg of chat.messages) appendView(msg);
  el.empty.hidden = chat.messages.length > 0;
  refreshActions();
  scrollToBottom();
}

// ---------------------------------------------------------------- scrolling

const nearBottom = () => el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 60;
let stick = true; // follow the answer as it grows (until the person scrolls up)

function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
  stick = true;
  el.jump.hidden = true;
}

el.messages.addEventListener("scroll", () => {
  stick = nearBottom();
  el.jump.hidden = stick;
});
el.jump.addEventListener("click", () => {
  scrollToBottom();
  el.prompt.focus();
});

// ---------------------------------------------------------------- status line

const STATUS = {
  idle: "Ready",
  connecting: "Waiting for the model…",
  streaming: "Streaming…",
  reconnecting: "Reconnecting…",
  done: "Done",
  cancelled: "Stopped",
  error: "Error",
};

function renderStatus() {
  const run = runs.get(chat.id);
  const ui = run || chat.ui || { phase: "idle" };
  el.status.dataset.phase = ui.phase;
  if (phases[phases.length - 1] !== ui.phase) {
    phases.push(ui.phase);
    if (phases.length > 100) phases.shift();
  }
  el.status.textContent = ui.detail ? `${STATUS[ui.phase]} ${ui.detail}` : STATUS[ui.phase];
  el.ttft.textContent = ui.ttftMs == null ? "—" : `${Math.round(ui.ttftMs)} ms`;
  el.tps.textContent = ui.tps == null ? "—" : `${ui.tps.toFixed(1)} tok/s`;
  const busy = Boolean(run);
  el.send.disabled = busy;
  el.stop.hidden = !busy;
  el.stop.disabled = !busy;
  document.body.classList.toggle("busy", busy);
  syncState(run || chat.ui);
}

function syncState(source) {
  const msg = source && source.msg;
  Object.assign(state, {
    phase: source ? source.phase : "idle",
    chatId: chat ? chat.id : null,
    streamId: msg ? msg.streamId || null : null,
    lastSeq: msg ? msg.lastSeq || 0 : 0,
    text: msg ? msg.content : "",
    model: msg ? msg.model || null : null,
    finishReason: msg ? msg.finishReason || null : null,
    usage: msg ? msg.usage || null : null,
    error: source && source.error ? source.error : null,
    ttftMs: source ? source.ttftMs ?? null : null,
    tps: source ? source.tps ?? null : null,
    deltas: source ? source.deltas || 0 : 0,
    heartbeats: source ? source.heartbeats || 0 : 0,
    reconnects: source ? source.reconnects || 0 : 0,
  });
}

// ---------------------------------------------------------------- running an answer

function requestFor(messages, extra = []) {
  const request = { messages: [...A.conversationForApi(messages), ...extra], resume_grace_s: RESUME_GRACE_S };
  if (el.model.value) request.model = el.model.value;
  return request;
}

/** Redraw a run's message on the next animation frame (if its chat is on screen). */
function changed(run) {
  if (run.frame || run.chat !== chat) return;
  run.frame = requestAnimationFrame(() => {
    run.frame = 0;
    if (run.chat !== chat || run.finished) return;
    view(run.msg)?.update();
    announce(run.speaker.next(run.msg.content));
    renderStatus();
    if (stick) scrollToBottom();
  });
}

const runHooks = {
  changed,
  save: (run) => persist(run.chat),
  phase: (run) => {
    if (run.chat === chat) renderStatus();
  },
  reconnecting: (run) => {
    if (run.chat === chat) announce("Connection lost, reconnecting.");
  },
  ended(run, ending) {
    if (runs.get(run.chat.id) === run) runs.delete(run.chat.id);
    if (run.frame) cancelAnimationFrame(run.frame);
    run.chat.ui = run; // the status line keeps showing how this chat's last answer went
    if (run.chat === chat) {
      view(run.msg)?.update();
      refreshActions();
      announce(run.speaker.final(run.msg.content));
      announce(ending);
      renderStatus();
      if (stick) scrollToBottom();
    }
    renderList();
  },
};

function startRun(c, msg, { request, resume = false }) {
  const run = new Run({
    chat: c, msg, request, resume, apiKey: apiKey(), hooks: runHooks, streamOptions: { wake: window },
    saveEveryMs: SAVE_EVERY_MS,
  });
  run.speaker = new Speaker(msg.content.length);
  run.frame = 0;
  runs.set(c.id, run);
  run.start();
  if (c === chat) {
    view(msg)?.update();
    refreshActions();
  }
  renderList();
  return run;
}

function busyHere() {
  return Boolean(chat) && runs.has(chat.id);
}

/** Ask for a new answer at the end of the current conversation. */
function startAnswer(c) {
  const msg = A.assistantMessage();
  const request = requestFor(c.messages);
  c.messages.push(msg);
  if (c === chat) {
    appendView(msg);
    scrollToBottom();
  }
  startRun(c, msg, { request });
}

function removeMessage(c, msg) {
  const i = c.messages.indexOf(msg);
  if (i >= 0) c.messages.splice(i, 1);
  if (c === chat) {
    view(msg)?.root.remove();
    views.delete(msg.id);
  }
}

function send() {
  if (busyHere()) return;
  const content = el.prompt.value;
  if (!content.trim()) return;
  el.prompt.value = "";
  autosize();
  // an answer that failed before showing anything is debris once the person moves on
  const last = chat.messages[chat.messages.length - 1];
  if (last && last.role === "assistant" && last.state === "error") removeMessage(chat, last);
  const msg = A.userMessage(content);
  chat.messages.push(msg);
  if (!chat.saved) {
    chat.saved = true;
    chat.title = A.titleFrom(content);
    chats.set(chat.id, chat);
    rememberCurrent(chat.id);
  }
  appendView(msg);
  startAnswer(chat);
  el.prompt.focus();
}

function stop() {
  const run = chat && runs.get(chat.id);
  if (!run) return;
  run.stop();
  el.prompt.focus();
}

function retry(msg) {
  if (busyHere()) return;
  if (msg.resumable && msg.streamId) {
    startRun(chat, msg, { resume: true });
    return;
  }
  // ask again with the same conversation: the failed answer goes, the question stays (once)
  removeMessage(chat, msg);
  startAnswer(chat);
}

function regenerate(msg) {
  if (busyHere() || !viewContext.isLast(msg)) return;
  removeMessage(chat, msg);
  startAnswer(chat);
}

function continueAnswer(msg) {
  if (busyHere() || !viewContext.isLast(msg)) return;
  const request = requestFor(chat.messages, [{ role: "user", content: A.CONTINUE_PROMPT }]);
  startRun(chat, msg, { request });
}

// ---------------------------------------------------------------- editing a sent message

function edit(msg) {
  const v = view(msg);
  if (!v || busyHere()) return;
  openEditor(v, {
    onSend: (content) => {
      if (!busyHere()) resend(msg, content);
    },
    onClose: () => el.prompt.focus(),
  });
}

/** Replace a user message (and drop everything after it), then ask again. */
function resend(msg, content) {
  const i = chat.messages.indexOf(msg);
  if (i < 0) return;
  chat.messages = chat.messages.slice(0, i);
  chat.messages.push(A.userMessage(content));
  renderChat();
  startAnswer(chat);
  renderList();
  el.prompt.focus();
}

// ---------------------------------------------------------------- the message list's buttons

el.messages.addEventListener("click", (e) => {
  const target = e.target instanceof Element ? e.target : null;
  if (!target) return;
  const copyCode = target.closest("button.copy-code");
  if (copyCode) {
    const code = copyCode.closest(".codeblock")?.querySelector("pre code");
    if (code) copyWithFeedback(copyCode, code.textContent);
    return;
  }
  const btn = target.closest("button[data-action]");
  const article = btn && btn.closest("article.msg");
  const msg = article && chat.messages.find((m) => m.id === article.dataset.id);
  if (!msg) return;
  switch (btn.dataset.action) {
    case "copy":
      copyWithFeedback(btn, msg.content);
      break;
    case "retry":
      retry(msg);
      break;
    case "continue":
      continueAnswer(msg);
      break;
    case "regenerate":
      regenerate(msg);
      break;
    case "edit":
      edit(msg);
      break;
    case "edit-previous": {
      const i = chat.messages.indexOf(msg);
      const prev = chat.messages.slice(0, i).reverse().find((m) => m.role === "user");
      if (prev) edit(prev);
      break;
    }
    default:
      break;
  }
});

// ---------------------------------------------------------------- conversations

function rememberCurrent(id) {
  session.setItem(KEYS.current, id);
  local.setItem(KEYS.current, id);
}

function openChat(c) {
  if (c.saved !== false) {
    c.saved = true;
    chats.set(c.id, c);
  }
  chat = c;
  rememberCurrent(c.id);
  const run = runs.get(c.id);
  if (run) run.speaker = new Speaker(run.msg.content.length); // announce from here on, not the backlog
  renderChat();
  renderStatus();
  renderList();
  resumeIfNeeded(c);
}

function loadChat(id) {
  if (chats.has(id)) return chats.get(id);
  const c = store.load(id);
  if (!c) return null;
  c.saved = true;
  c.ui = null;
  chats.set(id, c);
  return c;
}

/** A chat opened (or the page reloaded) with an answer that was still being generated: pick it up. */
function resumeIfNeeded(c) {
  if (runs.has(c.id)) return;
  const last = c.messages[c.messages.length - 1];
  let failed = false;
  for (const m of c.messages) {
    if (m.role !== "assistant" || m.state !== "streaming") continue;
    if (m === last && m.streamId) {
      startRun(c, m, { resume: true });
    } else {
      // the page went away before the server committed the stream: there is nothing to resume
      A.failAnswer(m, { code: "interrupted", message: "", retryable: true });
      failed = true;
    }
  }
  if (!failed) return;
  persist(c);
  if (c === chat) {
    for (const v of views.values()) v.update();
  }
}

function newChat() {
  closeDrawer();
  if (chat && !chat.saved) {
    el.prompt.focus();
    return;
  }
  openChat(newChatObject());
  el.prompt.focus();
}

function deleteChat(id) {
  runs.get(id)?.stop();
  const c = chats.get(id);
  if (c) c.saved = false; // nothing may save it again
  store.remove(id);
  chats.delete(id);
  if (chat && chat.id === id) {
    const next = store.list()[0];
    const c = next && loadChat(next.id);
    openChat(c || newChatObject());
  } else {
    renderList();
  }
}

const chatList = new ChatList({
  list: el.chatList,
  empty: el.noChats,
  store,
  current: () => (chat ? chat.id : null),
  running: (id) => runs.has(id),
  onOpen(id) {
    if (!chat || chat.id !== id) {
      const c = loadChat(id);
      if (c) openChat(c);
      else renderList();
    }
    closeDrawer();
    el.prompt.focus();
  },
  onRename(id, title) {
    const c = chats.get(id);
    if (c) c.title = title;
    store.rename(id, title);
  },
  onDelete(id) {
    deleteChat(id);
    el.prompt.focus();
  },
});
const renderList = () => chatList.render();

el.newChat.addEventListener("click", newChat);

// Another tab changed our storage: refresh the list, and the open chat when it is not busy here.
window.addEventListener("storage", (e) => {
  if (e.storageArea !== local || (e.key !== null && !ChatStore.owns(e.key))) return;
  const id = ChatStore.chatIdOf(e.key);
  if (id && !runs.has(id)) {
    chats.delete(id);
    if (chat && chat.id === id) {
      const c = loadChat(id);
      if (c) {
        c.ui = chat.ui;
        openChat(c);
      } else openChat(newChatObject());
      return;
    }
  }
  renderList();
});

// Escape: close what is open (the editor and a rename handle their own), else stop the answer.
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || e.defaultPrevented) return;
  if (controls.dismiss()) return;
  if (busyHere()) {
    e.preventDefault();
    stop();
  }
});

// ---------------------------------------------------------------- composer

function autosize() {
  el.prompt.style.height = "auto";
  el.prompt.style.height = `${Math.min(el.prompt.scrollHeight, 200)}px`;
}

el.form.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
el.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
el.prompt.addEventListener("input", autosize);
el.stop.addEventListener("click", stop);

// Saved as the page goes away (reload, tab closed, phone app switch), so it resumes where it really was.
// Aborted connections of a page going away are not failures: the runs save where they are and let go.
window.addEventListener("pagehide", () => {
  for (const run of runs.values()) run.detach();
  runs.clear();
});
window.addEventListener("pageshow", (e) => {
  if (e.persisted && chat) resumeIfNeeded(chat); // back from the back/forward cache
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") for (const run of runs.values()) run.saveNow();
});

// ---------------------------------------------------------------- start up

function boot() {
  controls.start();
  const id = session.getItem(KEYS.current) || local.getItem(KEYS.current);
  const c = (id && loadChat(id)) || null;
  openChat(c || newChatObject());
  el.prompt.focus();
}

boot();

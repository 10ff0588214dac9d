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

import { cancelStream, streamChat } from "./stream.js";
import { describeError } from "./errors.js";
import * as A from "./answer.js";
import { ChatStore } from "./store.js";
import { MarkdownView, createMarkdown } from "./markdown.js";
import { Speaker } from "./speech.js";

const RESUME_GRACE_S = 30;
const SAVE_EVERY_MS = 250;
const KEYS = { apiKey: "ssegate.apiKey", model: "ssegate.model", theme: "ssegate.theme", current: "ssegate.current" };

const $ = (id) => document.getElementById(id);
const el = {
  app: document.querySelector(".app"),
  sidebar: $("sidebar"),
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
/** The page is going away: abort errors from its dying connections must not be saved as failures. */
let unloading = false;

/** @type {Map<string, object>} answers being generated, by chat id */
const runs = new Map();
/** @type {Map<string, object>} conversations loaded in this page, by id (runs write to these objects) */
const chats = new Map();
/** The conversation on screen: {id, title, created, updated, messages, saved, ui} */
let chat = null;
/** @type {Map<string, object>} the current chat's message views, by message id */
let views = new Map();

const apiKey = () => el.apiKey.value.trim();

function newChatObject() {
  return { id: A.newId(), title: "New chat", created: Date.now(), updated: 0, messages: [], saved: false, ui: null };
}

function persist(c) {
  if (!c.saved || unloading) return;
  if (!store.save(c)) console.warn("ssegate: this chat could not be saved (browser storage full or disabled)");
}

function schedulePersist(run) {
  if (run.saveTimer) return;
  run.saveTimer = setTimeout(() => {
    run.saveTimer = 0;
    persist(run.chat);
  }, SAVE_EVERY_MS);
}

function persistRuns() {
  for (const run of runs.values()) {
    clearTimeout(run.saveTimer);
    run.saveTimer = 0;
    persist(run.chat);
  }
}

// ---------------------------------------------------------------- small DOM helpers

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, action, { className = "act", aria } = {}) {
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
function icon(name) {
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

async function copyText(text) {
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

async function copyWithFeedback(btn, text) {
  const ok = await copyText(text);
  const label = btn.dataset.label || btn.textContent;
  btn.dataset.label = label;
  btn.textContent = ok ? "Copied" : "Copy failed";
  setTimeout(() => {
    btn.textContent = label;
  }, 1500);
}

/** The live region: the answer being generated, a sentence at a time, and how it ended. */
function announce(text) {
  if (!text) return;
  el.announcer.append(h("p", "", text));
  while (el.announcer.childElementCount > 4) el.announcer.firstElementChild.remove();
}

// ---------------------------------------------------------------- message views

function authorOf(msg) {
  return msg.role === "user" ? "You said" : "ssegate answered";
}

function createView(msg) {
  const root = h("article", `msg ${msg.role}`);
  root.id = `m-${msg.id}`;
  root.dataset.id = msg.id;
  const author = h("h2", "sr-only", authorOf(msg));
  author.id = `m-${msg.id}-author`;
  root.setAttribute("aria-labelledby", author.id);
  const bubble = h("div", "bubble");
  const actions = h("div", "msg-actions");
  root.append(author, bubble, actions);
  if (msg.role === "user") {
    const body = h("div", "content plain");
    bubble.append(body);
    const u = { root, msg, bubble, body, actions, signature: "" };
    u.update = () => updateUser(u);
    return u;
  }
  const reasoning = h("details", "reasoning");
  reasoning.hidden = true;
  const summary = h("summary", "", "Thinking…");
  const reasoningText = h("div", "reasoning-text");
  reasoningText.append(document.createTextNode(""));
  reasoning.append(summary, reasoningText);
  const body = h("div", "content md");
  const tools = h("div", "tools");
  const notice = h("div", "notice");
  notice.hidden = true;
  bubble.append(reasoning, body, tools, notice);
  const v = {
    root, msg, bubble, actions, body, reasoning, summary, reasoningText, tools, notice,
    markdown: new MarkdownView(body, md),
    signature: "",
  };
  v.update = () => updateAssistant(v);
  return v;
}

const view = (msg) => views.get(msg.id);

function updateUser(v) {
  if (v.body.textContent !== v.msg.content) v.body.textContent = v.msg.content;
  renderActions(v);
}

function updateAssistant(v) {
  const msg = v.msg;
  v.root.dataset.state = msg.state;
  // reasoning: collapsed, its text appended as it grows
  if (msg.reasoning) {
    v.reasoning.hidden = false;
    const label = A.reasoningLabel(msg);
    if (v.summary.textContent !== label) v.summary.textContent = label;
    const text = v.reasoningText.firstChild;
    if (msg.reasoning.startsWith(text.data)) text.appendData(msg.reasoning.slice(text.data.length));
    else text.data = msg.reasoning;
  } else {
    v.reasoning.hidden = true;
  }
  // the answer
  v.markdown.set(msg.content);
  v.markdown.flush();
  // tool calls, as cards
  const calls = msg.tool_calls || [];
  const finished = msg.state !== "streaming";
  calls.forEach((call, i) => {
    let card = v.tools.children[i];
    if (!card) {
      card = h("div", "tool-call");
      const head = h("div", "tool-head");
      head.append(h("span", "tool-label", "Tool call"), h("code", "tool-name"));
      const args = h("pre", "tool-args");
      args.tabIndex = 0;
      args.append(h("code"));
      card.append(head, args, h("p", "tool-note", "Requested by the model; this page does not run tools."));
      v.tools.append(card);
    }
    const name = call.function.name || "(unnamed)";
    const nameNode = card.querySelector(".tool-name");
    if (nameNode.textContent !== name) nameNode.textContent = name;
    const args = finished ? A.formatArguments(call.function.arguments) : call.function.arguments;
    const argsNode = card.querySelector(".tool-args code");
    if (argsNode.textContent !== args) argsNode.textContent = args;
  });
  while (v.tools.children.length > calls.length) v.tools.lastElementChild.remove();
  // how it ended, when not well
  renderNotice(v);
  renderActions(v);
}

function renderNotice(v) {
  const msg = v.msg;
  const key = `${msg.state}|${msg.error ? msg.error.code + msg.error.message : ""}`;
  if (v.noticeKey === key) return;
  v.noticeKey = key;
  v.notice.replaceChildren();
  v.notice.hidden = true;
  if (msg.state === "error" || msg.state === "interrupted") {
    const { title, detail } = describeError(msg.error || { code: "unknown" }, { resume: Boolean(msg.streamId) });
    const line = h("p", "notice-title");
    line.textContent = msg.state === "interrupted" ? `Interrupted: ${title}` : title;
    v.notice.append(line);
    if (detail) v.notice.append(h("p", "notice-detail", detail));
    v.notice.hidden = false;
  } else if (msg.state === "cancelled") {
    v.notice.append(h("p", "notice-title", A.hasOutput(msg) ? "Stopped" : "Stopped before the answer started"));
    v.notice.hidden = false;
  }
}

function isLast(msg) {
  return Boolean(chat) && chat.messages[chat.messages.length - 1] === msg;
}

function renderActions(v) {
  const msg = v.msg;
  const busy = Boolean(chat) && runs.has(chat.id);
  const last = isLast(msg);
  const meta = msg.role === "assistant" ? [msg.model || "", msg.usage?.completion_tokens ?? ""].join("|") : "";
  const signature = [msg.state, last, busy, Boolean(msg.content), msg.resumable, meta].join("/");
  if (v.signature === signature) return;
  v.signature = signature;
  const items = [];
  if (msg.role === "user") {
    items.push(button("Edit", "edit", { aria: "Edit this message" }));
    if (busy) items[0].disabled = true;
  } else if (msg.state === "error") {
    items.push(button("Retry", "retry", { className: "act primary" }), button("Edit", "edit-previous", { aria: "Edit your message" }));
  } else if (msg.state !== "streaming") {
    if (msg.state === "interrupted") items.push(button("Retry", "retry", { className: "act primary" }));
    if (last && msg.content && (msg.state === "interrupted" || msg.state === "cancelled")) {
      items.push(button("Continue", "continue", { aria: "Continue this answer" }));
    }
    if (msg.content) items.push(button("Copy", "copy", { aria: "Copy this answer" }));
    if (last && msg.state !== "interrupted") items.push(button("Regenerate", "regenerate", { aria: "Regenerate this answer" }));
    const facts = [];
    if (msg.model) facts.push(msg.model);
    if (typeof msg.usage?.completion_tokens === "number") facts.push(`${msg.usage.completion_tokens} tokens`);
    if (facts.length) items.push(h("span", "meta", facts.join(" · ")));
  }
  for (const item of items) if (item.tagName === "BUTTON" && busy && item.dataset.action !== "copy") item.disabled = true;
  v.actions.replaceChildren(...items);
  v.actions.hidden = items.length === 0;
}

function refreshActions() {
  for (const v of views.values()) renderActions(v);
}

function appendView(msg) {
  el.empty.hidden = true;
  const v = createView(msg);
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

function setPhase(run, phase, detail = "") {
  run.phase = phase;
  run.detail = detail;
  if (chat && run.chat === chat) renderStatus();
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
    if (run.chat !== chat) return;
    view(run.msg)?.update();
    if (!run.finished) announce(run.speaker.next(run.msg.content));
    renderStatus();
    if (stick) scrollToBottom();
  });
}

function startRun(c, msg, { request, resume }) {
  const run = {
    chat: c, msg, controller: new AbortController(), phase: "connecting", detail: "",
    sentAt: performance.now(), firstAt: null, count: 0, ttftMs: null, tps: null,
    deltas: 0, heartbeats: 0, reconnects: 0, error: null,
    speaker: new Speaker(msg.content.length), finished: false, stopping: false, frame: 0, saveTimer: 0,
  };
  runs.set(c.id, run);
  msg.state = "streaming";
  delete msg.error;
  delete msg.resumable;
  if (request) {
    msg.streamId = null;
    msg.lastSeq = 0;
  }
  persist(c);
  setPhase(run, resume ? "reconnecting" : "connecting");
  if (c === chat) {
    view(msg)?.update();
    refreshActions();
  }
  renderList();

  const output = () => {
    const now = performance.now();
    if (run.firstAt === null) {
      run.firstAt = now;
      if (!resume) run.ttftMs = now - run.sentAt;
    }
    run.count += 1;
    run.deltas += 1;
    if (run.count > 1 && now > run.firstAt) run.tps = ((run.count - 1) * 1000) / (now - run.firstAt);
    if (run.phase !== "streaming") setPhase(run, "streaming");
    changed(run);
  };
  const handlers = {
    ...A.partHandlers(msg, { skip: () => run.finished, after: output }),
    onStreamId(id) {
      if (run.stopping) {
        // Stop was pressed before the stream had an id: cancel it now that it has one
        cancelStream({ streamId: id, apiKey: apiKey() });
        run.controller.abort();
        return;
      }
      if (run.finished) return;
      msg.streamId = id;
      schedulePersist(run);
    },
    onConnected() {
      if (!run.finished) setPhase(run, "streaming");
    },
    onStart(data) {
      if (!run.finished && data.model) msg.model = data.model;
    },
    onSeq(seq) {
      if (run.finished) return;
      msg.lastSeq = seq; // with the text it came with: a save is a consistent place to resume from
      schedulePersist(run);
    },
    onHeartbeat() {
      run.heartbeats += 1;
    },
    onReconnect({ attempt }) {
      if (run.finished) return;
      run.reconnects += 1;
      if (run.phase !== "reconnecting" && run.chat === chat) announce("Connection lost, reconnecting.");
      setPhase(run, "reconnecting", attempt > 1 ? `(attempt ${attempt})` : "");
    },
  };
  streamChat({
    request,
    resume: resume ? { streamId: msg.streamId, lastSeq: msg.lastSeq || 0 } : undefined,
    apiKey: apiKey(),
    signal: run.controller.signal,
    wake: window,
    handlers,
  }).then((result) => finishRun(run, result));
  return run;
}

function finishRun(run, result) {
  if (run.finished || unloading) return;
  run.finished = true;
  if (runs.get(run.chat.id) === run) runs.delete(run.chat.id);
  if (run.frame) cancelAnimationFrame(run.frame);
  clearTimeout(run.saveTimer);
  const msg = run.msg;
  let phase;
  let detail = "";
  let ending = "";
  if (result.outcome === "done") {
    A.finishAnswer(msg, result);
    phase = msg.state === "cancelled" ? "cancelled" : "done";
    const parts = [];
    if (result.finish_reason && !["stop", "cancelled", "ended"].includes(result.finish_reason)) {
      parts.push(`(${result.finish_reason})`);
    }
    if (typeof result.usage?.completion_tokens === "number") parts.push(`· ${result.usage.completion_tokens} tokens`);
    detail = parts.join(" ");
    ending = phase === "cancelled" ? "Stopped." : "";
  } else if (result.outcome === "aborted") {
    A.stopAnswer(msg);
    phase = "cancelled";
    ending = "Stopped.";
  } else {
    const error = result.error;
    run.error = error;
    A.failAnswer(msg, error, { resumable: error.code === "connection_lost" && Boolean(msg.streamId) });
    phase = "error";
    const { title } = describeError(error, { resume: Boolean(result.resume), retryAfter: result.retryAfter });
    ending = msg.state === "interrupted" ? `Interrupted: ${title}` : `Error: ${title}`;
  }
  run.phase = phase;
  run.detail = detail;
  run.chat.ui = run; // the status line keeps showing how this chat's last answer went
  persist(run.chat);
  if (run.chat === chat) {
    view(msg)?.update();
    refreshActions();
    announce(run.speaker.final(msg.content));
    announce(ending);
    renderStatus();
    if (stick) scrollToBottom();
  }
  renderList();
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
  if (run.msg.streamId) {
    cancelStream({ streamId: run.msg.streamId, apiKey: apiKey() });
    run.controller.abort();
  } else {
    // no stream id yet (the server holds its answer until the first output): cancel as soon as there is one
    run.stopping = true;
    setTimeout(() => run.controller.abort(), 15000);
  }
  finishRun(run, { outcome: "aborted" });
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
  if (busyHere() || !isLast(msg)) return;
  removeMessage(chat, msg);
  startAnswer(chat);
}

function continueAnswer(msg) {
  if (busyHere() || !isLast(msg)) return;
  const request = requestFor(chat.messages, [{ role: "user", content: A.CONTINUE_PROMPT }]);
  startRun(chat, msg, { request });
}

// ---------------------------------------------------------------- editing a sent message

function openEditor(msg) {
  if (busyHere()) return;
  const v = view(msg);
  if (!v || v.editor) return;
  const form = h("form", "editor");
  const area = h("textarea");
  area.value = msg.content;
  area.setAttribute("aria-label", "Edit your message");
  area.rows = Math.min(10, Math.max(2, msg.content.split("\n").length));
  const row = h("div", "editor-actions");
  const save = button("Send", null, { className: "act primary" });
  save.type = "submit";
  const cancel = button("Cancel", null);
  row.append(cancel, save);
  form.append(area, row);
  v.editor = form;
  v.bubble.hidden = true;
  v.actions.hidden = true;
  v.root.insertBefore(form, v.actions);
  const close = () => {
    form.remove();
    v.editor = null;
    v.bubble.hidden = false;
    v.actions.hidden = v.actions.childElementCount === 0;
  };
  cancel.addEventListener("click", () => {
    close();
    el.prompt.focus();
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      close();
      el.prompt.focus();
    } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const content = area.value;
    if (!content.trim() || busyHere()) return;
    close();
    resend(msg, content);
  });
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

/** Replace a user message (and drop everything after it), then ask again. */
function resend(msg, content) {
  const i = chat.messages.indexOf(msg);
  if (i < 0) return;
  chat.messages = chat.messages.slice(0, i);
  chat.messages.push(A.userMessage(content));
  if (i === 0) chat.title = A.titleFrom(content);
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
      openEditor(msg);
      break;
    case "edit-previous": {
      const i = chat.messages.indexOf(msg);
      const prev = chat.messages.slice(0, i).reverse().find((m) => m.role === "user");
      if (prev) openEditor(prev);
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
  for (const m of c.messages) {
    if (m.role === "assistant" && m.state === "streaming" && m !== last) {
      A.failAnswer(m, { code: "interrupted", message: "", retryable: true });
    }
  }
  if (!last || last.role !== "assistant" || last.state !== "streaming") return;
  if (last.streamId) {
    startRun(c, last, { resume: true });
  } else {
    // the page went away before the server committed the stream: there is nothing to resume
    A.failAnswer(last, { code: "interrupted", message: "", retryable: true });
    persist(c);
    if (c === chat) {
      view(last)?.update();
      refreshActions();
    }
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

function renderList() {
  const entries = store.list();
  const items = entries.map((entry) => {
    const li = h("li", "chat-item");
    li.dataset.id = entry.id;
    const current = chat && chat.id === entry.id;
    if (current) li.classList.add("current");
    const open = button("", "open", { className: "chat-open" });
    open.append(h("span", "chat-title", entry.title));
    if (runs.has(entry.id)) {
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
  });
  el.chatList.replaceChildren(...items);
  el.noChats.hidden = entries.length > 0;
}

function startRename(li) {
  const id = li.dataset.id;
  const c = loadChat(id);
  if (!c) return;
  const input = h("input", "rename-input");
  input.value = c.title;
  input.setAttribute("aria-label", "Chat title");
  input.maxLength = 120;
  li.replaceChildren(input);
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const title = input.value.replace(/\s+/g, " ").trim();
    if (save && title && title !== c.title) {
      c.title = title;
      store.rename(id, title);
    }
    renderList();
    el.chatList.querySelector(`li[data-id="${CSS.escape(id)}"] .chat-open`)?.focus();
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

function deleteChat(id) {
  const run = runs.get(id);
  if (run) {
    if (run.msg.streamId) cancelStream({ streamId: run.msg.streamId, apiKey: apiKey() });
    run.controller.abort();
    finishRun(run, { outcome: "aborted" });
  }
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

el.chatList.addEventListener("click", (e) => {
  const target = e.target instanceof Element ? e.target : null;
  const btn = target && target.closest("button[data-action]");
  const li = btn && btn.closest("li.chat-item");
  if (!li) return;
  const id = li.dataset.id;
  if (btn.dataset.action === "open") {
    if (!chat || chat.id !== id) {
      const c = loadChat(id);
      if (c) openChat(c);
      else renderList();
    }
    closeDrawer();
    el.prompt.focus();
  } else if (btn.dataset.action === "rename") {
    startRename(li);
  } else if (btn.dataset.action === "delete") {
    if (btn.dataset.confirm === "1") {
      deleteChat(id);
      el.prompt.focus();
      return;
    }
    // two steps: the first press asks, the second deletes
    btn.dataset.confirm = "1";
    btn.classList.add("confirm");
    btn.replaceChildren(document.createTextNode("Delete?"));
    const title = li.querySelector(".chat-title")?.textContent || "";
    btn.setAttribute("aria-label", `Confirm: delete “${title}”`);
    const revert = () => renderList();
    btn.addEventListener("blur", revert, { once: true });
  }
});

el.newChat.addEventListener("click", newChat);

// Another tab changed our storage: refresh the list, and the open chat when it is not busy here.
window.addEventListener("storage", (e) => {
  if (e.storageArea !== localStorage || (e.key !== null && !ChatStore.owns(e.key))) return;
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

// ---------------------------------------------------------------- drawer (narrow screens), settings, theme

const narrow = window.matchMedia("(max-width: 800px)");

function openDrawer() {
  document.body.classList.add("drawer-open");
  el.sidebarToggle.setAttribute("aria-expanded", "true");
  el.backdrop.hidden = false;
  (el.chatList.querySelector(".current .chat-open") || el.newChat).focus();
}

function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return false;
  document.body.classList.remove("drawer-open");
  el.sidebarToggle.setAttribute("aria-expanded", "false");
  el.backdrop.hidden = true;
  return true;
}

el.sidebarToggle.addEventListener("click", () => {
  if (document.body.classList.contains("drawer-open")) closeDrawer();
  else openDrawer();
});
el.backdrop.addEventListener("click", () => closeDrawer());
narrow.addEventListener("change", () => closeDrawer());

document.addEventListener("click", (e) => {
  if (el.settings.open && !el.settings.contains(e.target)) el.settings.open = false;
});
el.settings.querySelector("form").addEventListener("submit", (e) => {
  e.preventDefault();
  el.settings.open = false;
});

const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
const theme = () => document.documentElement.dataset.theme || (systemDark.matches ? "dark" : "light");
function renderTheme() {
  el.theme.setAttribute("aria-pressed", String(theme() === "dark"));
}
el.theme.addEventListener("click", () => {
  const next = theme() === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  local.setItem(KEYS.theme, next);
  renderTheme();
});
systemDark.addEventListener("change", renderTheme);

// Escape: close what is open (editor and rename handle their own), else stop the answer.
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || e.defaultPrevented) return;
  if (el.settings.open) {
    el.settings.open = false;
    el.settings.querySelector("summary").focus();
  } else if (closeDrawer()) {
    el.sidebarToggle.focus();
  } else if (busyHere()) {
    e.preventDefault();
    stop();
  }
});

// ---------------------------------------------------------------- models

async function loadModels() {
  let ids = [];
  try {
    const key = apiKey();
    const response = await fetch("/v1/models", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (response.ok) {
      const body = await response.json();
      ids = (Array.isArray(body?.data) ? body.data : []).map((m) => m && m.id).filter((id) => typeof id === "string" && id);
    }
  } catch {
    // no list: the server's default model
  }
  const saved = local.getItem(KEYS.model) || "";
  const options = ids.length ? ids : [""];
  el.model.replaceChildren(...options.map((id) => {
    const option = h("option", "", id || "Server default");
    option.value = id;
    return option;
  }));
  el.model.value = ids.includes(saved) ? saved : options[0];
  el.model.disabled = ids.length < 2; // nothing to choose
}

el.model.addEventListener("change", () => local.setItem(KEYS.model, el.model.value));

let modelsTimer = 0;
el.apiKey.addEventListener("input", () => {
  const v = apiKey();
  if (v) local.setItem(KEYS.apiKey, v);
  else local.removeItem(KEYS.apiKey);
  clearTimeout(modelsTimer);
  modelsTimer = setTimeout(loadModels, 400);
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
window.addEventListener("pagehide", () => {
  persistRuns();
  unloading = true;
});
window.addEventListener("pageshow", () => {
  unloading = false;
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") persistRuns();
});

// ---------------------------------------------------------------- start up

function boot() {
  el.apiKey.value = local.getItem(KEYS.apiKey) || "";
  renderTheme();
  loadModels();
  const id = session.getItem(KEYS.current) || local.getItem(KEYS.current);
  const c = (id && loadChat(id)) || null;
  openChat(c || newChatObject());
  el.prompt.focus();
}

boot();

// The chat page: conversation, composer, stop/retry, stats, and resume across drops and reloads.
// Model output is only ever put in the page as text (Text nodes, textContent), never parsed as HTML.
//
// Storage: sessionStorage "ssegate.turns" holds the finished turns, "ssegate.pending" the answer in flight
// ({streamId, lastSeq, text, model}), written after every event, so a reload restores the conversation and
// the partial answer and resumes with GET /v1/streams/{id}?after=lastSeq. localStorage keeps the settings.

import { cancelStream, streamChat } from "./stream.js";
import { describeError } from "./errors.js";

const TURNS_KEY = "ssegate.turns";
const PENDING_KEY = "ssegate.pending";
const API_KEY_KEY = "ssegate.apiKey";
const MODEL_KEY = "ssegate.model";

const $ = (id) => document.getElementById(id);
const el = {
  messages: $("messages"),
  empty: $("empty"),
  form: $("form"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  retry: $("retry"),
  alert: $("alert"),
  error: $("error"),
  status: $("status"),
  ttft: $("ttft"),
  tps: $("tps"),
  model: $("model"),
  apiKey: $("api-key"),
  settings: $("settings"),
  newChat: $("new-chat"),
};

/** What tests (and curious people) can read: window.__ssegate.state. No secrets in here. */
const state = {
  phase: "idle", // idle | connecting | streaming | reconnecting | done | cancelled | error
  streamId: null,
  lastSeq: 0,
  text: "",
  model: null,
  finishReason: null,
  usage: null,
  error: null, // {code, message, retryable}
  ttftMs: null,
  tps: null,
  deltas: 0,
  heartbeats: 0,
  reconnects: 0,
};
window.__ssegate = { state };

/** @type {{role: "user"|"assistant", content: string, state?: string, error?: object}[]} */
let turns = [];
let controller = null; // AbortController of the answer in flight
let bubble = null; // {root, text: Text} of the answer in flight
let lastFailure = null; // {retry: "resume" | "resend"} after an error

// ---------------------------------------------------------------- storage

function readJSON(storage, key) {
  try {
    const raw = storage.getItem(key);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function writeJSON(storage, key, value) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page still works, it just cannot resume after a reload
  }
}

const saveTurns = () => writeJSON(sessionStorage, TURNS_KEY, turns);
const savePending = () =>
  writeJSON(sessionStorage, PENDING_KEY, {
    streamId: state.streamId,
    lastSeq: state.lastSeq,
    text: state.text,
    model: state.model,
  });
const clearPending = () => writeJSON(sessionStorage, PENDING_KEY, null);

function apiKey() {
  return el.apiKey.value.trim();
}

// ---------------------------------------------------------------- rendering

const nearBottom = () => el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 80;

function scrollDown(force = false) {
  if (force || nearBottom()) el.messages.scrollTop = el.messages.scrollHeight;
}

function addBubble(role, content, bubbleState) {
  el.empty.hidden = true;
  const root = document.createElement("div");
  root.className = `msg ${role}`;
  if (role === "assistant") root.dataset.state = bubbleState || "done";
  const body = document.createElement("div");
  body.className = "content";
  const text = document.createTextNode(content || "");
  body.append(text);
  root.append(body);
  el.messages.append(root);
  scrollDown(true);
  return { root, text };
}

function setBubbleState(b, s) {
  if (b) b.root.dataset.state = s;
}

function renderTurns() {
  for (const node of el.messages.querySelectorAll(".msg")) node.remove();
  el.empty.hidden = turns.length > 0;
  for (const t of turns) addBubble(t.role, t.content, t.state);
}

const STATUS = {
  idle: "Ready",
  connecting: "Waiting for the model…",
  streaming: "Streaming…",
  reconnecting: "Connection lost — reconnecting…",
  done: "Done",
  cancelled: "Stopped",
  error: "Error",
};

function setPhase(phase, detail) {
  state.phase = phase;
  el.status.dataset.phase = phase;
  el.status.textContent = detail ? `${STATUS[phase]} ${detail}` : STATUS[phase];
  const busy = phase === "connecting" || phase === "streaming" || phase === "reconnecting";
  el.send.disabled = busy;
  el.stop.hidden = !busy;
  el.stop.disabled = !busy;
  el.newChat.disabled = busy;
  document.body.classList.toggle("busy", busy);
}

function showError(error, context) {
  if (!error) {
    el.error.textContent = "";
    el.error.hidden = true;
    el.retry.hidden = true;
    el.alert.hidden = true;
    return;
  }
  const { title, detail } = describeError(error, context);
  const strong = document.createElement("strong");
  strong.textContent = title;
  el.error.replaceChildren(strong);
  if (detail) {
    const small = document.createElement("span");
    small.className = "detail";
    small.textContent = ` ${detail}`;
    el.error.append(small);
  }
  el.error.hidden = false;
  el.retry.hidden = !error.retryable;
  el.alert.hidden = false;
}

let statsFrame = 0;
function renderStats() {
  statsFrame = 0;
  el.ttft.textContent = state.ttftMs === null ? "—" : `${Math.round(state.ttftMs)} ms`;
  el.tps.textContent = state.tps === null ? "—" : `${state.tps.toFixed(1)} tok/s`;
}
function scheduleStats() {
  if (!statsFrame) statsFrame = requestAnimationFrame(renderStats);
}

// ---------------------------------------------------------------- streaming

function conversationForApi() {
  return turns
    .filter((t) => t.role === "user" || (t.role === "assistant" && t.state !== "error" && t.content))
    .map(({ role, content }) => ({ role, content }));
}

/** Run one answer into `bubble`: a new one (request) or the rest of one (resume). */
async function run({ request, resume }) {
  controller = new AbortController();
  const sentAt = performance.now();
  let firstAt = null;
  let lastAt = null;
  let count = 0; // deltas on this page load, for the rate
  lastFailure = null;
  showError(null);
  setPhase(resume ? "reconnecting" : "connecting");
  setBubbleState(bubble, "streaming");

  const result = await streamChat({
    request,
    resume,
    apiKey: apiKey(),
    signal: controller.signal,
    handlers: {
      onStreamId(id) {
        state.streamId = id;
        savePending();
      },
      onConnected() {
        setPhase("streaming");
      },
      onStart(data) {
        if (data.model) state.model = data.model;
      },
      onDelta(delta) {
        const now = performance.now();
        if (firstAt === null) {
          firstAt = now;
          if (!resume && state.ttftMs === null) state.ttftMs = now - sentAt;
        }
        lastAt = now;
        count += 1;
        state.deltas += 1;
        if (count > 1 && lastAt > firstAt) state.tps = ((count - 1) * 1000) / (lastAt - firstAt);
        state.text += delta;
        bubble.text.appendData(delta);
        if (state.phase !== "streaming") setPhase("streaming");
        scheduleStats();
        scrollDown();
      },
      onSeq(seq) {
        state.lastSeq = seq;
        savePending(); // text and seq together, so a reload resumes exactly here
      },
      onHeartbeat() {
        state.heartbeats += 1;
      },
      onReconnect({ attempt }) {
        state.reconnects += 1;
        setPhase("reconnecting", `(attempt ${attempt})`);
      },
    },
  });
  controller = null;
  renderStats();
  finish(result);
}

function finish(result) {
  if (result.outcome === "done") {
    state.finishReason = result.finish_reason;
    state.usage = result.usage;
    const cancelled = result.finish_reason === "cancelled";
    setBubbleState(bubble, cancelled ? "cancelled" : "done");
    turns.push({ role: "assistant", content: state.text, state: cancelled ? "cancelled" : "done" });
    saveTurns();
    clearPending();
    const tokens = result.usage && result.usage.completion_tokens;
    const parts = [];
    if (result.finish_reason && !["stop", "cancelled", "ended"].includes(result.finish_reason)) {
      parts.push(`(${result.finish_reason})`);
    }
    if (typeof tokens === "number") parts.push(`· ${tokens} tokens`);
    setPhase(cancelled ? "cancelled" : "done", parts.join(" "));
  } else if (result.outcome === "aborted") {
    state.finishReason = "cancelled";
    setBubbleState(bubble, "cancelled");
    turns.push({ role: "assistant", content: state.text, state: "cancelled" });
    saveTurns();
    clearPending();
    setPhase("cancelled");
  } else {
    const error = result.error;
    state.error = error;
    setBubbleState(bubble, "error");
    // A dropped connection keeps its place, so Retry (or a reload) can still resume it.
    const resumable = error.code === "connection_lost" && state.streamId;
    lastFailure = { retry: resumable ? "resume" : "resend" };
    if (!resumable) {
      turns.push({ role: "assistant", content: state.text, state: "error" });
      saveTurns();
      clearPending();
    }
    showError(error, { resume: Boolean(result.resume), retryAfter: result.retryAfter });
    setPhase("error");
  }
}

function resetAnswer() {
  Object.assign(state, {
    streamId: null,
    lastSeq: 0,
    text: "",
    model: el.model.value.trim() || null,
    finishReason: null,
    usage: null,
    error: null,
    ttftMs: null,
    tps: null,
    deltas: 0,
  });
  renderStats();
}

function startAnswer() {
  resetAnswer();
  bubble = addBubble("assistant", "", "streaming");
  savePending();
  const request = { messages: conversationForApi() };
  if (state.model) request.model = state.model;
  run({ request });
}

function send() {
  if (controller) return;
  const content = el.prompt.value;
  if (!content.trim()) return;
  el.prompt.value = "";
  autosize();
  if (lastFailure && lastFailure.retry === "resume") {
    // Moving on from an answer that could still have been resumed: keep what arrived, as failed.
    turns.push({ role: "assistant", content: state.text, state: "error" });
    clearPending();
  }
  lastFailure = null;
  showError(null);
  turns.push({ role: "user", content });
  saveTurns();
  addBubble("user", content);
  startAnswer();
}

function stop() {
  if (!controller) return;
  if (state.streamId) cancelStream({ streamId: state.streamId, apiKey: apiKey() });
  controller.abort();
}

function retry() {
  if (controller || !lastFailure) return;
  if (lastFailure.retry === "resume") {
    state.error = null;
    run({ resume: { streamId: state.streamId, lastSeq: state.lastSeq } });
    return;
  }
  // Drop the failed answer and ask again with the same conversation.
  const last = turns[turns.length - 1];
  if (last && last.role === "assistant" && last.state === "error") {
    turns.pop();
    saveTurns();
    const nodes = el.messages.querySelectorAll(".msg.assistant");
    nodes[nodes.length - 1]?.remove();
  }
  if (!turns.length || turns[turns.length - 1].role !== "user") return;
  startAnswer();
}

function newChat() {
  if (controller) return;
  turns = [];
  saveTurns();
  clearPending();
  resetAnswer();
  bubble = null;
  lastFailure = null;
  showError(null);
  renderTurns();
  setPhase("idle");
  el.prompt.focus();
}

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
el.retry.addEventListener("click", retry);
el.newChat.addEventListener("click", newChat);
el.apiKey.addEventListener("input", () => {
  const v = apiKey();
  try {
    if (v) localStorage.setItem(API_KEY_KEY, v);
    else localStorage.removeItem(API_KEY_KEY);
  } catch {
    // private mode: keep it for this page only
  }
});
el.model.addEventListener("input", () => {
  try {
    localStorage.setItem(MODEL_KEY, el.model.value.trim());
  } catch {
    // ignore
  }
});

// Settings: a click outside the open panel closes it.
document.addEventListener("click", (e) => {
  if (el.settings.open && !el.settings.contains(e.target)) el.settings.open = false;
});
el.settings.querySelector("form").addEventListener("submit", (e) => {
  e.preventDefault();
  el.settings.open = false;
});

// ---------------------------------------------------------------- start up

function restore() {
  try {
    el.apiKey.value = localStorage.getItem(API_KEY_KEY) || "";
    el.model.value = localStorage.getItem(MODEL_KEY) || "";
  } catch {
    // ignore
  }
  const saved = readJSON(sessionStorage, TURNS_KEY);
  turns = Array.isArray(saved) ? saved.filter((t) => t && (t.role === "user" || t.role === "assistant")) : [];
  renderTurns();
  renderStats();
  setPhase("idle");

  const pending = readJSON(sessionStorage, PENDING_KEY);
  if (!pending) return;
  Object.assign(state, {
    streamId: pending.streamId || null,
    lastSeq: Number.isSafeInteger(pending.lastSeq) ? pending.lastSeq : 0,
    text: typeof pending.text === "string" ? pending.text : "",
    model: pending.model || null,
  });
  bubble = addBubble("assistant", state.text, "streaming");
  if (state.streamId) {
    run({ resume: { streamId: state.streamId, lastSeq: state.lastSeq } });
  } else {
    // Reloaded before the stream was committed: there is nothing to resume.
    finish({ outcome: "error", error: { code: "interrupted", message: "", retryable: true } });
  }
}

restore();

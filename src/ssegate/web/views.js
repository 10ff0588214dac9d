// How a message looks: an <article> labelled by its author. A user message is text; an answer is collapsed
// reasoning, markdown (markdown.js), tool-call cards (shown, never run), and how it ended when not well (the
// error in place of the answer, or "Interrupted: reason" under the partial answer), then its buttons.
// Buttons carry data-action; the page handles their clicks in one listener.

import * as A from "./answer.js";
import { button, h } from "./dom.js";
import { describeError } from "./errors.js";
import { MarkdownView } from "./markdown.js";

function authorOf(msg) {
  return msg.role === "user" ? "You said" : "ssegate answered";
}

/**
 * The view of one message. `ctx` tells it about its surroundings: {md, isLast(msg), busy()} (a busy chat
 * disables the buttons that would start another answer). view.update() redraws from the message object;
 * view.renderActions() only the buttons.
 */
export function createView(msg, ctx) {
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
    u.update = () => updateUser(u, ctx);
    u.renderActions = () => renderActions(u, ctx);
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
    markdown: new MarkdownView(body, ctx.md),
    signature: "",
  };
  v.update = () => updateAssistant(v, ctx);
  v.renderActions = () => renderActions(v, ctx);
  return v;
}

function updateUser(v, ctx) {
  if (v.body.textContent !== v.msg.content) v.body.textContent = v.msg.content;
  renderActions(v, ctx);
}

function updateAssistant(v, ctx) {
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
  renderActions(v, ctx);
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

function renderActions(v, ctx) {
  const msg = v.msg;
  const busy = ctx.busy();
  const last = ctx.isLast(msg);
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

/**
 * Edit a sent message in place: its bubble becomes a text box with Send and Cancel (Enter sends, Shift+Enter
 * adds a line, Escape cancels). onSend(content) gets the new text; onClose() runs when it closes either way.
 */
export function openEditor(v, { onSend, onClose }) {
  const msg = v.msg;
  if (v.editor) return;
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
    onClose();
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      close();
      onClose();
    } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const content = area.value;
    if (!content.trim()) return;
    close();
    onSend(content);
  });
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

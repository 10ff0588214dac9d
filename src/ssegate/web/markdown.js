// Answers rendered as markdown, safely and incrementally.
//
// Safety: markdown-it parses with `html: false` (raw HTML in the source stays text), links and images are
// only accepted with an absolute http:, https: or mailto: URL (anything else, `javascript:` and `data:`
// included, stays as literal text), and DOMPurify then sanitizes markdown-it's HTML against a short allow
// list of tags and attributes before any of it reaches the page. Every link opens in a new tab with
// rel="noopener noreferrer". Images are rendered as links ("Image: alt"), never fetched: an answer cannot
// make the browser load anything, so it cannot leak the conversation through an image URL.
// Headings are moved down two levels (# → h3), below the page's h1 and each message's h2.
//
// Streaming: an answer's source only grows. A block (paragraph, list, table, code fence...) is final once
// the next top-level block has started on a complete line: CommonMark decides block structure line by line,
// so nothing after that line can change it. MarkdownView renders each final block once, appends it, and
// re-renders only the open tail (usually the last block), at most once per animation frame, so a long
// answer costs O(length) overall and the finished part of the page never flickers. (One difference from
// rendering the whole text at once: a link reference definition, `[x]: url`, serves only the blocks after
// it; models write inline links.)

import markdownit from "./vendor/markdown-it.esm.min.js";
import DOMPurify from "./vendor/purify.es.js";

const SAFE_URL = /^(?:https?:|mailto:)/i;

const PURIFY = {
  ALLOWED_TAGS: [
    "p", "br", "hr", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a",
  ],
  ALLOWED_ATTR: ["href", "title", "start", "style", "class"],
  ALLOWED_URI_REGEXP: SAFE_URL,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};
const ALIGN = /^text-align:(left|right|center)$/;
const CLASS_TOKEN = /^(language-[\w+#.-]{1,40}|image-link|md-h[1-6])$/;

let hooked = false;
function installHooks() {
  if (hooked) return;
  hooked = true;
  DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
    if (data.attrName === "style") {
      data.keepAttr = ALIGN.test(data.attrValue.replace(/\s+/g, ""));
    } else if (data.attrName === "class") {
      const kept = data.attrValue.split(/\s+/).filter((c) => CLASS_TOKEN.test(c));
      if (kept.length) data.attrValue = kept.join(" ");
      else data.keepAttr = false;
    }
  });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

/** A markdown-it configured for model output (see the top of this file). */
export function createMarkdown() {
  const md = markdownit({ html: false, linkify: true, breaks: true, typographer: false });
  md.validateLink = (url) => SAFE_URL.test(url.trim());
  md.renderer.rules.image = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const alt = self.renderInlineAsText(token.children || [], options, env).trim();
    const href = md.utils.escapeHtml(token.attrGet("src") || "");
    return `<a href="${href}" class="image-link">${md.utils.escapeHtml(`Image: ${alt || "untitled"}`)}</a>`;
  };
  const demoted = (tag) => `h${Math.min(6, Number(tag.slice(1)) + 2)}`;
  md.renderer.rules.heading_open = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    token.attrJoin("class", `md-${token.tag}`);
    token.tag = demoted(token.tag);
    return self.renderToken(tokens, idx, options);
  };
  md.renderer.rules.heading_close = (tokens, idx, options, env, self) => {
    tokens[idx].tag = demoted(tokens[idx].tag);
    return self.renderToken(tokens, idx, options);
  };
  return md;
}

function offsetOfLine(text, line) {
  let at = 0;
  for (let i = 0; i < line; i++) {
    const nl = text.indexOf("\n", at);
    if (nl < 0) return text.length;
    at = nl + 1;
  }
  return at;
}

/**
 * Parse `text` and find where its final blocks end: the start of the last top-level block (not the first)
 * whose first line is complete. Returns the tokens, the index of that block's first token (-1: none is
 * final yet) and `cut`, the character offset of its first line.
 */
export function parseStable(md, text, env = {}) {
  const tokens = md.parse(text, env);
  let complete = 0; // lines that end with "\n": a line still arriving could turn into something else
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) complete++;
  let index = -1;
  let line = -1;
  let seenFirst = false;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.level !== 0 || t.nesting === -1 || !t.map) continue;
    if (!seenFirst) {
      seenFirst = true;
      continue;
    }
    if (t.map[0] < complete) {
      index = i;
      line = t.map[0];
    }
  }
  return { tokens, index, cut: index < 0 ? 0 : offsetOfLine(text, line) };
}

/** Sanitized DOM for some of markdown-it's tokens, with copy buttons on code blocks. */
function fragment(md, tokens, env) {
  installHooks();
  const frag = DOMPurify.sanitize(md.renderer.render(tokens, md.options, env), PURIFY);
  for (const pre of frag.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const lang = ((code && code.className.match(/language-([\w+#.-]+)/)) || [])[1] || "";
    const box = document.createElement("div");
    box.className = "codeblock";
    const bar = document.createElement("div");
    bar.className = "codebar";
    const label = document.createElement("span");
    label.textContent = lang || "code";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", lang ? `Copy ${lang} code` : "Copy code");
    bar.append(label, copy);
    pre.tabIndex = 0; // it scrolls sideways: keyboard users must be able to reach it
    pre.replaceWith(box);
    box.append(bar, pre);
  }
  for (const table of frag.querySelectorAll("table")) {
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.tabIndex = 0;
    table.replaceWith(wrap);
    wrap.append(table);
  }
  return frag;
}

/** Render markdown `text` at once into a fresh fragment (e.g. for tests or a finished answer). */
export function renderMarkdown(md, text) {
  const env = {};
  return fragment(md, md.parse(text, env), env);
}

/**
 * The DOM-free half of incremental rendering: follows one growing source and says, at each step, which
 * tokens just became final (render them once, append them) and which form the open tail (re-render them).
 * `parsed` counts the characters parsed so far (each step parses the open tail only).
 */
export class MarkdownStream {
  constructor(md) {
    this.md = md;
    this.references = {}; // link reference definitions from the final blocks, for the later ones
    this.committed = 0; // source[0:committed] is final
    this.lastTail = null;
    this.parsed = 0;
  }

  /**
   * The source is now `text` (what it was, plus more). Returns null when nothing changed, else
   * {final: tokens that became final (or null), open: the open tail's tokens, env: for rendering both}.
   */
  update(text) {
    const tail = text.slice(this.committed);
    if (tail === this.lastTail) return null;
    const env = { references: { ...this.references } };
    const parsed = parseStable(this.md, tail, env);
    this.parsed += tail.length;
    // a lone CR is a line break to markdown-it but not to parseStable's line count: keep such a tail open
    const index = /\r(?!\n)/.test(tail) ? -1 : parsed.index;
    if (index <= 0) {
      this.lastTail = tail;
      return { final: null, open: parsed.tokens, env };
    }
    const done = tail.slice(0, parsed.cut);
    if (done.includes("]:")) this.md.parse(done, { references: this.references }); // keep their definitions
    this.committed += parsed.cut;
    this.lastTail = tail.slice(parsed.cut);
    return { final: parsed.tokens.slice(0, index), open: parsed.tokens.slice(index), env };
  }
}

/** One answer's markdown, growing: final blocks rendered once, the open tail re-rendered once per frame. */
export class MarkdownView {
  constructor(root, md) {
    this.root = root;
    this.md = md;
    this.frame = 0;
    this.reset();
  }

  /** Forget everything (the answer's text was replaced, not extended). */
  reset() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.root.replaceChildren();
    this.stream = new MarkdownStream(this.md);
    this.source = "";
    this.tail = []; // the nodes of the open tail
  }

  /** The answer's source is now `text` (the old one plus more); drawn on the next animation frame. */
  set(text) {
    if (text.length < this.stream.committed) this.reset();
    this.source = text;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** Draw now (the answer ended, or it is being shown whole). */
  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    const step = this.stream.update(this.source);
    if (!step) return;
    for (const node of this.tail) node.remove();
    if (step.final) this.root.append(fragment(this.md, step.final, step.env));
    const open = fragment(this.md, step.open, step.env);
    this.tail = [...open.childNodes];
    this.root.append(open);
  }
}

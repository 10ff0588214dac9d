// Incremental markdown: finished blocks are final, only the open tail is parsed again, and the pieces add
// up to exactly what rendering the whole answer at once gives (run: node --test tests/js/).
// Sanitizing needs a DOM: the browser test covers it with hostile markdown in real Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";

import { MarkdownStream, createMarkdown, parseStable } from "../../src/ssegate/web/markdown.js";

const md = createMarkdown();

const DOC = `# Streaming answers

Some **bold**, some *emphasis*, \`inline code\` and a [link](https://example.com/a_b).
A second line in the same paragraph.

- one
- two
  - nested

1. first
2. second

| name | value |
|:-----|------:|
| a    | 1     |
| b    | 2     |

\`\`\`python
def f(x):

    return x * 2
\`\`\`

> a quote
continued lazily

    indented code

    more of it

Setext heading
--------------

See [the spec][spec] and https://commonmark.org.

[spec]: https://spec.commonmark.org/

---

Last paragraph.
`;

/** Feed `text` in pieces of `size` and collect what a MarkdownView would draw; returns the final HTML. */
function stream(text, size) {
  const s = new MarkdownStream(md);
  let finalHtml = "";
  let tailHtml = "";
  for (let at = size; ; at = Math.min(text.length, at + size)) {
    const step = s.update(text.slice(0, at));
    if (step) {
      if (step.final) finalHtml += md.renderer.render(step.final, md.options, step.env);
      tailHtml = md.renderer.render(step.open, md.options, step.env);
    }
    if (at === text.length) break;
  }
  return { html: finalHtml + tailHtml, parsed: s.parsed, committed: s.committed };
}

test("streamed in pieces of any size, the result is the whole answer rendered at once", () => {
  const whole = md.render(DOC);
  for (const size of [1, 2, 3, 5, 8, 13, 64, DOC.length]) {
    assert.equal(stream(DOC, size).html, whole, `pieces of ${size}`);
  }
});

test("a long answer is parsed about once, not once per piece (no O(n^2))", () => {
  const para = (i) => `Paragraph ${i} has a few words, **some bold**, and a [link](https://example.com/${i}).\n\n`;
  const text = Array.from({ length: 400 }, (_, i) => para(i)).join(""); // ~30 KB
  const { html, parsed, committed } = stream(text, 4);
  assert.equal(html, md.render(text));
  // each piece re-parses only the open block: a few times the block size, never the whole answer
  const perPiece = parsed / (text.length / 4);
  assert.ok(perPiece < 2 * para(399).length, `parsed ${parsed} chars for a ${text.length}-char answer`);
  assert.ok(committed > text.length - 2 * para(399).length);
});

test("a block is final only once the next one starts on a complete line", () => {
  assert.equal(parseStable(md, "para one\n\n- item").index, -1); // "- item" may still grow into anything
  const r = parseStable(md, "para one\n\n- item\n");
  assert.equal(r.cut, "para one\n\n".length);
  assert.equal(r.tokens[r.index].type, "bullet_list_open");
});

test("an incomplete line that could join the block before it keeps that block open", () => {
  // "   m" could become "    more": a continuation of the indented code block
  assert.equal(parseStable(md, "    code\n\n   m").index, -1);
  // a setext underline arriving turns the paragraph into a heading: nothing final before it
  assert.equal(parseStable(md, "Title\n---").index, -1);
});

test("an open code fence keeps everything after it open, blank lines included", () => {
  const r = parseStable(md, "intro\n\n```js\nlet a = 1;\n\nlet b = 2;\n");
  assert.equal(r.cut, "intro\n\n".length);
  assert.equal(r.tokens[r.index].type, "fence");
});

test("reference definitions in final blocks serve links in later blocks", () => {
  const text = "[spec]: https://spec.commonmark.org/\n\nintro\n\nSee [the spec][spec].\n\nend\n";
  assert.equal(stream(text, 3).html, md.render(text));
  assert.match(stream(text, 3).html, /<a href="https:\/\/spec.commonmark.org\/">the spec<\/a>/);
});

test("CRLF line ends stream like LF; a lone CR keeps the tail open", () => {
  const crlf = "one\r\n\r\ntwo\r\n\r\n- three\r\n";
  assert.equal(stream(crlf, 2).html, md.render(crlf));
  const s = new MarkdownStream(md);
  s.update("one\r\rtwo\r");
  assert.equal(s.committed, 0);
});

test("unsafe URLs stay text; images become links; raw HTML is escaped; headings move down two levels", () => {
  const html = md.render(
    [
      "[x](javascript:alert(1)) [y](data:text/html;base64,PHNjcmlwdD4=) [z](vbscript:msgbox) [rel](/local)",
      "![pic](https://example.com/a.png) ![bad](javascript:alert(1))",
      "<img src=x onerror=alert(1)> <script>alert(2)</script>",
      "[ok](https://example.com) <https://auto.example> <javascript:alert(3)>",
      "",
      "# Big",
    ].join("\n"),
  );
  assert.doesNotMatch(html, /href="(javascript|data|vbscript)/i);
  assert.doesNotMatch(html, /<img|<script/i);
  assert.match(html, /\[x\]\(javascript:alert\(1\)\)/); // left as the text it was
  assert.match(html, /<a href="https:\/\/example.com\/a.png" class="image-link">Image: pic<\/a>/);
  assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
  assert.match(html, /<a href="https:\/\/example.com">ok<\/a>/);
  assert.match(html, /<a href="https:\/\/auto.example">/);
  assert.match(html, /<h3 class="md-h1">Big<\/h3>/);
});

// What the live region announces: whole sentences as they complete, never tokens (run: node --test tests/js/).
import { test } from "node:test";
import assert from "node:assert/strict";

import { Speaker, speakable } from "../../src/ssegate/web/speech.js";

/** Feed `text` a few characters at a time; every announcement made. */
function announcements(text, size = 3) {
  const speaker = new Speaker();
  const said = [];
  for (let at = size; at < text.length + size; at += size) {
    const piece = speaker.next(text.slice(0, Math.min(at, text.length)));
    if (piece) said.push(piece);
  }
  const rest = speaker.final(text);
  if (rest) said.push(rest);
  return said;
}

test("one announcement per completed sentence, the rest at the end", () => {
  const said = announcements("First sentence here. Second one! Third? And an unfinished fourth");
  assert.deepEqual(said, ["First sentence here.", "Second one!", "Third?", "And an unfinished fourth"]);
});

test("a period without a following space is not a sentence end yet (3.14, example.com)", () => {
  const speaker = new Speaker();
  assert.equal(speaker.next("Pi is 3."), null);
  assert.equal(speaker.next("Pi is 3.14 and e is 2.71. Next"), "Pi is 3.14 and e is 2.71.");
});

test("line breaks end sentences too (lists, headings)", () => {
  assert.deepEqual(announcements("# Title\n- one\n- two\n"), ["Title", "one", "two"]);
});

test("markdown punctuation is not read out", () => {
  assert.equal(speakable("**Bold** and _it_ with `code` and [a link](https://x.y/z)."), "Bold and it with code and a link.");
  assert.equal(speakable("| a | b |\n|---|--:|\n| 1 | 2 |"), "a b 1 2");
  assert.equal(speakable("```python\nprint(1)\n```"), "print(1)");
  assert.equal(speakable("> quoted"), "quoted");
});

test("far fewer announcements than tokens", () => {
  const text = "word ".repeat(200) + "end. " + "more ".repeat(200) + "done.";
  assert.equal(announcements(text, 5).length, 2);
});

test("a speaker that starts late skips what was already on screen", () => {
  const speaker = new Speaker("Already shown. ".length);
  assert.equal(speaker.next("Already shown. New sentence. Partial"), "New sentence.");
});

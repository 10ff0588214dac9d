// The chat page's SSE parser against the WHATWG rules (run: node --test tests/js/).
import { test } from "node:test";
import assert from "node:assert/strict";

import { SSEParser, parseAll } from "../../src/ssegate/web/sse.js";

/** Feed `chunks` one by one; return what the parser reported. */
function run(chunks) {
  const events = [];
  const comments = [];
  const retries = [];
  const parser = new SSEParser({
    onEvent: (e) => events.push(e),
    onComment: (c) => comments.push(c),
    onRetry: (ms) => retries.push(ms),
  });
  for (const chunk of chunks) parser.feed(chunk);
  parser.end();
  return { events, comments, retries, parser };
}

/** Every way of cutting `text` in two, and one character at a time. */
function splits(text) {
  const out = [[text], [...text]];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

test("LF, CRLF and CR all end lines, in one chunk and split anywhere", () => {
  for (const eol of ["\n", "\r\n", "\r"]) {
    const text = `id: s:1${eol}event: start${eol}data: {"a":1}${eol}${eol}data: two${eol}${eol}`;
    for (const chunks of splits(text)) {
      const { events } = run(chunks);
      assert.deepEqual(
        events,
        [
          { type: "start", data: '{"a":1}', lastEventId: "s:1" },
          { type: "message", data: "two", lastEventId: "s:1" },
        ],
        `eol ${JSON.stringify(eol)} chunks ${JSON.stringify(chunks)}`,
      );
    }
  }
});

test("a CR ending one chunk and an LF starting the next are one line break", () => {
  const { events } = run(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
  assert.deepEqual(events.map((e) => e.data), ["a\nb"]);
});

test("CR then CR is two line breaks, so a blank line", () => {
  const { events } = run(["data: x\r", "\r", "data: y\r\r"]);
  assert.deepEqual(events.map((e) => e.data), ["x", "y"]);
});

test("mixed line endings in one stream", () => {
  const { events } = run(["data: 1\rdata: 2\ndata: 3\r\n\n"]);
  assert.deepEqual(events.map((e) => e.data), ["1\n2\n3"]);
});

test("data lines are joined with LF, and one trailing LF is dropped", () => {
  assert.deepEqual(parseAll("data: a\ndata: b\ndata:\ndata:  c\n\n").map((e) => e.data), ["a\nb\n\n c"]);
});

test("only one space after the colon is removed; no colon means an empty value", () => {
  const events = parseAll("data:no space\n\ndata:  two spaces\n\ndata\n\ndata\ndata\n\n");
  // "data" alone is the field with an empty value; two of them make "\n"
  assert.deepEqual(events.map((e) => e.data), ["no space", " two spaces", "", "\n"]);
});

test("an event with no data is not dispatched, but its id still sets the last event id", () => {
  const { events, parser } = run(["event: start\n\n", "id: s:9\n\n", ":just a comment\n\n", "\n\n"]);
  assert.deepEqual(events, []);
  assert.equal(parser.lastEventId, "s:9");
});

test("the event type resets after each event; the id carries over", () => {
  const events = parseAll("id: s:1\nevent: done\ndata: x\n\ndata: y\n\n");
  assert.deepEqual(events, [
    { type: "done", data: "x", lastEventId: "s:1" },
    { type: "message", data: "y", lastEventId: "s:1" },
  ]);
});

test("an empty id line resets the last event id; an id with NUL is ignored", () => {
  const events = parseAll("id: a\ndata: 1\n\nid\ndata: 2\n\nid: b\ndata: 3\n\nid: c\0d\ndata: 4\n\n");
  assert.deepEqual(events.map((e) => e.lastEventId), ["a", "", "b", "b"]);
});

test("comments are reported (heartbeats) and never dispatched", () => {
  const { events, comments } = run([": ping\n", "\n", ":\n", ":no-space\r\n", "data: x\n: mid\n\n"]);
  assert.deepEqual(comments, ["ping", "", "no-space", "mid"]);
  assert.deepEqual(events.map((e) => e.data), ["x"]);
});

test("retry takes only ASCII digits", () => {
  const { retries, parser } = run(["retry: 2000\n", "retry: 1.5\n", "retry: x\n", "retry: \n", "retry: 300\n\n"]);
  assert.deepEqual(retries, [2000, 300]);
  assert.equal(parser.retry, 300);
});

test("a BOM at the start is skipped, even alone in the first chunk; a later one is not", () => {
  assert.deepEqual(parseAll("\uFEFFdata: a\n\n").map((e) => e.data), ["a"]);
  assert.deepEqual(run(["\uFEFF", "data: b\n\n"]).events.map((e) => e.data), ["b"]);
  // a BOM after the start is an ordinary character: here it makes the field name unknown
  assert.deepEqual(parseAll("data: a\n\n\uFEFFdata: b\n\n").map((e) => e.data), ["a"]);
  assert.deepEqual(parseAll("data: \uFEFFc\n\n").map((e) => e.data), ["\uFEFFc"]);
});

test("unknown fields are ignored; field names are case-sensitive", () => {
  assert.deepEqual(parseAll("foo: bar\nData: no\ndata: yes\n\n").map((e) => e.data), ["yes"]);
});

test("an event not closed by a blank line before the end is discarded", () => {
  assert.deepEqual(parseAll("data: a\n\ndata: b\n").map((e) => e.data), ["a"]);
  assert.deepEqual(parseAll("data: a\n\ndata: b").map((e) => e.data), ["a"]);
});

test("an ssegate stream with a heartbeat, fed a few bytes at a time through a TextDecoder", () => {
  const wire =
    "retry: 2000\nid: S:1\nevent: start\ndata: {\"stream_id\": \"S\", \"model\": \"demo\"}\n\n" +
    'id: S:2\ndata: {"delta": "h\u00e9llo \u{1F600}"}\n\n: ping\n\n' +
    'id: S:3\nevent: done\ndata: {"finish_reason": "stop", "usage": {}}\n\n';
  const bytes = new TextEncoder().encode(wire);
  for (const size of [1, 2, 3, 7, 64]) {
    const decoder = new TextDecoder();
    const events = [];
    const comments = [];
    const parser = new SSEParser({ onEvent: (e) => events.push(e), onComment: (c) => comments.push(c) });
    for (let i = 0; i < bytes.length; i += size) {
      parser.feed(decoder.decode(bytes.subarray(i, i + size), { stream: true }));
    }
    parser.feed(decoder.decode());
    assert.deepEqual(events.map((e) => [e.type, e.lastEventId]), [
      ["start", "S:1"],
      ["message", "S:2"],
      ["done", "S:3"],
    ]);
    assert.equal(JSON.parse(events[1].data).delta, "h\u00e9llo \u{1F600}");
    assert.deepEqual(comments, ["ping"]);
    assert.equal(parser.retry, 2000);
  }
});

test("markup in data is just text", () => {
  const events = parseAll('data: {"delta": "<img src=x onerror=alert(1)>"}\n\n');
  assert.equal(JSON.parse(events[0].data).delta, "<img src=x onerror=alert(1)>");
});

// How much incremental markdown saves over re-rendering the whole answer for every delta (not a test:
// run `node tests/js/bench-markdown.mjs`). Prints, for answers of growing length, the time to render every
// step of a stream of 4-character deltas both ways, and how many times the text was parsed in all.
import { MarkdownStream, createMarkdown } from "../../src/ssegate/web/markdown.js";

const md = createMarkdown();
const block = (i) => `Paragraph ${i} has a few words, **some bold**, a list:\n\n- item ${i}\n- another\n\n\`\`\`js\nlet x = ${i};\n\`\`\`\n\n`;
const STEP = 4; // characters per delta, about one token

for (const blocks of [25, 100, 400]) {
  const text = Array.from({ length: blocks }, (_, i) => block(i)).join("");
  const steps = [];
  for (let at = STEP; at < text.length; at += STEP) steps.push(text.slice(0, at));
  steps.push(text);

  let t = performance.now();
  const stream = new MarkdownStream(md);
  for (const source of steps) {
    const r = stream.update(source);
    if (r && r.final) md.renderer.render(r.final, md.options, r.env);
    if (r) md.renderer.render(r.open, md.options, r.env);
  }
  const incremental = performance.now() - t;

  t = performance.now();
  for (const source of steps) md.render(source);
  const whole = performance.now() - t;

  console.log(
    `${String(text.length).padStart(6)} chars, ${String(steps.length).padStart(5)} deltas: ` +
      `incremental ${incremental.toFixed(0).padStart(5)} ms (text parsed ${(stream.parsed / text.length).toFixed(1)}x), ` +
      `whole answer per delta ${whole.toFixed(0).padStart(6)} ms`,
  );
}

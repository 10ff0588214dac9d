// What a screen reader hears of an answer being generated: whole sentences, not tokens. No DOM.
//
// A Speaker follows the growing markdown source of one answer. next(text) returns the sentences completed
// since the last call (or null), final(text) whatever is left at the end; both as speakable text, the
// markdown punctuation (emphasis marks, heading hashes, table pipes, link targets, code fences) taken out.
// The page puts each returned piece in a polite live region, so an answer is announced a sentence at a time.

// A sentence ends at . ! ? (or their full-width forms) followed by whitespace, or at a line break.
const SENTENCE_END = /[.!?。！？…](?=\s)|\n/g;

/** Markdown source → text to be read aloud. */
export function speakable(source) {
  return source
    .replace(/^\s*(```|~~~).*$/gm, " ") // code fence lines
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // [text](url) and ![alt](src): the words only
    .replace(/^\s{0,3}#{1,6}\s+/gm, "") // heading marks
    .replace(/^\s*>\s?/gm, "") // quote marks
    .replace(/^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/gm, " ") // table rule lines
    .replace(/\|/g, " ") // table cell borders
    .replace(/(\*\*|__|~~|`+)/g, "") // emphasis and code marks
    .replace(/(^|\s)[*_](?=\S)|(?<=\S)[*_](?=\s|$)/g, "$1") // single * or _ emphasis
    .replace(/^\s*([-*+]|\d+[.)])\s+/gm, "") // list bullets
    .replace(/\s+/g, " ")
    .trim();
}

export class Speaker {
  /** @param {number} [from] characters of the source already spoken (or shown before this page listened) */
  constructor(from = 0) {
    this.spoken = from;
    this.scanned = from; // no sentence ends between spoken and here (so each character is scanned ~once)
  }

  /** The sentences completed since the last call, speakable, or null. */
  next(source) {
    // the character before `scanned` may be a "." whose following space had not arrived yet
    SENTENCE_END.lastIndex = Math.max(this.spoken, this.scanned - 1);
    let end = -1;
    for (let m = SENTENCE_END.exec(source); m; m = SENTENCE_END.exec(source)) end = m.index + 1;
    this.scanned = source.length;
    if (end <= this.spoken) return null;
    const piece = speakable(source.slice(this.spoken, end));
    this.spoken = end;
    return piece || null;
  }

  /** Everything not yet spoken: the answer is over. */
  final(source) {
    const piece = speakable(source.slice(this.spoken));
    this.spoken = this.scanned = source.length;
    return piece || null;
  }
}

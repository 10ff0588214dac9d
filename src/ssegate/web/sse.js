// An incremental Server-Sent Events parser that follows the WHATWG HTML spec, section 9.2.6
// ("Interpreting an event stream"). No DOM, no I/O: feed it decoded text in chunks of any size and it calls
// you back once per dispatched event, so it runs (and is tested) in Node as well as in the browser.
//
//   const parser = new SSEParser({ onEvent(e) {...}, onComment(text) {...}, onRetry(ms) {...} });
//   parser.feed(decoder.decode(bytes, { stream: true }));   // as often as bytes arrive
//   parser.end();                                           // at end of stream: drops a half-received event
//
// What the spec asks, and where it happens here:
// - a U+FEFF BOM at the very start of the stream is skipped (feed);
// - a line ends with CRLF, LF or CR, also when a CR ends one chunk and its LF starts the next (feed);
// - "field: value" loses exactly one space after the colon; a line without a colon is a field with an
//   empty value; a line starting with ":" is a comment (processLine);
// - data lines are joined with "\n"; an event is dispatched only on a blank line, and never when it has no
//   data; the id persists from event to event until another id line changes it (dispatch).

const BOM = "\uFEFF";

export class SSEParser {
  /**
   * @param {{
   *   onEvent?: (event: {type: string, data: string, lastEventId: string}) => void,
   *   onComment?: (text: string) => void,
   *   onRetry?: (ms: number) => void,
   * }} [handlers]
   */
  constructor({ onEvent = () => {}, onComment = () => {}, onRetry = () => {} } = {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    /** The last event ID string of the stream (the spec's "last event ID"). */
    this.lastEventId = "";
    /** The reconnection time the server asked for, in ms, or null. */
    this.retry = null;
    this._buffer = ""; // text of the current, unfinished line
    this._started = false; // seen the first character of the stream (for the BOM rule)
    this._skipLF = false; // the previous chunk ended with CR: an LF starting the next one belongs to it
    this._data = "";
    this._type = "";
    this._idBuffer = "";
  }

  /** Feed the next piece of decoded text. */
  feed(chunk) {
    if (!chunk) return;
    if (!this._started) {
      this._started = true;
      if (chunk.startsWith(BOM)) chunk = chunk.slice(1);
      if (!chunk) return;
    }
    if (this._skipLF) {
      this._skipLF = false;
      if (chunk[0] === "\n") chunk = chunk.slice(1);
    }
    let start = 0;
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) continue; // neither LF nor CR
      const line = this._buffer + chunk.slice(start, i);
      this._buffer = "";
      if (c === 13) {
        if (i + 1 < n) {
          if (chunk.charCodeAt(i + 1) === 10) i++; // CRLF
        } else {
          this._skipLF = true; // CR at the end of the chunk: maybe CRLF split in two
        }
      }
      start = i + 1;
      this._processLine(line);
    }
    if (start < n) this._buffer += chunk.slice(start);
  }

  /** End of stream: per the spec, an event that was not terminated by a blank line is discarded. */
  end() {
    this._buffer = "";
    this._data = "";
    this._type = "";
    this._skipLF = false;
  }

  _processLine(line) {
    if (line === "") {
      this._dispatch();
      return;
    }
    if (line[0] === ":") {
      this.onComment(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    }
    switch (field) {
      case "event":
        this._type = value;
        break;
      case "data":
        this._data += value + "\n";
        break;
      case "id":
        if (!value.includes("\0")) this._idBuffer = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) {
          this.retry = parseInt(value, 10);
          this.onRetry(this.retry);
        }
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  _dispatch() {
    this.lastEventId = this._idBuffer;
    if (this._data === "") {
      this._type = "";
      return;
    }
    const event = {
      type: this._type || "message",
      data: this._data.slice(0, -1), // the last "\n" is not part of the data
      lastEventId: this.lastEventId,
    };
    this._data = "";
    this._type = "";
    this.onEvent(event);
  }
}

/** Parse a whole stream held in one string (handy in tests); returns the dispatched events. */
export function parseAll(text) {
  const events = [];
  const parser = new SSEParser({ onEvent: (e) => events.push(e) });
  parser.feed(text);
  parser.end();
  return events;
}

// One answer being generated: a "run". No DOM: the page gives it hooks, the node tests a fake fetch.
//
// A run starts a stream (a request) or picks one up (a resume), writes every part into its message as it
// arrives (answer.js), keeps the statistics (time to first output, parts per second), and settles the
// message when the stream ends. It asks for a save at most every `saveEveryMs` (the message's text, stream id
// and last seq together: whatever is saved is a consistent place to resume from) and at once when it starts
// and ends.
//
// Stop is the explicit cancel: POST /v1/streams/{id}/cancel, then the connection is dropped. A stream has no
// id until the server commits it (it holds the response until the first output), so Stop pressed before
// that keeps listening just long enough to learn the id, cancels, and only then drops the connection;
// otherwise the server would keep generating for the whole resume grace with nobody able to cancel it.
//
// phase: connecting | streaming | reconnecting | done | cancelled | error

import * as A from "./answer.js";
import { describeError } from "./errors.js";
import { cancelStream, streamChat } from "./stream.js";

/** How long Stop waits for a stream id before dropping the connection anyway. */
export const STOP_WAIT_MS = 15000;

export class Run {
  /**
   * @param {object} o
   * @param {object} o.chat the conversation the message belongs to (hooks get the run; run.chat is this)
   * @param {object} o.msg the assistant message to write into
   * @param {object} [o.request] start a new stream with this body
   * @param {boolean} [o.resume] or pick up msg.streamId after msg.lastSeq
   * @param {string} [o.apiKey]
   * @param {{changed?, phase?, save?, reconnecting?, ended?}} [o.hooks] each called with the run;
   *   ended(run, ending) gets a sentence saying how it ended ("" when it simply finished)
   * @param {object} [o.streamOptions] passed to streamChat (fetch, backoff, wake, baseUrl)
   */
  constructor({ chat, msg, request, resume = false, apiKey = "", hooks = {}, streamOptions = {}, saveEveryMs = 250 }) {
    Object.assign(this, { chat, msg, request, resume, apiKey, streamOptions, saveEveryMs });
    this.hooks = { changed() {}, phase() {}, save() {}, reconnecting() {}, ended() {}, ...hooks };
    this.controller = new AbortController();
    this.phase = resume ? "reconnecting" : "connecting";
    this.detail = "";
    this.sentAt = 0;
    this.firstAt = null;
    this.ttftMs = null;
    this.tps = null;
    this.deltas = 0;
    this.heartbeats = 0;
    this.reconnects = 0;
    this.error = null;
    this.finished = false; // settled: nothing more is written into the message
    this.stopping = false; // Stop pressed before the stream had an id
    this.detached = false; // the page is going away: write nothing more
    this.saveTimer = 0;
    this.stopTimer = 0;
  }

  /** Start (or resume) the stream; resolves when the run is settled. */
  async start() {
    const { msg } = this;
    msg.state = "streaming";
    delete msg.error;
    delete msg.resumable;
    if (this.request) {
      msg.streamId = null;
      msg.lastSeq = 0;
    }
    this.sentAt = now();
    this.hooks.save(this);
    this.hooks.phase(this);
    const output = () => {
      const t = now();
      if (this.firstAt === null) {
        this.firstAt = t;
        if (!this.resume) this.ttftMs = t - this.sentAt;
      }
      this.deltas += 1;
      if (this.deltas > 1 && t > this.firstAt) this.tps = ((this.deltas - 1) * 1000) / (t - this.firstAt);
      if (this.phase !== "streaming") this._setPhase("streaming");
      this.hooks.changed(this);
    };
    const handlers = {
      ...A.partHandlers(msg, { skip: () => this.finished || this.detached, after: output }),
      onStreamId: (id) => {
        if (this.stopping) {
          this._cancel(id);
          return;
        }
        if (this.finished || this.detached) return;
        msg.streamId = id;
        this._scheduleSave();
      },
      onConnected: () => {
        if (!this.finished) this._setPhase("streaming");
      },
      onStart: (data) => {
        if (!this.finished && data.model) msg.model = data.model;
      },
      onSeq: (seq) => {
        if (this.finished || this.detached) return;
        msg.lastSeq = seq; // with the parts it came with
        this._scheduleSave();
      },
      onHeartbeat: () => {
        this.heartbeats += 1;
      },
      onReconnect: ({ attempt }) => {
        if (this.finished) return;
        this.reconnects += 1;
        if (this.phase !== "reconnecting") this.hooks.reconnecting(this);
        this._setPhase("reconnecting", attempt > 1 ? `(attempt ${attempt})` : "");
      },
    };
    const result = await streamChat({
      ...this.streamOptions,
      request: this.request,
      resume: this.resume ? { streamId: msg.streamId, lastSeq: msg.lastSeq || 0 } : undefined,
      apiKey: this.apiKey,
      signal: this.controller.signal,
      handlers,
    });
    this.end(result);
  }

  /** The person pressed Stop: cancel on the server, stop listening, settle as cancelled. */
  stop() {
    if (this.finished) return;
    if (this.msg.streamId) {
      this._cancel(this.msg.streamId);
    } else {
      this.stopping = true;
      this.stopTimer = setTimeout(() => this.controller.abort(), STOP_WAIT_MS);
    }
    this.end({ outcome: "aborted" });
  }

  _cancel(streamId) {
    clearTimeout(this.stopTimer);
    cancelStream({ ...this.streamOptions, streamId, apiKey: this.apiKey });
    this.controller.abort();
  }

  /** The page is going away: save where the run is, then write nothing more (not even the abort). */
  detach() {
    this.saveNow();
    this.detached = true;
  }

  saveNow() {
    if (this.detached) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = 0;
    this.hooks.save(this);
  }

  _scheduleSave() {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = 0;
      if (!this.detached) this.hooks.save(this);
    }, this.saveEveryMs);
  }

  _setPhase(phase, detail = "") {
    this.phase = phase;
    this.detail = detail;
    this.hooks.phase(this);
  }

  /** Settle the message with how the stream ended (streamChat's result, or {outcome: "aborted"}). */
  end(result) {
    if (this.finished || this.detached) return;
    this.finished = true;
    const { msg } = this;
    let ending = "";
    if (result.outcome === "done") {
      A.finishAnswer(msg, result);
      this.phase = msg.state === "cancelled" ? "cancelled" : "done";
      const parts = [];
      if (result.finish_reason && !["stop", "cancelled", "ended"].includes(result.finish_reason)) {
        parts.push(`(${result.finish_reason})`);
      }
      if (typeof result.usage?.completion_tokens === "number") parts.push(`· ${result.usage.completion_tokens} tokens`);
      this.detail = parts.join(" ");
      if (this.phase === "cancelled") ending = "Stopped.";
    } else if (result.outcome === "aborted") {
      A.stopAnswer(msg);
      this.phase = "cancelled";
      this.detail = "";
      ending = "Stopped.";
    } else {
      const error = result.error;
      this.error = error;
      A.failAnswer(msg, error, { resumable: error.code === "connection_lost" && Boolean(msg.streamId) });
      this.phase = "error";
      this.detail = "";
      const { title } = describeError(error, { resume: Boolean(result.resume), retryAfter: result.retryAfter });
      ending = msg.state === "interrupted" ? `Interrupted: ${title}` : `Error: ${title}`;
    }
    clearTimeout(this.saveTimer);
    this.saveTimer = 0;
    this.hooks.save(this);
    this.hooks.ended(this, ending);
  }
}

const now = () => globalThis.performance.now();

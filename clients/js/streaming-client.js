// streaming-client.js: the browser client of the streaming runtime (a dependency-free ES module).
//
//   import { StreamingClient } from "/static/streaming-client.js";
//   const client = new StreamingClient("");                 // same origin; {transport: "ws"} for WebSocket
//   const gen = await client.generate({ generator: "echo", prompt: "hello" }, {
//     toolHandlers: { get_time: () => new Date().toISOString() },
//   });
//   gen.on("delta", (block, text) => render(block.id, block.text));
//   for await (const block of gen.blocks()) for await (const text of block) console.log(text);
//   await gen.cancel();
//
// Every event is applied exactly once: events are deduplicated by `seq`, and text by the
// delta's code-point `offset` (so a block snapshot taken after a reload and replayed deltas
// overlap safely). Over SSE a dropped stream is reopened with `?after=<last seq>` (the server
// also honours the `Last-Event-ID` header an EventSource resends); over WebSocket the socket is
// reopened and every generation re-subscribed after its last seq. Text is decoded by the
// browser per event (EventSource, WebSocket) or with a streaming TextDecoder (`readRaw`), so a
// multi-byte character split across network chunks never garbles.

export const EVENT_TYPES = Object.freeze([
  "generation.started",
  "block.created",
  "block.delta",
  "block.completed",
  "block.aborted",
  "tool.call",
  "tool.result",
  "generation.completed",
  "generation.failed",
  "generation.cancelled",
]);
const TERMINAL = new Set(["generation.completed", "generation.failed", "generation.cancelled"]);
const FINAL_STATE = {
  "generation.completed": "succeeded",
  "generation.failed": "failed",
  "generation.cancelled": "cancelled",
};

export const MIME = Object.freeze({
  TEXT: "text/plain",
  INVOCATION: "application/vnd.steamship-block.function-calling-support-invocation+json",
  RESULT: "application/vnd.steamship-block.function-calling-support-result+json",
});

/** An error the server answered with: `{code, message, suggestion}`. */
export class StreamingError extends Error {
  constructor(error = {}, status = 0) {
    super(error.message || error.code || `HTTP ${status}`);
    this.name = "StreamingError";
    this.code = error.code || "http_error";
    this.suggestion = error.suggestion ?? null;
    this.status = status;
  }
}

/** Number of Unicode code points of `s` (the unit of a delta's `offset`). */
export function codePointLength(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** `s` without its first `k` code points. */
export function dropCodePoints(s, k) {
  let i = 0;
  while (k > 0 && i < s.length) {
    const c = s.codePointAt(i);
    i += c > 0xffff ? 2 : 1;
    k--;
  }
  return s.slice(i);
}

function roleOf(block) {
  for (const tag of block.tags || []) {
    if (tag.kind === "chat" && tag.name === "role") return tag.value?.["string-value"] ?? null;
  }
  return null;
}

/** A tiny async queue: `push`, `end`, and `for await`. */
class Channel {
  constructor() {
    this.items = [];
    this.waiters = [];
    this.ended = false;
  }
  push(item) {
    if (this.ended) return;
    const w = this.waiters.shift();
    if (w) w({ value: item, done: false });
    else this.items.push(item);
  }
  end() {
    this.ended = true;
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.items.length) return Promise.resolve({ value: this.items.shift(), done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }
}

class Emitter {
  constructor() {
    this._listeners = new Map();
  }
  /** Listen to `type`; returns a function that removes the listener. */
  on(type, cb) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(cb);
    return () => this._listeners.get(type)?.delete(cb);
  }
  _emit(type, ...args) {
    for (const cb of this._listeners.get(type) || []) {
      try {
        cb(...args);
      } catch (err) {
        console.error(`streaming-client: a ${type} listener threw`, err);
      }
    }
  }
}

/** One block of a generation. Iterate it (`for await`) for its text as it streams. */
export class Block extends Emitter {
  constructor(data) {
    super();
    this.id = data.id;
    this.data = data;
    this.mimeType = data.mime_type ?? null;
    this.role = roleOf(data);
    this.text = data.text || "";
    this.length = codePointLength(this.text);
    // null: a block that was never streamed (an input), complete as it is.
    this.state = data.stream_state === null ? "complete" : data.stream_state || "started";
    this.reason = null;
    this._channels = [];
  }
  get done() {
    return this.state === "complete" || this.state === "aborted";
  }
  get isText() {
    return (this.mimeType || "").startsWith("text/");
  }
  /** Append a delta at code-point `offset`; returns the text actually added ("" if seen). */
  _delta(offset, text) {
    let add = text;
    if (offset < this.length) {
      const skip = this.length - offset;
      if (skip >= codePointLength(text)) return "";
      add = dropCodePoints(text, skip);
    }
    if (!add) return "";
    this.text += add;
    this.length += codePointLength(add);
    for (const ch of this._channels) ch.push(add);
    this._emit("delta", add, this);
    return add;
  }
  _end(state, reason = null) {
    if (this.done) return false;
    this.state = state;
    this.reason = reason;
    for (const ch of this._channels.splice(0)) ch.end();
    this._emit("end", this);
    return true;
  }
  [Symbol.asyncIterator]() {
    const ch = new Channel();
    if (this.text) ch.push(this.text);
    if (this.done) ch.end();
    else this._channels.push(ch);
    return ch[Symbol.asyncIterator]();
  }
}

/**
 * A generation as the browser sees it. Listen with `on(type, cb)`:
 * every event type (`"block.delta"`, `"tool.call"`, ...), and
 * `"event"` (ev), `"block"` (block: a new block), `"delta"` (block, text),
 * `"blockend"` (block), `"end"` (gen), `"connection"` (state: "open" | "reconnecting" | "closed"),
 * `"error"` (err: a tool result that could not be sent, a stream that could not resume).
 */
export class Generation extends Emitter {
  constructor(client, generation, blocks = [], { after = 0, toolHandlers = {} } = {}) {
    super();
    this.client = client;
    this.generation = generation;
    this.id = generation.id;
    this.fileId = generation.file_id ?? null;
    this.state = generation.state || "running";
    this.error = null;
    this.reason = null;
    this.lastSeq = after;
    this.events = [];
    this.blockMap = new Map();
    this.order = [];
    this.reconnects = 0;
    this.connection = "closed";
    this.eventsUrl = null; // from the server's answer (the SSE stream to follow)
    this.toolHandlers = { ...toolHandlers };
    this._answered = new Set();
    this._eventChannels = [];
    this._blockChannels = [];
    this._transport = null;
    for (const b of blocks) this._addBlock(b, false);
    this.done = new Promise((resolve) => (this._resolveDone = resolve));
    if (["succeeded", "failed", "cancelled"].includes(this.state)) this._finish();
  }

  get finished() {
    return this.state !== "running" && this.state !== "waiting";
  }

  /** Answer client-side calls of tool `name` with `handler(args, event)` (sync or async). */
  onToolCall(name, handler) {
    this.toolHandlers[name] = handler;
  }

  block(id) {
    return this.blockMap.get(id);
  }

  blockList() {
    return this.order.map((id) => this.blockMap.get(id));
  }

  /** Every event from now on (`for await`). */
  [Symbol.asyncIterator]() {
    const ch = new Channel();
    if (this.finished) ch.end();
    else this._eventChannels.push(ch);
    return ch[Symbol.asyncIterator]();
  }

  /** Each block (those known and those still to come) in creation order (`for await`). */
  blocks() {
    const ch = new Channel();
    for (const b of this.blockList()) ch.push(b);
    if (this.finished) ch.end();
    else this._blockChannels.push(ch);
    return ch;
  }

  /** The text of every text block once the generation has ended. */
  async text() {
    await this.done;
    return this.blockList()
      .filter((b) => b.isText)
      .map((b) => b.text)
      .join("");
  }

  /** Ask the server to cancel (idempotent); resolves with the generation's state. */
  cancel() {
    return this.client.cancel(this.id);
  }

  /** Stop listening (the generation itself goes on, subject to its on_disconnect policy). */
  close() {
    this._transport?.close();
    this._transport = null;
    this._setConnection("closed");
  }

  _setConnection(state) {
    if (this.connection === state) return;
    if (state === "reconnecting") this.reconnects++;
    this.connection = state;
    this._emit("connection", state);
  }

  _addBlock(data, announce = true) {
    let block = this.blockMap.get(data.id);
    if (block) return block;
    block = new Block(data);
    this.blockMap.set(block.id, block);
    this.order.push(block.id);
    if (announce) {
      for (const ch of this._blockChannels) ch.push(block);
      this._emit("block", block);
    }
    return block;
  }

  /** Apply one event (once: an event at or before `lastSeq` is ignored). */
  _apply(ev) {
    if (ev.generation_id !== this.id || typeof ev.seq !== "number") return false;
    if (ev.seq <= this.lastSeq) return false;
    this.lastSeq = ev.seq;
    this.events.push(ev);
    switch (ev.type) {
      case "generation.started":
        this.generation = ev.generation;
        // An enqueued generation (multitask "enqueue") was "waiting" until now.
        this.state = ev.generation?.state ?? "running";
        this.fileId = ev.generation?.file_id ?? this.fileId;
        for (const b of ev.blocks || []) this._addBlock(b);
        break;
      case "block.created":
        this._addBlock(ev.block);
        break;
      case "block.delta": {
        const block = this.blockMap.get(ev.block_id) || this._addBlock({ id: ev.block_id });
        const added = block._delta(ev.offset ?? block.length, ev.text);
        if (added) this._emit("delta", block, added, ev);
        break;
      }
      case "block.completed":
      case "block.aborted": {
        const block = this.blockMap.get(ev.block_id);
        const state = ev.type === "block.completed" ? "complete" : "aborted";
        if (block && block._end(state, ev.reason ?? null)) this._emit("blockend", block);
        break;
      }
      case "tool.call":
        this._toolCall(ev);
        break;
      default:
        if (TERMINAL.has(ev.type)) {
          this.state = FINAL_STATE[ev.type];
          this.error = ev.error ?? null;
          this.reason = ev.reason ?? null;
        }
    }
    for (const ch of this._eventChannels) ch.push(ev);
    this._emit(ev.type, ev);
    this._emit("event", ev);
    if (TERMINAL.has(ev.type)) this._finish();
    return true;
  }

  _finish() {
    for (const b of this.blockList()) if (!b.done) b._end("aborted", this.state);
    for (const ch of this._eventChannels.splice(0)) ch.end();
    for (const ch of this._blockChannels.splice(0)) ch.end();
    this._transport?.close();
    this._transport = null;
    if (this.connection !== "closed") this._setConnection("closed");
    this._resolveDone(this);
    this._emit("end", this);
  }

  async _toolCall(ev) {
    const handler = this.toolHandlers[ev.tool_name];
    if (!handler || this._answered.has(ev.call_id)) return;
    this._answered.add(ev.call_id);
    let answer;
    try {
      const value = await handler(ev.args || {}, ev);
      let result;
      if (typeof value === "string") result = [value];
      else if (Array.isArray(value) && value.every((v) => typeof v === "string")) result = value;
      else result = [JSON.stringify(value ?? null)];
      answer = { result };
    } catch (err) {
      answer = { error: `${err?.name || "Error"}: ${err?.message ?? err}` };
    }
    try {
      await this.client.submitToolResult(this.id, ev.call_id, answer);
    } catch (err) {
      // Replayed after a reload or reconnect, the call may have been answered already.
      if (err?.code !== "tool_call_conflict") this._emit("error", err);
    }
  }
}

/** One EventSource per generation; reopened with `?after=<last seq>` after a drop. */
class SSETransport {
  constructor(client, gen) {
    this.client = client;
    this.gen = gen;
    this.es = null;
    this.timer = null;
    this.failures = 0;
    this.closed = false;
  }
  open() {
    if (this.closed || this.gen.finished) return;
    const path = this.gen.eventsUrl || `/generations/${encodeURIComponent(this.gen.id)}/events`;
    const url = this.client._withToken(this.client.url(`${path}?after=${this.gen.lastSeq}`));
    const es = new EventSource(url);
    this.es = es;
    const onMessage = (msg) => {
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return;
      }
      this.failures = 0;
      this.gen._apply(ev);
    };
    for (const type of EVENT_TYPES) es.addEventListener(type, onMessage);
    es.onopen = () => {
      if (this.es === es) this.gen._setConnection("open");
    };
    es.onerror = () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      if (this.closed || this.gen.finished) return;
      // Reopen ourselves (an EventSource gives up for good on some errors) after a backoff.
      this.gen._setConnection("reconnecting");
      const delay = Math.min(this.client.maxReconnectDelayMs, this.client.reconnectDelayMs * 2 ** this.failures);
      this.failures++;
      this.timer = setTimeout(() => this._reopen(), delay);
    };
  }
  async _reopen() {
    this.timer = null;
    if (this.closed || this.gen.finished) return;
    // A 404 means the generation is gone: stop rather than retry for ever.
    try {
      await this.client.getGeneration(this.gen.id);
    } catch (err) {
      if (err instanceof StreamingError && err.status === 404) {
        this.gen._emit("error", err);
        this.close();
        return;
      }
    }
    this.open();
  }
  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.es?.close();
    this.es = null;
  }
}

/** One WebSocket per client carrying every generation (frames routed by generation_id). */
class WSConnection {
  constructor(client) {
    this.client = client;
    this.url = client.wsUrl();
    this.ws = null;
    this.subs = new Map();
    this.pending = new Map();
    this.refs = 0;
    this.opening = null;
    this.failures = 0;
    this.closed = false;
  }
  ensureOpen() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    if (this.opening) return this.opening;
    this.opening = new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        this.opening = null;
        this.failures = 0;
        for (const gen of this.subs.values()) {
          ws.send(JSON.stringify({ type: "subscribe", generation_id: gen.id, after: gen.lastSeq }));
          gen._setConnection("open");
        }
        resolve(ws);
      };
      ws.onmessage = (msg) => this._frame(msg.data);
      ws.onclose = () => {
        if (this.ws === ws) this.ws = null;
        this.opening = null;
        for (const [ref, p] of this.pending) {
          this.pending.delete(ref);
          p.reject(Object.assign(new Error("the WebSocket closed before the server answered"), { code: "connection_lost" }));
        }
        if (!opened) reject(new Error(`cannot open ${this.url}`));
        if (this.closed) return;
        const live = [...this.subs.values()].filter((g) => !g.finished);
        if (!live.length) return;
        for (const gen of live) gen._setConnection("reconnecting");
        const delay = Math.min(this.client.maxReconnectDelayMs, this.client.reconnectDelayMs * 2 ** this.failures);
        this.failures++;
        setTimeout(() => this.ensureOpen().catch(() => {}), delay);
      };
    });
    return this.opening;
  }
  _frame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame.seq === "number" && frame.generation_id) {
      this.subs.get(frame.generation_id)?._apply(frame);
      return;
    }
    const p = frame.ref != null ? this.pending.get(frame.ref) : undefined;
    if (p) {
      this.pending.delete(frame.ref);
      if (frame.type === "error") p.reject(new StreamingError(frame.error));
      else p.resolve(frame);
      return;
    }
    if (frame.type === "error" && frame.generation_id) {
      this.subs.get(frame.generation_id)?._emit("error", new StreamingError(frame.error));
    }
  }
  async request(frame, onAck) {
    const ws = await this.ensureOpen();
    const ref = `b${++this.refs}`;
    return new Promise((resolve, reject) => {
      // onAck runs in the message handler itself, before the next frame is read.
      this.pending.set(ref, {
        resolve: (ack) => resolve(onAck ? onAck(ack) : ack),
        reject,
      });
      ws.send(JSON.stringify({ ...frame, ref }));
    });
  }
  watch(gen, subscribe) {
    this.subs.set(gen.id, gen);
    gen._transport = { close: () => this.unwatch(gen) };
    gen._setConnection("open");
    if (subscribe) {
      return this.request({ type: "subscribe", generation_id: gen.id, after: gen.lastSeq });
    }
    return Promise.resolve();
  }
  unwatch(gen) {
    if (this.subs.get(gen.id) !== gen) return;
    this.subs.delete(gen.id);
    if (!gen.finished && this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "unsubscribe", generation_id: gen.id }));
    }
  }
  close() {
    this.closed = true;
    this.ws?.close();
  }
}

/**
 * Talks to a streaming server.
 * @param {string} baseUrl  "" for the page's own origin.
 * @param {{transport?: "sse"|"ws", reconnectDelayMs?: number, maxReconnectDelayMs?: number,
 *          headers?: Record<string,string>, accessToken?: string}} options
 *   `accessToken`: an API key or a read token, sent as `Authorization: Bearer` with fetch and
 *   as `?access_token=` where a browser cannot set headers (EventSource, WebSocket).
 */
export class StreamingClient {
  constructor(
    baseUrl = "",
    { transport = "sse", reconnectDelayMs = 250, maxReconnectDelayMs = 5000, headers = {}, accessToken = null } = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.transport = transport;
    this.reconnectDelayMs = reconnectDelayMs;
    this.maxReconnectDelayMs = maxReconnectDelayMs;
    this.accessToken = accessToken;
    this.headers = accessToken ? { Authorization: `Bearer ${accessToken}`, ...headers } : { ...headers };
    this._ws = null;
  }

  url(path) {
    return this.baseUrl + path;
  }

  /** `url` with `access_token` in its query, for EventSource and WebSocket. */
  _withToken(url) {
    if (!this.accessToken) return url;
    return `${url}${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(this.accessToken)}`;
  }

  wsUrl() {
    const base = new URL(this.baseUrl || "/", globalThis.location?.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    base.pathname = base.pathname.replace(/\/+$/, "") + "/ws";
    return this._withToken(base.href);
  }

  _socket() {
    if (!this._ws) this._ws = new WSConnection(this);
    return this._ws;
  }

  async _json(method, path, body) {
    const init = { method, headers: { Accept: "application/json", ...this.headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.url(path), init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw new StreamingError(data?.error || {}, response.status);
    return data;
  }

  /**
   * Start a generation (`body` is the body of POST /generations) and stream it.
   * @param {object} body
   * @param {{toolHandlers?: Record<string, Function>, transport?: "sse"|"ws"}} options
   * @returns {Promise<Generation>}
   */
  async generate(body, { toolHandlers = {}, transport = this.transport } = {}) {
    if (transport === "ws") {
      const socket = this._socket();
      return socket.request({ ...body, type: "generate" }, (ack) => {
        const gen = new Generation(this, ack.generation, ack.blocks || [], { toolHandlers });
        socket.watch(gen, false);
        return gen;
      });
    }
    const data = await this._json("POST", "/generations", body);
    const gen = new Generation(this, data.generation, data.blocks || [], { toolHandlers });
    gen.eventsUrl = data.events_url || null;
    this._follow(gen, "sse");
    return gen;
  }

  /**
   * Follow an existing generation from event `after` on. Pass the `blocks` you already show
   * (e.g. from GET /files/{id} after a reload): text already there is not applied twice.
   */
  async attach(generationId, { after = 0, blocks = null, toolHandlers = {}, transport = this.transport } = {}) {
    const data = await this.getGeneration(generationId);
    const gen = new Generation(this, data.generation, blocks ?? (after > 0 ? data.blocks : []), { after, toolHandlers });
    gen.eventsUrl = data.events_url || null;
    if (!gen.finished) {
      if (transport === "ws") await this._socket().watch(gen, true);
      else this._follow(gen, "sse");
    }
    return gen;
  }

  _follow(gen, transport) {
    if (transport === "sse" && !gen.finished) {
      const t = new SSETransport(this, gen);
      gen._transport = t;
      t.open();
    }
  }

  /**
   * The terminal event of a finished generation (its cancel reason, its error), read from
   * the end of its log; null while it runs or if the log cannot be read.
   */
  async terminalEvent(id, lastSeq) {
    const path = `/generations/${encodeURIComponent(id)}/events?after=${Math.max(0, lastSeq - 1)}`;
    const response = await fetch(this.url(path), { headers: { Accept: "text/event-stream", ...this.headers } });
    if (!response.ok) return null;
    const lines = (await response.text()).split("\n").filter((line) => line.startsWith("data:"));
    const last = lines.length ? JSON.parse(lines[lines.length - 1].slice(5)) : null;
    return last && EVENT_TYPES.includes(last.type) && last.type.startsWith("generation.") ? last : null;
  }

  getGeneration(id) {
    return this._json("GET", `/generations/${encodeURIComponent(id)}`);
  }
  getFile(id) {
    return this._json("GET", `/files/${encodeURIComponent(id)}`);
  }
  async generators() {
    return (await this._json("GET", "/generators")).generators;
  }

  /** Each generator with ``chat`` (answers a chat as it is), ``description`` and ``reason``. */
  async generatorDetails() {
    const body = await this._json("GET", "/generators");
    return body.details || body.generators.map((name) => ({ name, chat: true, description: "", reason: null }));
  }

  async cancel(id) {
    if (this._ws?.subs.has(id)) {
      return (await this._ws.request({ type: "cancel", generation_id: id })).generation;
    }
    return (await this._json("POST", `/generations/${encodeURIComponent(id)}/cancel`)).generation;
  }

  /** Answer a client-side tool call: `{result}` (string or string[]) or `{error}`. */
  async submitToolResult(id, callId, answer) {
    if (this._ws?.subs.has(id)) {
      await this._ws.request({ type: "tool.result", generation_id: id, call_id: callId, ...answer });
      return;
    }
    await this._json("POST", `/generations/${encodeURIComponent(id)}/tool-results`, { call_id: callId, ...answer });
  }

  /**
   * A block's raw bytes as text chunks (`for await`), decoded with a streaming TextDecoder so
   * a multi-byte character split across network chunks comes out whole.
   */
  async *readRaw(blockId) {
    const response = await fetch(this.url(`/blocks/${encodeURIComponent(blockId)}/raw`), { headers: this.headers });
    if (!response.ok) throw new StreamingError((await response.json().catch(() => ({})))?.error || {}, response.status);
    const decoder = new TextDecoder("utf-8");
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const text = decoder.decode(value, { stream: true });
      if (text) yield text;
    }
    const tail = decoder.decode();
    if (tail) yield tail;
  }

  close() {
    this._ws?.close();
    this._ws = null;
  }
}

export default StreamingClient;

// The demo chat page, built on the browser client. One conversation (a file on the server) at
// a time; its id, the running generation's id and the last seq applied live in localStorage,
// so a reload re-renders the conversation and resumes the running generation. A message sent
// while an answer streams is sent with the strategy of the select beside Send (multitask):
// interrupt (default), roll back, queue, or refuse.
import { MIME, StreamingClient } from "/static/streaming-client.js";

const KEY = "streaming-demo";
const $ = (id) => document.getElementById(id);

const store = {
  load() {
    try {
      return JSON.parse(localStorage.getItem(KEY) || "{}") || {};
    } catch {
      return {};
    }
  },
  save(patch) {
    localStorage.setItem(KEY, JSON.stringify({ ...this.load(), ...patch }));
  },
  clearConversation() {
    const { generator, transport, options, tools, multitask } = this.load();
    localStorage.setItem(KEY, JSON.stringify({ generator, transport, options, tools, multitask }));
  },
};

/** Client-side tools this page answers (tests and users may add more). */
const toolHandlers = {
  get_time: () => new Date().toISOString(),
};

let client = null;
let current = null; // the Generation sent last, while it has not ended
const live = new Map(); // every Generation not ended (running or waiting) -> its TurnView
let fileId = null;

function makeClient() {
  client?.close();
  // With API keys on the server: open the page as /?access_token=<key> (kept for the session).
  const token = new URLSearchParams(location.search).get("access_token") || sessionStorage.getItem(`${KEY}-token`);
  if (token) sessionStorage.setItem(`${KEY}-token`, token);
  client = new StreamingClient("", { transport: $("transport").value, accessToken: token });
}

function status(text) {
  $("status").textContent = text || "";
}

function setBusy(busy) {
  // Send stays enabled: a message sent while an answer streams goes with the multitask select.
  $("send").disabled = false;
  $("stop").disabled = !busy;
}

function scrollDown() {
  const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 120;
  if (nearBottom) window.scrollTo(0, document.body.scrollHeight);
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

function renderUser(text) {
  const node = el("div", "msg user", text);
  $("messages").append(node);
  scrollDown();
  return node;
}

/** One generation's answer: its blocks (text, tool cards) and its state line. */
class TurnView {
  constructor(generationId = null) {
    this.node = el("section", "turn");
    this.node.dataset.state = "running";
    this.node.dataset.connection = "closed";
    this.node.dataset.reconnects = "0";
    this.blocks = el("div", "blocks");
    this.state = el("div", "gen-state", "…");
    this.node.append(this.blocks, this.state);
    this.views = new Map();
    if (generationId) this.setId(generationId);
    $("messages").append(this.node);
  }

  setId(id) {
    this.id = id;
    this.node.dataset.generationId = id;
  }

  /** Enqueued: it starts once the answers before it have ended. */
  waiting() {
    this.node.dataset.state = "waiting";
    this.state.textContent = "waiting for the answer before it…";
  }

  started() {
    if (this.node.dataset.state === "waiting") this.node.dataset.state = "running";
    this.state.textContent = "streaming…";
  }

  /** A later message interrupted it: its partial answer stays, marked. */
  interrupted() {
    this.node.dataset.outcome = "interrupted";
    if (this.node.dataset.state !== "running" && this.node.dataset.state !== "waiting") this.finish(this.node.dataset.state);
  }

  /** A later message rolled it back: its turn (the user's message too) leaves the page. */
  remove() {
    this.node.dataset.outcome = "rolled-back";
    this.userNode?.remove();
    this.node.remove();
  }

  block(block) {
    // `block` is a client Block or a block JSON from GET /files.
    const id = block.id;
    let view = this.views.get(id);
    const mime = block.mimeType ?? block.mime_type ?? "";
    if (!view) {
      if (mime === MIME.INVOCATION) {
        view = el("div", "card tool-call");
        view.append(el("h3", null, "Tool call"), el("pre"));
      } else if (mime === MIME.RESULT) {
        view = el("div", "card tool-result");
        view.append(el("h3", null, "Tool result"), el("pre"));
      } else {
        view = el("div", "msg block text");
        view.append(el("span", "content"));
      }
      view.dataset.blockId = id;
      this.views.set(id, view);
      this.blocks.append(view);
    }
    this.update(block);
    return view;
  }

  update(block) {
    const view = this.views.get(block.id);
    if (!view) return this.block(block);
    const text = block.text ?? "";
    const state = block.state ?? block.stream_state ?? "complete";
    view.dataset.state = state;
    if (view.classList.contains("tool-call")) {
      const call = parseJson(text);
      view.querySelector("h3").textContent = call ? `Tool call · ${call.tool_name}` : "Tool call";
      view.querySelector("pre").textContent = call ? JSON.stringify(call.args ?? {}, null, 1) : text;
      if (call) view.dataset.tool = call.tool_name;
    } else if (view.classList.contains("tool-result")) {
      const res = parseJson(text);
      view.querySelector("h3").textContent = res
        ? `Tool ${res.is_error ? "error" : "result"} · ${res.tool_name}`
        : "Tool result";
      view.querySelector("pre").textContent = res ? (res.result || []).join("\n") : text;
      view.classList.toggle("error", Boolean(res?.is_error));
      if (res) view.dataset.tool = res.tool_name;
    } else {
      view.querySelector(".content").textContent = text;
      // A round that only called tools leaves its text block empty: do not show a blank bubble.
      view.hidden = state === "complete" && !text;
    }
    let badge = view.querySelector(".badge.aborted");
    if (state === "aborted" && !badge) {
      badge = el("span", "badge aborted", "aborted");
      view.append(badge);
    }
    scrollDown();
    return view;
  }

  connection(state, reconnects) {
    this.node.dataset.connection = state;
    this.node.dataset.reconnects = String(reconnects);
    if (this.node.dataset.state === "running") {
      this.state.textContent = state === "reconnecting" ? "reconnecting…" : "streaming…";
    }
  }

  finish(state, error = null, reason = null) {
    this.node.dataset.state = state;
    if (reason?.startsWith("interrupted")) this.node.dataset.outcome = "interrupted";
    if (state === "cancelled" && this.node.dataset.outcome === "interrupted") {
      this.state.textContent = "interrupted by the next message";
    } else if (state === "failed") {
      const e = error || {};
      this.state.textContent = `failed: ${e.code || "error"}${e.message ? ` — ${e.message}` : ""}`;
    } else if (state === "cancelled") {
      this.state.textContent = `cancelled${reason ? ` (${reason})` : ""}`;
    } else if (state === "succeeded") {
      this.state.textContent = "";
    } else {
      this.state.textContent = state;
    }
  }
}

function bind(gen, view) {
  current = gen;
  window.streamingDemo.current = gen;
  view.setId(gen.id);
  if (gen.state === "waiting") view.waiting();
  gen.on("generation.started", () => view.started());
  for (const b of gen.blockList()) view.block(b);
  gen.on("block", (b) => view.block(b));
  gen.on("delta", (b) => view.update(b));
  gen.on("blockend", (b) => view.update(b));
  gen.on("event", () => store.save({ lastSeq: gen.lastSeq }));
  gen.on("connection", (state) => view.connection(state, gen.reconnects));
  gen.on("error", (err) => status(`${err.code || "error"}: ${err.message}`));
  const end = () => {
    for (const b of gen.blockList()) view.update(b);
    view.finish(gen.state, gen.error, gen.reason);
    live.delete(gen);
    if (current === gen) {
      current = null;
      store.save({ generationId: null, lastSeq: 0 });
    }
    setBusy(live.size > 0);
  };
  if (gen.finished) {
    end();
    return;
  }
  live.set(gen, view);
  if (gen.state !== "waiting") view.connection(gen.connection === "closed" ? "open" : gen.connection, gen.reconnects);
  setBusy(true);
  gen.on("end", end);
}

function readJsonField(id, kind) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  const value = parseJson(raw);
  if (value === undefined || typeof value !== "object") throw new Error(`${id} must be a JSON ${kind}`);
  return value;
}

async function send(text) {
  let options;
  let tools;
  try {
    options = readJsonField("options", "object");
    tools = readJsonField("tools", "list");
  } catch (err) {
    status(err.message);
    return;
  }
  status("");
  const body = { generator: $("generator").value, prompt: text };
  if (fileId) body.file_id = fileId;
  if (options) body.options = options;
  if (tools) body.tools = tools;
  // Sent while answers stream (or wait): what happens to them is the select's choice.
  const before = [...live];
  const strategy = before.length && fileId ? $("multitask").value : null;
  if (strategy) body.multitask = strategy;
  const userNode = renderUser(text);
  const view = new TurnView();
  view.userNode = userNode;
  setBusy(true);
  let gen;
  try {
    gen = await client.generate(body, { toolHandlers });
  } catch (err) {
    view.finish("failed", { code: err.code, message: err.message });
    status(`${err.code || "error"}: ${err.message}${err.suggestion ? ` (${err.suggestion})` : ""}`);
    setBusy(live.size > 0);
    return;
  }
  // The server has cancelled (and, rolling back, removed) those before answering.
  if (strategy === "interrupt") for (const [, v] of before) v.interrupted();
  if (strategy === "rollback") for (const [, v] of before) v.remove();
  fileId = gen.fileId;
  store.save({ fileId, generationId: gen.id, lastSeq: gen.lastSeq, generator: body.generator });
  bind(gen, view);
}

function roleOf(block) {
  return (block.tags || []).find((t) => t.kind === "chat" && t.name === "role")?.value?.["string-value"];
}

/** Render a conversation from GET /files; returns the turn views by generation id. */
function renderFile(blocks) {
  const turns = new Map();
  for (const block of blocks) {
    if (roleOf(block) === "user") {
      renderUser(block.text);
      continue;
    }
    const key = block.request_id || "none";
    let view = turns.get(key);
    if (!view) {
      view = new TurnView(block.request_id || null);
      turns.set(key, view);
    }
    view.block(block);
  }
  return turns;
}

async function restore() {
  const saved = store.load();
  if (!saved.fileId) return;
  let running = null;
  if (saved.generationId) {
    try {
      const data = await client.getGeneration(saved.generationId);
      if (!["succeeded", "failed", "cancelled"].includes(data.generation.state)) running = data.generation;
    } catch {
      running = null;
    }
  }
  let file;
  try {
    // Read after the generation: the blocks are then at least as far as its cursor.
    file = await client.getFile(saved.fileId);
  } catch {
    store.clearConversation();
    return;
  }
  fileId = saved.fileId;
  const turns = renderFile(file.blocks);
  for (const [id, view] of turns) {
    if (running && id === running.id) continue;
    if (id === "none") {
      view.finish("succeeded");
      continue;
    }
    client
      .getGeneration(id)
      .then(async (d) => {
        const g = d.generation;
        // The cancel reason lives in the terminal event, not in the generation's record.
        const last = g.state === "cancelled" ? await client.terminalEvent(id, g.last_seq).catch(() => null) : null;
        view.finish(g.state, g.error, last?.reason ?? null);
      })
      .catch(() => view.finish("succeeded"));
  }
  if (running) {
    const view = turns.get(running.id) || new TurnView(running.id);
    // The generation's own blocks (its input, the user's message, is not one of them).
    const blocks = file.blocks.filter((b) => b.request_id === running.id && roleOf(b) !== "user");
    const gen = await client.attach(running.id, { after: saved.lastSeq || 0, blocks, toolHandlers });
    bind(gen, view);
  } else {
    store.save({ generationId: null, lastSeq: 0 });
  }
}

let generatorInfo = new Map(); // name -> {chat, description, reason}

/** What the empty conversation says: what to try, and what the chosen generator does. */
function showHint() {
  const info = generatorInfo.get($("generator").value);
  const what = info?.description ? `${$("generator").value}: ${info.description}.` : "";
  $("messages").dataset.hint =
    `Type a message and press Send (Enter). ${what} ` +
    "Stop ends an answer mid-stream; a reload picks up where it was. " +
    "Other generators are in the list above; the greyed ones say why they cannot answer yet.";
}

async function loadGenerators() {
  const saved = store.load();
  const select = $("generator");
  let details = [];
  try {
    details = await client.generatorDetails();
  } catch (err) {
    status(`cannot list generators: ${err.message}`);
  }
  generatorInfo = new Map(details.map((d) => [d.name, d]));
  // The ones that answer a chat first; the others stay visible, disabled, with the reason.
  const ordered = [...details.filter((d) => d.chat), ...details.filter((d) => !d.chat)];
  select.replaceChildren(
    ...ordered.map((d) => {
      // The label says it short (what comes before the reason's first colon); the title says it all.
      const option = el("option", null, d.chat ? d.name : `${d.name} (${String(d.reason).split(":")[0]})`);
      option.value = d.name;
      option.disabled = !d.chat;
      option.title = d.chat ? d.description : d.reason;
      return option;
    }),
  );
  const ready = details.filter((d) => d.chat).map((d) => d.name);
  if (saved.generator && ready.includes(saved.generator)) select.value = saved.generator;
  else if (ready.includes("echo")) select.value = "echo";
  else if (ready.length) select.value = ready[0];
  showHint();
}

function wire() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value;
    if (!text.trim()) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", async () => {
    // Stops the answer streaming and those waiting after it.
    const gens = [...live.keys()];
    if (!gens.length) return;
    $("stop").disabled = true;
    try {
      await Promise.all(gens.map((gen) => gen.cancel()));
    } catch (err) {
      status(`cancel failed: ${err.message}`);
    }
  });
  $("new-chat").addEventListener("click", () => {
    for (const gen of live.keys()) gen.close();
    live.clear();
    current = null;
    fileId = null;
    store.clearConversation();
    $("messages").replaceChildren();
    setBusy(false);
    status("");
  });
  $("generator").addEventListener("change", () => {
    store.save({ generator: $("generator").value });
    showHint();
  });
  $("transport").addEventListener("change", () => {
    store.save({ transport: $("transport").value });
    if (!current) makeClient();
  });
  for (const id of ["options", "tools", "multitask"]) {
    $(id).addEventListener("change", () => store.save({ [id]: $(id).value }));
  }
}

async function main() {
  const saved = store.load();
  if (saved.transport) $("transport").value = saved.transport;
  for (const id of ["options", "tools", "multitask"]) if (saved[id]) $(id).value = saved[id];
  makeClient();
  wire();
  setBusy(false);
  await loadGenerators();
  await restore();
}

window.streamingDemo = {
  toolHandlers,
  current: null,
  get client() {
    return client;
  },
  ready: null,
};
window.streamingDemo.ready = main().catch((err) => status(`error: ${err.message}`));

// Shared by the scripts the end-to-end tests run (tests/test_ai_sdk_e2e.py): the `ai`
// package to drive (`ai` is 6.x, `ai7` is 7.x), a headless Chat, and a fetch that keeps
// every UI message chunk the server sent, to check each came once.
//
// Usage of every script: node <script>.mjs <server url> [ai|ai7]; it prints one JSON object.

export const url = process.argv[2];
export const pkg = process.argv[3] ?? "ai";
export const ai = await import(pkg);

// What a UI framework keeps of a chat; `ai` exports the logic (AbstractChat), the
// frameworks (@ai-sdk/react, svelte, vue) each bring a state like this one.
class PlainState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage = (message) => { this.messages = [...this.messages, message]; };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message), ...this.messages.slice(index + 1)];
  };
  snapshot = (value) => structuredClone(value);
}

export class Chat extends ai.AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new PlainState(messages) });
  }
}

// Every chunk of every response, by request: [{method, url, status, chunks: [...]}].
export const responses = [];

function record(entry, body) {
  // Parse the SSE text as it passes (data lines only; the chunks are one line each).
  const decoder = new TextDecoder();
  let buffer = "";
  return body.pipeThrough(new TransformStream({
    transform(bytes, controller) {
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of frame.split("\n")) {
          if (line.startsWith("data: ")) {
            const data = line.slice(6);
            entry.chunks.push(data === "[DONE]" ? data : JSON.parse(data));
          }
        }
      }
      controller.enqueue(bytes);
    },
  }));
}

// A fetch that records what it reads; `dropAfter(entry)` may say to cut a response short
// (a dropped connection: the reader is cancelled and the stream fails as fetch's do).
export function recordingFetch({ dropAfter } = {}) {
  return async (input, init = {}) => {
    const response = await fetch(input, init);
    const entry = {
      method: init.method ?? "GET",
      url: String(input),
      status: response.status,
      generationId: response.headers.get("x-generation-id"),
      streamHeader: response.headers.get("x-vercel-ai-ui-message-stream"),
      chunks: [],
    };
    responses.push(entry);
    if (!response.body || response.status === 204) return response;
    let body = record(entry, response.body);
    if (dropAfter) {
      const reader = body.getReader();
      body = new ReadableStream({
        async pull(controller) {
          if (dropAfter(entry)) {
            await reader.cancel();
            controller.error(new TypeError("network error: connection dropped"));
            return;
          }
          const { done, value } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(value);
        },
        cancel: (reason) => reader.cancel(reason),
      });
    }
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

export function transport(body, options = {}) {
  return new ai.DefaultChatTransport({ api: `${url}/api/chat`, body, fetch: recordingFetch(options) });
}

// Resolves once the chat is `ready` or `error` and no request runs.
export async function settled(chat, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((chat.status === "ready" || chat.status === "error") && !chat.activeResponse) return;
    if (Date.now() > deadline) throw new Error(`chat still ${chat.status}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// Every chunk a response carried that ai 6's or ai 7's own schema refuses (whichever
// package this run drives, a chunk must be one both know).
export async function refusedChunks() {
  const schemas = await Promise.all(["ai", "ai7"].map(async (name) => [name, (await import(name)).uiMessageChunkSchema()]));
  const refused = [];
  for (const response of responses) {
    for (const chunk of response.chunks) {
      if (chunk === "[DONE]") continue;
      for (const [name, schema] of schemas) {
        if (!(await schema.validate(chunk)).success) refused.push({ package: name, chunk });
      }
    }
  }
  return refused;
}

export async function report(chat, extra = {}) {
  console.log(JSON.stringify({
    status: chat?.status,
    error: chat?.error ? String(chat.error.message) : null,
    messages: chat?.messages,
    responses,
    refused: await refusedChunks(),
    ...extra,
  }));
}

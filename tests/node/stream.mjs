// DefaultChatTransport without Chat: sendMessages() gives the chunk stream, and
// readUIMessageStream() the assistant message as it grows.
import { ai, refusedChunks, transport } from "./lib.mjs";

const rounds = [[
  { text: "thinking it over", block: 0, chunk: 5 },
  { text: "The answer ", block: 1, chunk: 4 },
  { sleep_ms: 20 },
  { text: "is 42.", block: 1 },
]];
const chat = transport({ model: "scripted", options: { rounds, blocks: ["text/x-reasoning", "text/plain"] } });
const stream = await chat.sendMessages({
  chatId: `stream-${Date.now()}`,
  messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: "the answer?" }] }],
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
});
const snapshots = [];
for await (const message of ai.readUIMessageStream({ stream })) snapshots.push(structuredClone(message));
console.log(JSON.stringify({ snapshots: snapshots.length, message: snapshots.at(-1), refused: await refusedChunks() }));

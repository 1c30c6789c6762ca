// A connection dropped mid-answer: Chat sees a network error, resumeStream() asks
// GET /api/chat/{id}/stream, which replays the running generation from its `start` and
// follows it live. Every part is in the message exactly once.
import { Chat, report, settled, transport } from "./lib.mjs";

const rounds = [[
  { text: "one " }, { sleep_ms: 400 }, { text: "two " }, { sleep_ms: 400 }, { text: "three" },
]];
let dropped = 0;
const dropAfter = (entry) => {
  // The first POST is cut once its first text has arrived.
  if (dropped || entry.method !== "POST" || !entry.chunks.some((c) => c.type === "text-delta")) return false;
  dropped += 1;
  return true;
};
const chat = new Chat({ id: `resume-${Date.now()}`, transport: transport({ model: "scripted", options: { rounds } }, { dropAfter }) });
await chat.sendMessage({ text: "count to three" });
await settled(chat);
const afterDrop = { status: chat.status, error: chat.error?.message ?? null, messages: structuredClone(chat.messages) };
await chat.resumeStream();
await settled(chat);
// Nothing runs any more: the same route answers 204 and the chat stays as it is.
await chat.resumeStream();
await settled(chat);
await report(chat, { afterDrop });

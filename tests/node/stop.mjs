// Stop: while the answer streams, POST /api/chat/{id}/stop (what a stop button calls
// next to chat.stop() when streams are resumable). The plugin is cancelled; the stream
// ends with `abort` and `finish`, its text part finished.
import { Chat, report, responses, settled, transport, url } from "./lib.mjs";

const rounds = [[{ text: "first words " }, { sleep_ms: 60000 }, { text: "never sent" }]];
const chat = new Chat({ id: `stop-${Date.now()}`, transport: transport({ model: "scripted", options: { rounds } }) });
const finishes = [];
chat.onFinish = ({ finishReason, isAbort, isError }) => finishes.push({ finishReason, isAbort, isError });
const sending = chat.sendMessage({ text: "talk for a minute" });
const streamed = () => responses.some((r) => r.chunks.some((c) => c.type === "text-delta"));
for (let i = 0; i < 1500 && !streamed(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
const stop = await fetch(`${url}/api/chat/${encodeURIComponent(chat.id)}/stop`, { method: "POST" });
const stopped = { status: stop.status, body: await stop.json() };
await sending;
await settled(chat);
const again = await fetch(`${url}/api/chat/${encodeURIComponent(chat.id)}/stop`, { method: "POST" });
await report(chat, { stopped, finishes, stopAgain: again.status });

// A stop button as the AI SDK's docs wire it for resumable streams: chat.stop() aborts
// the fetch (the client stops reading at once), then POST /api/chat/{id}/stop cancels the
// model on the server, whatever the disconnect grace.
import { Chat, report, responses, settled, transport, url } from "./lib.mjs";

const rounds = [[{ text: "first words " }, { sleep_ms: 60000 }, { text: "never sent" }]];
const chat = new Chat({ id: `stop-client-${Date.now()}`, transport: transport({ model: "scripted", options: { rounds } }) });
const finishes = [];
chat.onFinish = ({ finishReason, isAbort, isError }) => finishes.push({ finishReason, isAbort, isError });
const sending = chat.sendMessage({ text: "talk for a minute" });
const streamed = () => responses.some((r) => r.chunks.some((c) => c.type === "text-delta"));
for (let i = 0; i < 1500 && !streamed(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
await chat.stop();
await sending;
await settled(chat);
const stop = await fetch(`${url}/api/chat/${encodeURIComponent(chat.id)}/stop`, { method: "POST" });
await report(chat, { stopped: { status: stop.status, body: await stop.json() }, finishes });

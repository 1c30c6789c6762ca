// A dropped connection while the answer to a client tool's output streams (the second
// request of one assistant message): resumeStream() rebuilds the whole message, the
// parts of the first request included, each exactly once.
import { Chat, ai, report, responses, settled, transport } from "./lib.mjs";

const weather = { name: "get_weather", description: "The weather in a city", parameters: { type: "object", properties: { city: { type: "string" } } } };
const rounds = [
  [{ text: "Let me look. " }, { tool_call: { name: "get_weather", args: { city: "Paris" } } }],
  [{ text: "Got it: " }, { sleep_ms: 400 }, { echo_tool_results: true }, { sleep_ms: 400 }, { text: " Done." }],
];
const toolCalls = [];
let dropped = 0;
const dropAfter = (entry) => {
  // The second POST (the continuation) is cut once its first text has arrived.
  const posts = responses.filter((r) => r.method === "POST");
  if (dropped || entry !== posts[1] || !entry.chunks.some((c) => c.type === "text-delta")) return false;
  dropped += 1;
  return true;
};
const chat = new Chat({
  id: `resume-tools-${Date.now()}`,
  transport: transport({ model: "scripted", options: { rounds }, tools: [weather] }, { dropAfter }),
  sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
  onToolCall: ({ toolCall }) => {
    toolCalls.push(toolCall.toolCallId);
    chat.addToolOutput({ tool: "get_weather", toolCallId: toolCall.toolCallId, output: "sunny" });
  },
});
await chat.sendMessage({ text: "weather?" });
for (let i = 0; i < 500 && !dropped; i++) await new Promise((resolve) => setTimeout(resolve, 20));
await settled(chat);
const afterDrop = { status: chat.status, error: chat.error?.message ?? null };
await chat.resumeStream();
await settled(chat);
await report(chat, { afterDrop, toolCalls });

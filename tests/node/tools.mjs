// Tools through `Chat`: a client tool answered with onToolCall + addToolOutput and sent
// back by sendAutomaticallyWhen (the answer continues the same assistant message), then a
// tool the server runs (its part arrives with its output).
import { Chat, ai, refusedChunks, responses, settled, transport } from "./lib.mjs";

const weather = {
  name: "get_weather",
  description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const clientScript = [
  [{ text: "Let me look. " }, { tool_call: { name: "get_weather", args: { city: "Paris" } } }],
  [{ echo_tool_results: true }, { text: " Done." }],
];
const toolCalls = [];
const client = new Chat({
  id: `client-tool-${Date.now()}`,
  transport: transport({ model: "scripted", options: { rounds: clientScript }, tools: [weather] }),
  sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
  onToolCall: ({ toolCall }) => {
    toolCalls.push(toolCall);
    if (toolCall.toolName === "get_weather") {
      client.addToolOutput({ tool: "get_weather", toolCallId: toolCall.toolCallId, output: `sunny in ${toolCall.input.city}` });
    }
  },
});
await client.sendMessage({ text: "weather in Paris?" });
await settled(client);
// The automatic request starts once the output is in: wait for it to have ended too.
for (let i = 0; i < 500 && responses.filter((r) => r.method === "POST").length < 2; i++) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
await settled(client);
const clientResult = { status: client.status, error: client.error?.message ?? null, messages: client.messages, toolCalls };

const serverScript = [[{ tool_call: { name: "get_time", args: {} } }], [{ echo_tool_results: true }]];
const serverToolCalls = [];
const server = new Chat({
  id: `server-tool-${Date.now()}`,
  transport: transport({ model: "scripted", options: { rounds: serverScript } }),
  sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
  onToolCall: ({ toolCall }) => { serverToolCalls.push(toolCall); },
});
await server.sendMessage({ text: "what time is it?" });
await settled(server);
const serverResult = { status: server.status, error: server.error?.message ?? null, messages: server.messages, toolCalls: serverToolCalls };

console.log(JSON.stringify({ client: clientResult, server: serverResult, responses, refused: await refusedChunks() }));

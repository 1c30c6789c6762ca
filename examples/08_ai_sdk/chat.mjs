// The Vercel AI SDK's own client against this server: DefaultChatTransport posts to
// /api/chat (the route useChat() uses by default) and readUIMessageStream() turns the
// UI message stream into the assistant message as it grows.
//
//   streaming serve &                 # http://127.0.0.1:8000
//   npm install && node chat.mjs [url] [words]
import { DefaultChatTransport, readUIMessageStream } from "ai";

const url = process.argv[2] ?? "http://127.0.0.1:8000";
const text = process.argv[4] ?? "hello from the AI SDK";

const transport = new DefaultChatTransport({
  api: `${url}/api/chat`,
  body: { model: "echo", options: { delay_ms: 20 } }, // the generator, and its options
});
const stream = await transport.sendMessages({
  chatId: `example-${Date.now()}`, // one chat id is one conversation on the server
  messages: [{ id: "m1", role: "user", parts: [{ type: "text", text }] }],
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
});

let message;
let shown = 0;
for await (message of readUIMessageStream({ stream })) {
  const answer = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  process.stderr.write(answer.slice(shown)); // the text as it streams
  shown = answer.length;
}
process.stderr.write("\n");
const answer = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
console.log(JSON.stringify({ answer, messageId: message.id, generationId: message.metadata?.generationId }));

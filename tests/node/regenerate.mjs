// Regenerate through `Chat`: three turns, then the last answer again (`regenerate()`), then
// the first one again (`regenerate({ messageId })`: the chat keeps only what came before
// it). Each regenerate is one request with trigger "regenerate-message".
import { Chat, report, settled, transport } from "./lib.mjs";

const chat = new Chat({ id: `regenerate-${Date.now()}`, transport: transport({ model: "echo" }) });
const seen = [];
for (const text of ["first question", "second question", "third question"]) {
  await chat.sendMessage({ text });
  await settled(chat);
}
seen.push(chat.messages.map((m) => m.id));
await chat.regenerate();
await settled(chat);
seen.push(chat.messages.map((m) => m.id));
await chat.regenerate({ messageId: chat.messages[1].id });
await settled(chat);
await report(chat, { chatId: chat.id, seen });

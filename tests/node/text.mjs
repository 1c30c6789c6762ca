// Two turns of one chat through `Chat` and `DefaultChatTransport`: the echo generator's
// exact text, each answer a message of its own, usage and the generation in metadata.
import { Chat, report, settled, transport } from "./lib.mjs";

const chat = new Chat({ id: `text-${Date.now()}`, transport: transport({ model: "echo" }) });
const finishes = [];
chat.onFinish = ({ message, finishReason, isError, isAbort }) => finishes.push({ id: message.id, finishReason, isError, isAbort });
await chat.sendMessage({ text: "hello streaming world" });
await settled(chat);
await chat.sendMessage({ text: "a second turn" });
await settled(chat);
await report(chat, { chatId: chat.id, finishes });

// A generation that fails mid-stream: the text written so far is a finished part, the
// chat is in error with the failure's code, and the chat carries on afterwards.
import { Chat, report, settled, transport } from "./lib.mjs";

const rounds = [[{ text: "partial answer", chunk: 4 }, { sleep_ms: 50 }, { error: "the model broke down" }]];
const chat = new Chat({ id: `failure-${Date.now()}`, transport: transport({ model: "scripted", options: { rounds } }) });
const finishes = [];
chat.onFinish = ({ finishReason, isError }) => finishes.push({ finishReason, isError });
await chat.sendMessage({ text: "go" });
await settled(chat);
const failed = { status: chat.status, error: chat.error?.message ?? null, messages: structuredClone(chat.messages) };
// The same chat, next turn: the conversation is free again.
chat.clearError();
await chat.sendMessage({ text: "again" }, { body: { model: "echo" } });
await settled(chat);
await report(chat, { failed, finishes });

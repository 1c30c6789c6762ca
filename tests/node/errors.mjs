// Refusals through the official client: an unknown model (404, our JSON error as the
// chat's error), then the server carrying on (a chat that works).
import { Chat, report, settled, transport } from "./lib.mjs";

const bad = new Chat({ id: `unknown-${Date.now()}`, transport: transport({ model: "no-such-model" }) });
await bad.sendMessage({ text: "hello?" });
await settled(bad);
const unknown = { status: bad.status, error: bad.error?.message ?? null, messages: bad.messages };
const good = new Chat({ id: `after-${Date.now()}`, transport: transport({ model: "echo" }) });
await good.sendMessage({ text: "still here" });
await settled(good);
await report(good, { unknown });

// A drgreen-poller webhook receiver in plain Node: only `node:http` and the `standardwebhooks`
// npm package.
//
//   npm install
//   DRGREEN_WEBHOOK_SECRET=whsec_... node server.mjs [--port 8080] [--host 127.0.0.1]
//
// Point a webhook sink at http://127.0.0.1:8080/drgreen/events with the same secret. For each
// request it: verifies the Standard Webhooks signature over the raw body, as received; answers
// 400 when that fails; answers 204 at once when it holds, and does the work after answering;
// acts once per `webhook-id` (delivery is at least once: a retry or a replay sends the same id
// again) and drops an event whose `sequence` is not above the last one of its resource (an
// older event arriving late). It prints one JSON line per request and one per event acted on,
// with ids and types only: an event's `data` holds customer details, which stay out of logs.

import http from "node:http";
import { parseArgs } from "node:util";
import { Webhook, WebhookVerificationError } from "standardwebhooks";

const PATH = "/drgreen/events";
// Events are a few kilobytes; anything far larger is not one of ours.
const MAX_BODY_BYTES = 1024 * 1024;
// How many webhook-ids and resources this example remembers (see `remember` below).
const REMEMBERED = 10_000;

function print(fields) {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

// Bounded memory of what was seen, oldest forgotten first (a Map keeps insertion order).
// A real store keeps the seen ids in its database instead, with a unique key on webhook_id,
// written in the same transaction as the job it queues for the event, so a restart or a second
// instance of the store does not forget them; it keeps each resource's last sequence there too.
const seenIds = new Map();
const lastSequence = new Map();

function remember(map, key, value) {
  map.delete(key);
  map.set(key, value);
  if (map.size > REMEMBERED) {
    map.delete(map.keys().next().value);
  }
}

// A resource is the holder and the whole resource object: a strain is per country.
function resourceKey(event) {
  const { type, id, country } = event.resource;
  return [event.holder, type, id, country ?? ""].join("\u001f");
}

// The work, after the answer went out: one case per event type the store cares about.
// Unknown types are fine: new ones are added over time, receivers ignore what they do not use.
function act(event) {
  const done = { event: "processed", webhook_id: event.id, type: event.type };
  const { id } = event.resource;
  switch (event.type) {
    case "order.approved":
      print({ ...done, action: `order ${id} approved: tell the customer, ask for payment` });
      break;
    case "order.paid":
      print({ ...done, action: `order ${id} paid: start fulfilment` });
      break;
    case "client.kyc.completed":
      print({ ...done, action: `customer ${id} verified: they may order now` });
      break;
    default:
      print({ ...done, action: "ignored" });
  }
}

// Events wait here for `act`, after their request was answered. A real store puts them on its
// own job queue (a table, Redis, SQS): then a crash after the 204 loses nothing.
const queue = [];
let draining = false;

function enqueue(event) {
  queue.push(event);
  if (!draining) {
    draining = true;
    setImmediate(drain);
  }
}

function drain() {
  while (queue.length > 0) {
    const event = queue.shift();
    try {
      act(event);
    } catch (error) {
      print({ event: "failed", webhook_id: event.id, type: event.type, error: String(error) });
    }
  }
  draining = false;
}

function answer(response, status, body) {
  response.writeHead(status, body ? { "content-type": "application/json" } : {});
  response.end(body ? JSON.stringify(body) : undefined);
}

// The body exactly as received: the signature covers these bytes, not a re-serialised object.
function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    request.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new RangeError("body too large"));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

function verify(webhook, body, headers) {
  // The library checks webhook-timestamp too: more than 5 minutes from this host's clock, either
  // way, is refused (a replayed capture). The daemon signs every attempt anew, so its retries
  // pass; keep this host's clock synchronised.
  try {
    return { event: webhook.verify(body, headers) };
  } catch (error) {
    if (error instanceof WebhookVerificationError || error instanceof SyntaxError) {
      return { error: error.message };
    }
    throw error;
  }
}

async function receive(webhook, request, response) {
  if (request.url !== PATH) return answer(response, 404, { error: "not found" });
  if (request.method !== "POST") return answer(response, 405, { error: "POST only" });
  let body;
  try {
    body = await readBody(request);
  } catch {
    return answer(response, 413, { error: "body too large" });
  }
  const webhookId = request.headers["webhook-id"] ?? null;
  const { event, error } = verify(webhook, body, request.headers);
  if (error !== undefined) {
    print({ event: "rejected", webhook_id: webhookId, reason: error });
    return answer(response, 400, { error: "invalid signature" });
  }
  if (seenIds.has(webhookId)) {
    // A retry or a replay: it was handled already. Answer 2xx so the daemon stops sending it.
    print({ event: "duplicate", webhook_id: webhookId, type: event.type });
    return answer(response, 204);
  }
  remember(seenIds, webhookId, true);
  const key = resourceKey(event);
  if (lastSequence.has(key) && event.sequence <= lastSequence.get(key)) {
    // An older event of this resource arriving late: what it says is superseded already.
    print({ event: "stale", webhook_id: webhookId, type: event.type, sequence: event.sequence });
    return answer(response, 204);
  }
  remember(lastSequence, key, event.sequence);
  print({ event: "accepted", webhook_id: webhookId, type: event.type, sequence: event.sequence });
  answer(response, 204);
  enqueue(event);
}

function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "8080" },
      },
    }));
    if (!/^\d+$/.test(values.port) || Number(values.port) > 65535) {
      throw new Error(`--port: not a port number: ${values.port}`);
    }
  } catch (error) {
    process.stderr.write(`${error.message}\nusage: node server.mjs [--port 8080] [--host 127.0.0.1]\n`);
    process.exit(2);
  }
  const secret = process.env.DRGREEN_WEBHOOK_SECRET ?? "";
  let webhook;
  try {
    if (!secret.startsWith("whsec_")) throw new Error("not a whsec_ secret");
    webhook = new Webhook(secret);
  } catch {
    process.stderr.write("set DRGREEN_WEBHOOK_SECRET to the sink's whsec_ secret\n");
    process.exit(2);
  }
  const server = http.createServer((request, response) => {
    receive(webhook, request, response).catch((error) => {
      print({ event: "error", error: String(error) });
      if (!response.headersSent) answer(response, 500, { error: "internal error" });
    });
  });
  server.on("error", (error) => {
    process.stderr.write(`cannot listen on ${values.host}:${values.port}: ${error.message}\n`);
    process.exit(1);
  });
  server.listen(Number(values.port), values.host, () => {
    const { port } = server.address();
    print({ event: "listening", url: `http://${values.host}:${port}${PATH}` });
  });
  // A signal stops taking requests; the process ends once the answered events are processed.
  // A second signal ends it at once.
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      if (stopping) process.exit(1);
      stopping = true;
      server.close();
    });
  }
}

main();

// POST /api/drgreen: drgreen-poller's webhook events, in a Next.js App Router app.
//
// Verifies the Standard Webhooks signature over the raw body, answers 400 when it fails and
// 204 at once when it holds, acts once per `webhook-id` (delivery is at least once: a retry or
// a replay sends the same id again), drops an event whose `sequence` is not above the last one
// of its resource (an older event arriving late), and does the store's work after answering.
// Only the web-standard Request and Response are used: nothing here depends on a Next.js
// version. See ../../../README.md (examples/nextjs/README.md) for where it goes.

import { Webhook, WebhookVerificationError } from "standardwebhooks";
import type { DrGreenEvent, EventOf } from "../../../lib/drgreen-events";

// The Node.js runtime: the memory of seen ids below lives in one long-running server process.
export const runtime = "nodejs";

// How many webhook-ids and resources this example remembers (see `firstTime`).
const REMEMBERED = 10_000;

// Bounded memory of what was seen, oldest forgotten first (a Map keeps insertion order).
// A real store keeps the seen ids in its database instead, with a unique key on webhook_id,
// written in the same transaction as the job it queues for the event, so a restart, a new
// deployment or a second server instance does not forget them; the last sequence of each
// resource too. Serverless functions share no memory at all: there the database is a must.
const seenIds = new Map<string, true>();
const lastSequence = new Map<string, number>();

function remember<Value>(map: Map<string, Value>, key: string, value: Value): void {
  map.delete(key);
  map.set(key, value);
  const oldest = map.keys().next();
  if (map.size > REMEMBERED && !oldest.done) {
    map.delete(oldest.value);
  }
}

/** Whether this webhook-id is new (and from now on, seen). */
function firstTime(webhookId: string): boolean {
  if (seenIds.has(webhookId)) return false;
  remember(seenIds, webhookId, true);
  return true;
}

/** Whether an event of the same resource with this sequence or a higher one was taken. */
function superseded(event: DrGreenEvent): boolean {
  // A resource is the holder and the whole resource object: a strain is per country.
  const { type, id } = event.resource;
  const country = event.resource.type === "strain" ? event.resource.country : "";
  const key = [event.holder, type, id, country].join("\u001f");
  const last = lastSequence.get(key);
  if (last !== undefined && event.sequence <= last) return true;
  remember(lastSequence, key, event.sequence);
  return false;
}

/** One JSON line per request, with ids and types only: `data` holds customer details. */
function log(fields: Record<string, unknown>): void {
  console.info(JSON.stringify({ source: "drgreen", ...fields }));
}

let verifier: Webhook | undefined;

/** The verifier for DRGREEN_WEBHOOK_SECRET, the sink's `whsec_` secret (read at first use). */
function webhook(): Webhook | undefined {
  const secret = process.env.DRGREEN_WEBHOOK_SECRET;
  if (verifier === undefined && secret?.startsWith("whsec_")) {
    verifier = new Webhook(secret);
  }
  return verifier;
}

function noContent(): Response {
  return new Response(null, { status: 204 });
}

export async function POST(request: Request): Promise<Response> {
  const hook = webhook();
  if (hook === undefined) {
    log({ event: "misconfigured", error: "DRGREEN_WEBHOOK_SECRET is not a whsec_ secret" });
    return Response.json({ error: "receiver not configured" }, { status: 500 });
  }
  // The raw body, exactly as sent: the signature covers these bytes. Never verify
  // JSON.stringify(await request.json()): a re-serialised body differs and fails.
  const body = await request.text();
  const headers = {
    "webhook-id": request.headers.get("webhook-id") ?? "",
    "webhook-timestamp": request.headers.get("webhook-timestamp") ?? "",
    "webhook-signature": request.headers.get("webhook-signature") ?? "",
  };
  let event: DrGreenEvent;
  try {
    // Also refuses a webhook-timestamp more than 5 minutes from this host's clock, either way
    // (a replayed capture). The daemon signs every attempt anew, so its retries pass.
    event = hook.verify(body, headers) as DrGreenEvent;
  } catch (error) {
    if (error instanceof WebhookVerificationError || error instanceof SyntaxError) {
      log({ event: "rejected", webhook_id: headers["webhook-id"], reason: error.message });
      return Response.json({ error: "invalid signature" }, { status: 400 });
    }
    throw error;
  }
  const shown = { webhook_id: event.id, type: event.type, sequence: event.sequence };
  if (!firstTime(headers["webhook-id"])) {
    // A retry or a replay, handled already: 2xx, so that the daemon stops sending it.
    log({ event: "duplicate", ...shown });
    return noContent();
  }
  if (superseded(event)) {
    // An older event arriving late: what it says is superseded already.
    log({ event: "stale", ...shown });
    return noContent();
  }
  log({ event: "accepted", ...shown });
  // Answer first, work after: a slow answer makes the daemon time out and send it again.
  // On a server that keeps running (`next start`, a container) this timer's work completes.
  // On a serverless host the function may be frozen once it has answered: there, call
  // `after(() => handle(event))` from "next/server" (Next.js 15.1 and later) instead, or
  // better, insert the event into your job queue (a table) with its webhook-id, in one
  // transaction, before answering.
  setTimeout(() => {
    handle(event).catch((error: unknown) => {
      log({ event: "failed", ...shown, error: String(error) });
    });
  }, 0);
  return noContent();
}

/** The store's work: one case per event type it cares about. */
async function handle(event: DrGreenEvent): Promise<void> {
  switch (event.type) {
    case "order.approved":
      return orderApproved(event);
    case "order.paid":
      return orderPaid(event);
    case "client.kyc.completed":
      return kycCompleted(event);
    default:
      // Every other type, and types added later: nothing to do here.
      log({ event: "processed", webhook_id: event.id, type: event.type, action: "ignored" });
  }
}

async function orderApproved(event: EventOf<"order.approved">): Promise<void> {
  const order = event.data.object;
  // e.g. e-mail the customer that Dr Green approved the order, and ask for payment.
  log({
    event: "processed",
    webhook_id: event.id,
    type: event.type,
    action: `order ${order.id} approved (was ${event.data.previous.adminApproval})`,
  });
}

async function orderPaid(event: EventOf<"order.paid">): Promise<void> {
  const order = event.data.object;
  // e.g. mark the order paid in your database and start fulfilment.
  log({
    event: "processed",
    webhook_id: event.id,
    type: event.type,
    action: `order ${order.id} paid (${order.paymentStatus}, total ${order.totalAmount ?? "?"})`,
  });
}

async function kycCompleted(event: EventOf<"client.kyc.completed">): Promise<void> {
  // e.g. let the customer check out: both KYC gates hold now.
  log({
    event: "processed",
    webhook_id: event.id,
    type: event.type,
    action: `customer ${event.resource.id} may order`,
  });
}

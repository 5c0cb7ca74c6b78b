// Types of drgreen-poller's events (the envelope of its README, "Events"), for TypeScript
// receivers: `DrGreenEvent` is a union discriminated by `type`, so a `switch (event.type)`
// narrows `event.data` to that type's shape (as Stripe's typed events do).
//
// Receivers must tolerate what these types do not list: new fields appear over time, new event
// types too (handle them in a `default:` branch), and Dr Green's own fields in `data.object`
// pass through as Dr Green sends them. An enum value drgreen-poller does not know passes through
// as well, which is why the status types below also admit any string.

/** Any other string: keeps editor completion of the known values, admits unknown ones. */
type Other = string & {};

export type ApprovalStatus = "PENDING" | "VERIFIED" | "REJECTED" | Other;
export type PaymentStatus = "PENDING" | "PAID" | "COMPLETED" | "FAILED" | "REFUNDED" | Other;
export type OrderStatus = "PENDING" | "PROCESSING" | "SHIPPED" | "DELIVERED" | "CANCELLED" | Other;

/** The envelope every event has. */
export interface EventEnvelope<Type extends string, Resource extends EventResource, Data> {
  /** `evt_` + 26 characters; the `webhook-id` header, the same on every attempt and replay. */
  id: string;
  type: Type;
  /** The `[[holders]]` name whose Dr Green API key saw the change. */
  holder: string;
  resource: Resource;
  /** Rises with each event of a resource (holder + the whole `resource`); compare with `>`. */
  sequence: number;
  /** True for a step implied but not seen (an order seen DELIVERED was SHIPPED before). */
  inferred: boolean;
  /** When drgreen-poller saw the change: `2026-11-23T10:00:03.512Z`. */
  observed_at: string;
  /** Dr Green's own timestamp of the change when it has one (`verifiedAt`, `updatedAt`). */
  occurred_at: string | null;
  data: Data;
}

export interface OrderResource {
  type: "order";
  id: string;
}
export interface ClientResource {
  type: "client";
  id: string;
}
/** A strain is per country: its catalogue entry, price and stock differ by country. */
export interface StrainResource {
  type: "strain";
  id: string;
  country: string;
}
/** The holder's commission summary (`id` is `"summary"`). */
export interface CommissionResource {
  type: "commission";
  id: string;
}
/** The holder itself (operational events; `id` is the holder's name). */
export interface HolderResource {
  type: "holder";
  id: string;
}
export type EventResource =
  | OrderResource
  | ClientResource
  | StrainResource
  | CommissionResource
  | HolderResource;

/** An order as last fetched from Dr Green; the fields drgreen-poller watches are typed. */
export interface DrGreenOrder {
  id: string;
  orderStatus: OrderStatus;
  adminApproval: ApprovalStatus;
  paymentStatus: PaymentStatus;
  invoiceNumber?: string;
  totalAmount?: number;
  createdAt?: string;
  updatedAt?: string;
  client?: { id: string; [field: string]: unknown };
  [field: string]: unknown;
}

/** A customer as last listed by Dr Green (never their medical record: it is not fetched). */
export interface DrGreenClient {
  id: string;
  isKYCVerified: boolean;
  adminApproval: ApprovalStatus;
  isActive: boolean;
  email?: string;
  firstName?: string;
  lastName?: string;
  createdAt?: string;
  updatedAt?: string;
  [field: string]: unknown;
}

/** A strain of the event's country's catalogue; `stockQuantity` is that country's stock. */
export interface DrGreenStrain {
  id: string;
  name?: string;
  retailPrice?: number;
  stockQuantity?: number;
  isAvailable?: boolean;
  isActive?: boolean;
  [field: string]: unknown;
}

/** The commission summary, with drgreen-poller's USD totals beside Dr Green's fields. */
export interface CommissionSummary {
  totalUsd?: number;
  paidUsd?: number;
  [field: string]: unknown;
}

/** `data.amounts` of the commission events, in USD. */
export interface CommissionAmounts {
  currency: "USD";
  previous: number;
  current: number;
  delta: number;
}

/** `data.previous` of an event that moved nothing (a `*.created`, `client.kyc.completed`). */
export type Nothing = Record<string, never>;

/** `data`: the resource as last fetched, and what the fields it moved held before. */
interface Data<Resource, Previous> {
  object: Resource;
  previous: Previous;
}

type OrderEvent<Type extends string, Previous> = EventEnvelope<
  Type,
  OrderResource,
  Data<DrGreenOrder, Previous>
>;
type ClientEvent<Type extends string, Previous> = EventEnvelope<
  Type,
  ClientResource,
  Data<DrGreenClient, Previous>
>;
type StrainField = "retailPrice" | "stockQuantity" | "isAvailable" | "isActive";
type StrainValues = Partial<Pick<DrGreenStrain, StrainField>>;

export type OrderCreated = OrderEvent<"order.created", Nothing>;
export type OrderApproval = OrderEvent<
  "order.approved" | "order.rejected" | "order.approval_changed",
  { adminApproval: ApprovalStatus }
>;
export type OrderPayment = OrderEvent<
  "order.paid" | "order.payment_failed" | "order.refunded" | "order.payment_status_changed",
  { paymentStatus: PaymentStatus }
>;
export type OrderFulfilment = OrderEvent<
  | "order.processing"
  | "order.shipped"
  | "order.delivered"
  | "order.cancelled"
  | "order.status_changed",
  { orderStatus: OrderStatus }
>;
export type ClientCreated = ClientEvent<"client.created", Nothing>;
export type ClientKycCheck = ClientEvent<
  "client.kyc.verified" | "client.kyc.verification_changed",
  { isKYCVerified: boolean }
>;
export type ClientKycApproval = ClientEvent<
  "client.kyc.approved" | "client.kyc.rejected" | "client.kyc.approval_changed",
  { adminApproval: ApprovalStatus }
>;
/** Both KYC gates hold for the first time: the customer can order. */
export type ClientKycCompleted = ClientEvent<"client.kyc.completed", Nothing>;
export type ClientActivation = ClientEvent<
  "client.activated" | "client.deactivated",
  { isActive: boolean }
>;
export type CommissionTotal = EventEnvelope<
  "commission.accrued" | "commission.adjusted",
  CommissionResource,
  Data<CommissionSummary, { totalUsd: number }> & { amounts: CommissionAmounts }
>;
export type CommissionPaid = EventEnvelope<
  "commission.paid",
  CommissionResource,
  Data<CommissionSummary, { paidUsd: number }> & { amounts: CommissionAmounts }
>;
export type StrainCreated = EventEnvelope<
  "strain.created",
  StrainResource,
  Data<DrGreenStrain, Nothing>
>;
export type StrainUpdated = EventEnvelope<
  "strain.updated",
  StrainResource,
  Data<DrGreenStrain, StrainValues> & { changed: StrainField[] }
>;
/** The strain as last seen; `previous` holds its last watched values. */
export type StrainRemoved = EventEnvelope<
  "strain.removed",
  StrainResource,
  Data<DrGreenStrain | null, StrainValues>
>;
/** A holder's API key was refused (401/403): Dr Green's status and message, and the tier
 * whose run was refused. */
export type HolderUnauthorized = EventEnvelope<
  "poller.holder_unauthorized",
  HolderResource,
  Data<{ name: string }, Nothing> & { status: number | null; message: string; tier: string }
>;
export type HolderRecovered = EventEnvelope<
  "poller.holder_recovered",
  HolderResource,
  Data<{ name: string }, Nothing>
>;

/** Every event drgreen-poller sends, discriminated by `type`. */
export type DrGreenEvent =
  | OrderCreated
  | OrderApproval
  | OrderPayment
  | OrderFulfilment
  | ClientCreated
  | ClientKycCheck
  | ClientKycApproval
  | ClientKycCompleted
  | ClientActivation
  | CommissionTotal
  | CommissionPaid
  | StrainCreated
  | StrainUpdated
  | StrainRemoved
  | HolderUnauthorized
  | HolderRecovered;

/** The members of `Events` whose `type` admits `Type`. */
type Having<Events, Type> = Events extends { type: infer Types }
  ? Type extends Types
    ? Events
    : never
  : never;

/** One event type's envelope, for a function that handles it: `EventOf<"order.paid">`. */
export type EventOf<Type extends DrGreenEvent["type"]> = Having<DrGreenEvent, Type>;

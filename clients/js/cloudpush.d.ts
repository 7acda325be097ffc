// Types of cloudpush.mjs (the cloudpush JavaScript client).

export declare const MsgType: Readonly<{
  ERROR: -1; CONNECTION: 0; BUSINESS: 1; BUSINESS_ACK: 2; HEARTBEAT: 3; HEARTBEAT_ACK: 4;
  RECONNECT: 5;
}>;

/** One protocol message (docs/protocol.md); absent keys are omitted. */
export interface Envelope {
  msgType: -1 | 0 | 1 | 2 | 3 | 4 | 5;
  activeTime?: number;
  /** CONNECTION: the broadcast stream's epoch. */
  bepoch?: string;
  /** CONNECTION: the broadcast stream's current offset. */
  boffset?: number | null;
  /** BUSINESS: a broadcast (offset and epoch are the broadcast stream's). */
  broadcast?: true;
  /** BUSINESS: the stream's epoch; CONNECTION: the channel stream's. */
  epoch?: string;
  from?: string;
  messageId?: string;
  msg?: Record<string, unknown>;
  /** BUSINESS: +1 per message of its stream; null = not stored. CONNECTION: the channel stream's current offset. */
  offset?: number | null;
  /** CONNECTION, when recovery was asked: whether every missed message follows. */
  recovered?: boolean;
  requestId?: string;
  resultMsg?: string;
  sessionId?: string;
  to?: string[];
  trigger?: 1 | 2 | 3;
}

export declare const Stream: Readonly<{ CHANNEL: "channel"; BROADCAST: "broadcast" }>;
export type StreamName = "channel" | "broadcast";

/**
 * Where a client is in its two streams, as the query arguments that resume from there
 * (null = unknown). JSON-serialisable: save it, pass it back as `options.position` or to `connect()`.
 */
export interface Position {
  since: number | null;
  epoch: string | null;
  bsince: number | null;
  bepoch: string | null;
}

export interface GapDetail {
  stream: StreamName;
  epoch: string | null;
  /** First and last missed offset; null when unknown (an epoch change, an unreadable server gap). */
  from: number | null;
  to: number | null;
  /**
   * "offset": a message came with offset > last + 1; "reconnect": a connect without recovery started
   * past the position; "epoch": the stream's history was lost (new epoch); "server": an ERROR "gap:...".
   */
  reason: "offset" | "reconnect" | "epoch" | "server";
  /** The BUSINESS (offset, epoch) or ERROR (server) envelope that revealed it. */
  envelope?: Envelope;
  /** "server": the ERROR's resultMsg. */
  message?: string;
}

export interface RecoveredDetail {
  /** false: messages were missed (history gone or epoch changed). */
  recovered: boolean;
  connection: Envelope;
}

export interface ReconnectDetail {
  /** When the client reconnects (the RECONNECT's msg.delayMs, capped at 5 min). */
  delayMs: number;
  reason: string;
  envelope: Envelope;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface StateDetail {
  state: ConnectionState;
  /** Reconnect attempt since the last CONNECTION (0 for the first connect). */
  attempt: number;
  /** "reconnecting": milliseconds until the next attempt. */
  delay?: number;
  /** "reconnecting" and "closed": the close code and reason that caused it. */
  code?: number;
  reason?: string;
  /** "connected": the session id of the CONNECTION envelope. */
  sessionId?: string | null;
  /** "connected": the CONNECTION's recovered flag (null when absent). */
  recovered?: boolean | null;
  /** "reconnecting" because the server sent RECONNECT: not a failure, attempt not counted. */
  drain?: true;
}

export interface ErrorDetail {
  message: string;
  /** An ERROR envelope that answers no pending send(). */
  envelope?: Envelope;
  /** getToken() failures. */
  error?: unknown;
  /** An unparseable frame. */
  data?: string;
}

export interface ClientEvents {
  /** Every BUSINESS envelope received, except duplicates (offset already seen). */
  message: Envelope;
  /** A BUSINESS envelope dropped because its stream offset was already seen. */
  duplicate: Envelope;
  /** Offsets that never reached the client; emitted before the message that revealed them. */
  gap: GapDetail;
  /** The CONNECTION's recovered flag, when it carries one. */
  recovered: RecoveredDetail;
  /** The position moved (a new message, a CONNECTION, a server gap): save it to resume later. */
  position: Position;
  /** The server is draining (RECONNECT, msgType 5): the client reconnects after delayMs. */
  reconnect: ReconnectDetail;
  /** The CONNECTION envelope of each (re)connect. */
  connection: Envelope;
  /** HEARTBEAT_ACK envelopes ("token refreshed" in resultMsg after a refresh). */
  heartbeat: Envelope;
  /** Every envelope received, before the more specific events. */
  envelope: Envelope;
  state: StateDetail;
  error: ErrorDetail;
}

export interface ClientOptions {
  /** 1-128 characters of [A-Za-z0-9._:@-]. */
  channelId: string;
  /** A fixed token, sent as the `token` query argument. */
  token?: string | null;
  /** Called before every (re)connect and to refresh the token on a heartbeat; wins over `token`. */
  getToken?: (() => string | Promise<string>) | null;
  /** Extra query arguments for each (re)connect (an object or a function returning one). */
  params?: Record<string, string | number> | (() => Record<string, string | number>) | null;
  /** Answer every received BUSINESS message that has a messageId with a BUSINESS_ACK. Default false. */
  autoAck?: boolean;
  /**
   * Connect with ack=1: the server resends unconfirmed messages and closes with 4006 after its retries.
   * true: the client acks each message after the "message" listeners returned; "manual": call ack().
   * Default false.
   */
  ack?: boolean | "manual";
  /** Resume from the position on every (re)connect (since/epoch, bsince/bepoch). Default true. */
  recover?: boolean;
  /** A saved position to resume from on the first connect (e.g. after a page reload). */
  position?: Partial<Position> | null;
  /** Backoff: attempt n waits a random time up to min(maxDelay, minDelay * factor^(n-1)) ms. */
  minDelay?: number; // 500
  maxDelay?: number; // 30000
  factor?: number; // 2
  /** Milliseconds between heartbeats. Default 25000 (under the bridge's 60 s idle timeout). */
  heartbeatInterval?: number;
  /** With getToken: refresh this many ms before the token's exp. Default 60000. */
  refreshBefore?: number;
  /** Default timeout of send(), ms. Default 10000. */
  sendTimeout?: number;
  /** Give up on an attempt that has no CONNECTION envelope after this many ms. Default 10000. */
  connectTimeout?: number;
  /** A WebSocket constructor (browsers: the global one; Node < 22: e.g. the ws package's). */
  WebSocket?: { new (url: string): WebSocket };
}

export interface SendOptions {
  messageId?: string;
  requestId?: string;
  timeout?: number;
}

export declare class SendError extends Error {
  /** The ERROR envelope when the server refused the message. */
  envelope: Envelope | null;
}

export declare class CloudpushClient extends EventTarget {
  constructor(url: string, options: ClientOptions);
  readonly state: ConnectionState;
  readonly channelId: string;
  readonly sessionId: string | null;
  /** Where the client is in its streams; save it to resume after a reload. */
  readonly position: Position;
  /** The last CONNECTION's recovered flag (null: none asked, or a server without history). */
  readonly recovered: boolean | null;
  /** Whether (re)connects resume from the position. */
  recover: boolean;
  /**
   * Starts connecting; resolves with the first CONNECTION envelope, rejects if the client closes first.
   * A position replaces the client's before it connects.
   */
  connect(position?: Partial<Position> | null): Promise<Envelope>;
  /** Closes for good (no reconnect); pending send() calls reject. */
  close(code?: number, reason?: string): void;
  /** A BUSINESS message; resolves with its BUSINESS_ACK, rejects with a SendError. */
  send(to: string | string[], msg: Record<string, unknown>, options?: SendOptions): Promise<Envelope>;
  /** Confirms a received message (BUSINESS_ACK upstream); with ack: "manual" the app calls it. */
  ack(messageId: string): void;
  on<K extends keyof ClientEvents>(type: K, callback: (detail: ClientEvents[K]) => void): this;
  off<K extends keyof ClientEvents>(type: K, callback: (detail: ClientEvents[K]) => void): this;
}

export declare function shouldReconnect(code: number, canRenewToken: boolean): boolean;
export declare function backoffDelay(attempt: number,
  options?: { minDelay?: number; maxDelay?: number; factor?: number }): number;
/** The JWT's exp claim in epoch milliseconds, or null (the signature is not checked). */
export declare function tokenExpiry(token: string): number | null;

/** The position logic of the client, without a socket: dedupe by (stream, offset), gaps, recovery. */
export declare class StreamTracker {
  constructor(position?: Partial<Position> | null);
  channel: { offset: number | null; epoch: string | null };
  broadcast: { offset: number | null; epoch: string | null };
  readonly position: Position;
  restore(position?: Partial<Position> | null): void;
  /** since/epoch/bsince/bepoch for the known streams. */
  recoveryParams(): Partial<Position>;
  /** A CONNECTION; asked: what the URL asked to recover per stream. Returns the gaps it reveals. */
  connected(env: Envelope, asked?: Partial<Record<StreamName, { since: number; epoch: string | null } | null>>): GapDetail[];
  received(env: Envelope): { stream: StreamName; verdict: "new" | "duplicate" | "unsequenced"; gap: GapDetail | null };
  serverGap(env: Envelope): GapDetail;
}

// Types of cloudpush.mjs (the cloudpush JavaScript client).

export declare const MsgType: Readonly<{
  ERROR: -1; CONNECTION: 0; BUSINESS: 1; BUSINESS_ACK: 2; HEARTBEAT: 3; HEARTBEAT_ACK: 4;
}>;

/** One protocol message (docs/protocol.md); absent keys are omitted. */
export interface Envelope {
  msgType: -1 | 0 | 1 | 2 | 3 | 4;
  activeTime?: number;
  from?: string;
  messageId?: string;
  msg?: Record<string, unknown>;
  requestId?: string;
  resultMsg?: string;
  sessionId?: string;
  to?: string[];
  trigger?: 1 | 2 | 3;
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
  /** Every BUSINESS envelope received. */
  message: Envelope;
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
  /** Starts connecting; resolves with the first CONNECTION envelope, rejects if the client closes first. */
  connect(): Promise<Envelope>;
  /** Closes for good (no reconnect); pending send() calls reject. */
  close(code?: number, reason?: string): void;
  /** A BUSINESS message; resolves with its BUSINESS_ACK, rejects with a SendError. */
  send(to: string | string[], msg: Record<string, unknown>, options?: SendOptions): Promise<Envelope>;
  /** Confirms a received message (BUSINESS_ACK upstream). */
  ack(messageId: string): void;
  on<K extends keyof ClientEvents>(type: K, callback: (detail: ClientEvents[K]) => void): this;
  off<K extends keyof ClientEvents>(type: K, callback: (detail: ClientEvents[K]) => void): this;
}

export declare function shouldReconnect(code: number, canRenewToken: boolean): boolean;
export declare function backoffDelay(attempt: number,
  options?: { minDelay?: number; maxDelay?: number; factor?: number }): number;
/** The JWT's exp claim in epoch milliseconds, or null (the signature is not checked). */
export declare function tokenExpiry(token: string): number | null;

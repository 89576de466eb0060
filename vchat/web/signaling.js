// The WebSocket to the signaling server (docs/protocol.md): says hello, hands every server message on,
// and after a lost connection reconnects with backoff and resumes the session with its resume_token.
//
// Its `phase` is one of:
//   "new"        start() not called yet
//   "connecting" the first connection (or a fresh session's) is being opened; no session yet
//   "open"       welcomed: messages can be sent
//   "resuming"   the connection was lost; reconnecting to resume the session within the server's grace window
//   "offline"    the server cannot be reached (or the grace window has passed); still retrying
//   "closed"     for good: banned ("banned"), taken over by another connection ("elsewhere"), refused without a
//                login ("login_required"), its account deleted ("account_deleted"), or close() called
// Each change is announced with a "phase" event; each server message with a "message" event (detail: the
// message). Messages are only sent while "open"; send() says whether one was.

export const SUBPROTOCOL = "vchat.v1.json";

/** The server's default --resume-grace: how long a lost session waits to be resumed. */
export const RESUME_GRACE_MS = 15_000;

const OPEN_TIMEOUT_MS = 10_000; // a handshake that takes longer is given up and retried
const PING_EVERY_MS = 15_000; // an application ping finds a dead connection the browser has not noticed
const PONG_TIMEOUT_MS = 10_000;
const TICK_MS = 2_500;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

// Close codes (docs/protocol.md#close-codes).
const SHUTTING_DOWN = 4000;
const HELLO_REQUIRED = 4001;
const AGE_REQUIRED = 4002;
const RESUMED_ELSEWHERE = 4003;
const BANNED = 4004;
const KICKED = 4005;
const TOO_MANY_BAD = 4008;
const LOGIN_REQUIRED = 4009;
const ACCOUNT_DELETED = 4010;
// Closed for good, with the reason `closedReason` gives: reconnecting would only be refused again.
const FINAL_CODES = new Map([
  [BANNED, "banned"],
  [RESUMED_ELSEWHERE, "elsewhere"],
  [LOGIN_REQUIRED, "login_required"],
  [ACCOUNT_DELETED, "account_deleted"],
]);
const FRESH_SESSION_CODES = new Set([HELLO_REQUIRED, AGE_REQUIRED, KICKED, TOO_MANY_BAD]);

/** The WebSocket URL of the page's own server: ws(s)://host/ws, or a <meta name="vchat-ws"> override. */
export function signalingUrl(doc = document, loc = location) {
  const override = doc.querySelector('meta[name="vchat-ws"]')?.getAttribute("content");
  if (override) return new URL(override, loc.href).href;
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

export class Signaling extends EventTarget {
  /**
   * `url`: the WebSocket URL; `makeHello()`: the hello's own fields (gender, lang, client), asked at each
   * connection. The age confirmation, the type and the resume token are added here.
   */
  constructor(url, makeHello) {
    super();
    this.url = url;
    this.makeHello = makeHello;
    this.phase = "new";
    // Once phase is "closed": "banned", "elsewhere", "login_required", "account_deleted" or "closed" (by close()).
    this.closedReason = null;
    this.lostAt = null; // when the session's connection was lost (ms), while resuming
    this.lastHello = null; // the fields of the last hello sent
    this.socket = null;
    this.welcomed = false; // the current socket got its welcome
    this.token = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.openTimer = null;
    this.graceTimer = null;
    this.tick = null;
    this.lastPingAt = 0;
    this.pingSentAt = null;
    this.pingId = 0;
    this.abandoned = []; // sockets given up on while they may still be open
    this.onOnline = () => this.retryNow();
    window.addEventListener("online", this.onOnline);
  }

  /** Open the first connection. */
  start() {
    if (this.phase !== "new") return;
    this.setPhase("connecting");
    this.connect();
  }

  /** Send one message; false if there is no open session to send it on. */
  send(message) {
    if (this.phase !== "open" || this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /** End this session cleanly (the partner learns at once) and start a fresh one, with a new hello. */
  renew() {
    if (this.phase === "closed") return;
    this.token = null;
    this.dropSocket(true);
    this.setPhase("connecting");
    this.connect();
  }

  /** Close for good, cleanly: the server ends the session at once. */
  close() {
    this.dropSocket(true);
    this.finish("closed");
  }

  /** Retry at once if a retry is waiting (the browser says the network is back). */
  retryNow() {
    if (this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  // --- one connection ---------------------------------------------------------------------------------------

  connect() {
    this.retryTimer = null;
    let socket;
    try {
      socket = new WebSocket(this.url, SUBPROTOCOL);
    } catch (error) {
      console.warn("vchat: cannot open the WebSocket", error);
      this.lost(null);
      return;
    }
    this.socket = socket;
    this.welcomed = false;
    this.openTimer = setTimeout(() => this.giveUp(), OPEN_TIMEOUT_MS);
    socket.onopen = () => {
      clearTimeout(this.openTimer);
      this.openTimer = null;
      this.sayHello();
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.lost(event.code);
    socket.onerror = () => {}; // a close event follows, with the code that matters
  }

  sayHello() {
    const fields = this.makeHello();
    this.lastHello = fields;
    const hello = { type: "hello", age_confirmed: true, ...fields };
    if (this.token) hello.resume = this.token;
    this.socket.send(JSON.stringify(hello));
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("vchat: the server sent something that is not JSON");
      return;
    }
    if (message === null || typeof message !== "object" || typeof message.type !== "string") return;
    switch (message.type) {
      case "welcome":
        this.token = typeof message.resume_token === "string" ? message.resume_token : null;
        this.welcomed = true;
        this.attempt = 0;
        this.lostAt = null;
        clearTimeout(this.graceTimer);
        this.graceTimer = null;
        this.closeAbandoned();
        this.startHeartbeat();
        this.setPhase("open");
        break;
      case "pong":
        this.pingSentAt = null;
        break;
      case "banned":
        this.token = null;
        this.finish("banned"); // before the close 4004 arrives, so that nothing reconnects
        break;
      case "error":
        if (message.code === "kicked") this.token = null; // a kick ends the session: the next hello is fresh
        if (message.code === "login_required" || message.code === "account_deleted") {
          this.token = null;
          this.finish(message.code); // before the close (4009, 4010) arrives, so that nothing reconnects
        }
        break;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  /** The socket closed (`code`), failed to open (`code` null), or was given up on. */
  lost(code) {
    const hadSession = this.welcomed;
    this.dropSocket(false);
    if (this.phase === "closed") return;
    if (FINAL_CODES.has(code)) return this.finish(FINAL_CODES.get(code));
    if (FRESH_SESSION_CODES.has(code)) this.token = null;
    if (code === SHUTTING_DOWN) {
      // The server is going away: unreachable until it is back (the token is still tried then).
      this.attempt = Math.max(this.attempt, 2);
      this.setPhase("offline");
    } else if (hadSession && this.token) {
      this.lostAt = Date.now();
      clearTimeout(this.graceTimer);
      this.graceTimer = setTimeout(() => {
        this.graceTimer = null;
        if (this.phase === "resuming") this.setPhase("offline");
      }, RESUME_GRACE_MS);
      this.setPhase("resuming");
    } else if (hadSession) {
      this.setPhase("connecting"); // a fresh session comes next (after a kick, say)
    } else if (this.phase !== "resuming") {
      this.setPhase("offline");
    }
    this.scheduleRetry();
  }

  /** Stop waiting on a socket that does not open or answer; it is left to close by itself. */
  giveUp() {
    const socket = this.socket;
    if (socket === null) return;
    this.abandoned.push(socket);
    this.lost(null);
  }

  scheduleRetry() {
    const base =
      this.attempt === 0 ? BACKOFF_FIRST_MS : Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
    this.attempt += 1;
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Forget the current socket: `clean` closes it with a close frame (which ends the session at once). */
  dropSocket(clean) {
    clearTimeout(this.openTimer);
    this.openTimer = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopHeartbeat();
    const socket = this.socket;
    this.socket = null;
    this.welcomed = false;
    if (socket === null) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (clean) {
      try {
        socket.close(1000);
      } catch {
        // already closing
      }
    }
  }

  /** After a welcome: an abandoned socket still open holds a session of its own, so end it. */
  closeAbandoned() {
    for (const socket of this.abandoned) {
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
        socket.close(1000);
      }
    }
    this.abandoned = [];
  }

  finish(reason) {
    this.dropSocket(reason === "closed");
    clearTimeout(this.graceTimer);
    this.graceTimer = null;
    window.removeEventListener("online", this.onOnline);
    this.closedReason = reason;
    this.setPhase("closed");
  }

  setPhase(phase) {
    if (this.phase === phase) return;
    this.phase = phase;
    this.dispatchEvent(new CustomEvent("phase", { detail: phase }));
  }

  // --- heartbeat: the server's WebSocket pings are invisible to a page, so it sends its own `ping` ----------

  startHeartbeat() {
    this.stopHeartbeat();
    this.lastPingAt = Date.now();
    this.pingSentAt = null;
    this.tick = setInterval(() => this.beat(), TICK_MS);
  }

  stopHeartbeat() {
    clearInterval(this.tick);
    this.tick = null;
  }

  beat() {
    const now = Date.now();
    if (this.pingSentAt !== null) {
      if (now - this.pingSentAt > PONG_TIMEOUT_MS) {
        // No close frame, or the server would end the session: the new connection's resume takes it over.
        console.warn("vchat: no pong from the server; reconnecting");
        this.giveUp();
      }
      return;
    }
    if (now - this.lastPingAt >= PING_EVERY_MS) {
      this.pingId += 1;
      if (this.send({ type: "ping", id: `hb${this.pingId}` })) {
        this.lastPingAt = now;
        this.pingSentAt = now;
      }
    }
  }
}

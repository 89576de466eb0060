// The vchat reference client: the page's state and what it does with each server message (docs/web-client.md).
// Every text from the server or the partner reaches the page through textContent, never as markup.

import { AccountPanel, accountGender, loadAccount, loginError } from "./account.js";
import { Call, rtcConfiguration } from "./call.js";
import { COUNTRY_CODES, MAX_COUNTRIES, parseCountries } from "./countries.js";
import {
  LANGUAGE_NAMES,
  count,
  countryName,
  dateTime,
  flag,
  language,
  languageName,
  pickLanguage,
  setLanguage,
  t,
  translatePage,
} from "./i18n.js";
import { Signaling, signalingUrl } from "./signaling.js";

const MAX_CHAT_LINES = 200;
const REPORT_WINDOW_MS = 60_000; // the server takes a report of the previous match this long after it ended
const PARTNER_LEFT_SHOWN_MS = 2_000; // "partner left" stays up this long while the next search runs
const TYPING_SEND_EVERY_MS = 2_000;
const TYPING_SHOWN_MS = 4_000;
const NOTICE_SHOWN_MS = 6_000;
const LOGIN_ERROR_SHOWN_MS = 20_000;
const FILTER_DEBOUNCE_MS = 400;
const SNAPSHOT_MAX_WIDTH = 640;
const SNAPSHOT_MAX_BYTES = 240 * 1024; // under the server's 256 KiB, with room to spare
const SNAPSHOT_QUALITIES = [0.85, 0.7, 0.5, 0.3];

const DEVICE_ID_KEY = "vchat-device-id";
const PREFS_KEY = "vchat-prefs";
const LANG_KEY = "vchat-lang";
const DEVICE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const LANG_TAG = /^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,6}$/;
const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const $ = (id) => document.getElementById(id);
const ui = {
  gate: $("gate"),
  ageConfirm: $("age-confirm"),
  app: $("app"),
  online: $("online"),
  status: $("status"),
  statusDetail: $("status-detail"),
  notice: $("notice"),
  remoteVideo: $("remote-video"),
  remotePlaceholder: $("remote-placeholder"),
  partner: $("partner"),
  partnerFlag: $("partner-flag"),
  partnerCountry: $("partner-country"),
  partnerLang: $("partner-lang"),
  localVideo: $("local-video"),
  cameraMessage: $("camera-message"),
  start: $("start"),
  next: $("next"),
  stop: $("stop"),
  report: $("report"),
  filters: $("filters"),
  gender: $("gender"),
  want: $("want"),
  countries: $("countries"),
  countryAdd: $("country-add"),
  countryChips: $("country-chips"),
  countriesNote: $("countries-note"),
  chatLog: $("chat-log"),
  typing: $("typing"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  chatSend: $("chat-send"),
  reportDialog: $("report-dialog"),
  reportForm: $("report-form"),
  reportSnapshot: $("report-snapshot"),
  reportSnapshotNote: $("report-snapshot-note"),
  reportReason: $("report-reason"),
  reportComment: $("report-comment"),
  uiLang: $("ui-lang"),
};

const accountPanel = new AccountPanel(
  {
    area: $("account"),
    logins: $("account-logins"),
    open: $("account-open"),
    dialog: $("account-dialog"),
    close: $("account-close"),
    id: $("account-id"),
    providers: $("account-providers"),
    gender: $("account-gender"),
    settings: $("account-settings"),
    lang: $("settings-lang"),
    translate: $("settings-translate"),
    translateTo: $("settings-translate-to"),
    want: $("settings-want"),
    countries: $("settings-countries"),
    settingsStatus: $("settings-status"),
    logout: $("account-logout"),
    delete: $("account-delete"),
    deleteBox: $("account-delete-confirm-box"),
    deleteText: $("account-delete-text"),
    deleteUnderstand: $("account-delete-understand"),
    deleteConfirm: $("account-delete-confirm"),
    actionStatus: $("account-action-status"),
  },
  { onSettings: accountSettingsChanged, onDeleted: accountDeleted },
);

// --- storage that may be disabled --------------------------------------------------------------------------

function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage disabled: remembered for this page only
  }
}

/** The random id this browser keeps for `hello.client.device_id`; made once, never derived from anything. */
function deviceId() {
  const kept = stored(DEVICE_ID_KEY);
  if (kept && DEVICE_ID.test(kept)) return kept;
  const bytes = crypto.getRandomValues(new Uint8Array(22)); // 132 random bits
  const id = Array.from(bytes, (byte) => ID_ALPHABET[byte & 63]).join("");
  store(DEVICE_ID_KEY, id);
  return id;
}

const DEVICE = deviceId();

/** Coarse facts about the browser for `hello.client`, as moderators see them with a report. */
function clientFacts() {
  const ua = navigator.userAgent;
  const facts = { device_id: DEVICE };
  const browser = [
    [/Firefox\/(\d+)/, "Firefox"],
    [/Edg\/(\d+)/, "Edge"],
    [/OPR\/(\d+)/, "Opera"],
    [/Chrom(?:e|ium)\/(\d+)/, "Chrome"],
    [/Version\/(\d+).*Safari/, "Safari"],
  ]
    .map(([pattern, name]) => [ua.match(pattern), name])
    .find(([match]) => match);
  if (browser) facts.browser = `${browser[1]} ${browser[0][1]}`;
  const os = [
    [/Android/, "Android"],
    [/iPhone|iPad|iPod/, "iOS"],
    [/CrOS/, "ChromeOS"],
    [/Windows/, "Windows"],
    [/Mac OS X|Macintosh/, "macOS"],
    [/Linux/, "Linux"],
  ].find(([pattern]) => pattern.test(ua));
  if (os) facts.os = os[1];
  facts.device = /Mobi|iPhone/.test(ua) ? "phone" : /iPad|Tablet|Android/.test(ua) ? "tablet" : "desktop";
  return facts;
}

/** The user's own language for `hello.lang` (shown to partners), if the browser gives a well-formed one. */
function userLanguage() {
  const tag = navigator.language;
  return typeof tag === "string" && tag.length <= 35 && LANG_TAG.test(tag) ? tag : null;
}

// --- the page's state ----------------------------------------------------------------------------------------

const model = {
  running: false, // Start pressed and not Stop: search, and search again whenever a match ends
  searching: false, // in the server's queue (sent `search` or `next`, or told `searching`)
  call: null, // the current match's Call
  partnerReconnecting: false,
  partnerLeftAt: 0,
  banned: null, // {reason, until} from `banned`
  online: null,
  configuration: { iceServers: [], iceTransportPolicy: "all" },
  sessionId: null,
  sessionGender: null, // the "I am" choice the current session said hello with ("account": the account's)
  genderChosen: false, // the user picked a gender for "I am" (else a logged-in user's account says it)
  filtersSent: null, // the filters of the last `search`, as JSON: a change is sent at the next search
  lastMatch: null, // {matchId, frame, endedAt}: the match that just ended, reportable for a minute
  camera: { stream: null, problem: "camera.waiting" },
  nextId: 1,
  requests: new Map(), // request id -> {kind}, for replies and errors that carry `re`
  typingSentAt: 0,
};

let cameraReady = Promise.resolve();
let signaling = null;

function send(message) {
  return signaling !== null && signaling.send(message);
}

/** Send a message with an `id`, remembering its kind for the reply or error that carries it back as `re`. */
function request(kind, message) {
  const id = model.nextId++;
  model.requests.set(id, { kind });
  if (model.requests.size > 100) model.requests.delete(model.requests.keys().next().value);
  return send({ type: message.type, id, ...message }) ? id : null;
}

// --- the status -------------------------------------------------------------------------------------------------

/**
 * The status as data-state: idle, searching, connecting, connected, reconnecting, partner-left, banned, offline,
 * login-required, account-deleted.
 */
function currentState() {
  const phase = signaling?.phase ?? "new";
  if (model.banned || (phase === "closed" && signaling.closedReason === "banned")) return "banned";
  if (phase === "closed" && signaling.closedReason === "login_required") return "login-required";
  if (phase === "closed" && signaling.closedReason === "account_deleted") return "account-deleted";
  if (phase === "closed" || phase === "offline") return "offline";
  if (phase === "resuming") return "reconnecting";
  if (phase !== "open") return "idle";
  if (model.call) {
    if (model.partnerReconnecting) return "reconnecting";
    return model.call.connected ? "connected" : "connecting";
  }
  if (model.partnerLeftAt && Date.now() - model.partnerLeftAt < PARTNER_LEFT_SHOWN_MS) return "partner-left";
  if (model.searching) return "searching";
  return "idle";
}

function statusText(state) {
  const phase = signaling?.phase ?? "new";
  switch (state) {
    case "idle":
      return t(phase === "open" || phase === "new" ? "state.idle" : "state.idle.connecting");
    case "reconnecting":
      return t(phase === "resuming" ? "state.reconnecting.self" : "state.reconnecting.partner");
    case "banned": {
      const until = model.banned?.until;
      return typeof until === "number" ? t("state.banned.until", { until: dateTime(until) }) : t("state.banned.permanent");
    }
    case "offline":
      return t(signaling?.closedReason === "elsewhere" ? "state.offline.elsewhere" : "state.offline");
    default:
      return t(`state.${state}`);
  }
}

function reportTarget() {
  if (model.call) return { matchId: model.call.matchId, frame: null };
  const last = model.lastMatch;
  if (last && Date.now() - last.endedAt < REPORT_WINDOW_MS) return last;
  return null;
}

/** Bring everything shown in line with the state; called after every change. */
function render() {
  const state = currentState();
  const open = signaling?.phase === "open";
  ui.status.dataset.state = state;
  ui.status.textContent = statusText(state);
  const reason = state === "banned" ? model.banned?.reason : null;
  ui.statusDetail.hidden = !reason;
  ui.statusDetail.textContent = reason ? t("state.banned.reason", { reason }) : "";

  const barred = state === "banned" || signaling?.phase === "closed";
  ui.start.disabled = model.running || barred;
  ui.next.disabled = !model.running || !open || barred || model.call === null;
  ui.stop.disabled = !model.running || barred;
  ui.report.disabled = reportTarget() === null || !open;
  ui.gender.disabled = model.running;

  const call = model.call;
  ui.chatInput.disabled = ui.chatSend.disabled = call === null;
  const stream = call?.remoteStream ?? null;
  if (ui.remoteVideo.srcObject !== stream) {
    ui.remoteVideo.srcObject = stream;
    if (stream) ui.remoteVideo.play().catch(() => {}); // autoplay may wait for a click; Start was one
  }
  ui.remotePlaceholder.hidden = stream !== null;
  ui.partner.hidden = call === null;
  if (call) {
    const { country, lang } = call.partner;
    const known = typeof country === "string" && /^[A-Za-z]{2}$/.test(country);
    ui.partnerFlag.textContent = known ? flag(country) : "";
    ui.partnerCountry.textContent = known ? countryName(country.toUpperCase()) : t("partner.country-unknown");
    ui.partnerLang.textContent = typeof lang === "string" && lang ? languageName(lang) : t("partner.lang-unknown");
  }

  ui.online.textContent = model.online === null ? "–" : count(model.online);
  if (model.online !== null) ui.online.dataset.count = String(model.online);

  const problem = model.camera.problem;
  ui.cameraMessage.hidden = problem === null;
  ui.cameraMessage.textContent = problem ? t(problem) : "";
}

let noticeTimer = null;

/** Show `text` for a while; `loginError` (the code of a refused login) goes to data-login-error. */
function showNotice(text, { shownMs = NOTICE_SHOWN_MS, loginError = null } = {}) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  if (loginError) ui.notice.dataset.loginError = loginError;
  else delete ui.notice.dataset.loginError;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    ui.notice.hidden = true;
  }, shownMs);
}

// --- the camera ----------------------------------------------------------------------------------------------

function cameraProblem(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "camera.denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "camera.missing";
    case "NotReadableError":
    case "AbortError":
      return "camera.busy";
    default:
      return "camera.failed";
  }
}

async function startCamera() {
  if (!window.isSecureContext) {
    model.camera = { stream: null, problem: "camera.insecure" };
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    model.camera = { stream: null, problem: "camera.unsupported" };
    return;
  }
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" };
  let lastError = null;
  // Both, else whichever there is: a laptop without a microphone can still be seen.
  for (const constraints of [{ video, audio: true }, { video }, { audio: true }]) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      model.camera = { stream, problem: null };
      ui.localVideo.srcObject = stream;
      ui.localVideo.play().catch(() => {});
      return;
    } catch (error) {
      lastError = error;
      if (!["NotFoundError", "OverconstrainedError"].includes(error?.name)) break; // denied: asking again won't help
    }
  }
  console.warn("vchat: no camera", lastError);
  model.camera = { stream: null, problem: cameraProblem(lastError) };
}

// --- filters -------------------------------------------------------------------------------------------------

function currentFilters() {
  return { want: ui.want.value, countries: parseCountries(ui.countries.value).codes };
}

function filtersChanged() {
  return model.filtersSent !== JSON.stringify(currentFilters());
}

function savePrefs() {
  const prefs = { gender: ui.gender.value, want: ui.want.value, countries: ui.countries.value.slice(0, 400) };
  if (model.genderChosen) prefs.genderChosen = true;
  store(PREFS_KEY, JSON.stringify(prefs));
}

function loadPrefs() {
  let prefs;
  try {
    prefs = JSON.parse(stored(PREFS_KEY) ?? "{}");
  } catch {
    return;
  }
  if (["m", "f", "u"].includes(prefs?.gender)) ui.gender.value = prefs.gender;
  model.genderChosen = prefs?.genderChosen === true && ["m", "f", "u"].includes(prefs.gender);
  if (["any", "m", "f"].includes(prefs?.want)) ui.want.value = prefs.want;
  if (typeof prefs?.countries === "string") ui.countries.value = prefs.countries;
}

function renderCountries() {
  const { codes, ignored, tooMany } = parseCountries(ui.countries.value);
  const chips = codes.map((code) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.dataset.code = code;
    const name = countryName(code);
    button.textContent = `${flag(code)} ${name} ×`;
    button.setAttribute("aria-label", t("countries.remove", { country: name }));
    item.append(button);
    return item;
  });
  if (chips.length === 0) {
    const item = document.createElement("li");
    item.className = "anywhere";
    item.textContent = t("countries.anywhere");
    chips.push(item);
  }
  ui.countryChips.replaceChildren(...chips);
  const notes = [];
  if (ignored.length) notes.push(t("countries.ignored", { codes: ignored.join(", ") }));
  if (tooMany) notes.push(t("countries.too-many", { max: MAX_COUNTRIES }));
  ui.countriesNote.hidden = notes.length === 0;
  ui.countriesNote.textContent = notes.join(" ");
}

function fillCountryPicker() {
  const collator = new Intl.Collator(language());
  const entries = COUNTRY_CODES.map((code) => [code, countryName(code)]).sort((a, b) => collator.compare(a[1], b[1]));
  const first = new Option(t("countries.add"), "");
  ui.countryAdd.replaceChildren(first, ...entries.map(([code, name]) => new Option(`${flag(code)} ${name}`, code)));
  ui.countryAdd.value = "";
}

let filterTimer = null;

/** A filter changed: while only searching, the server gets the new filters at once; in a match, at Next. */
function filtersEdited() {
  savePrefs();
  renderCountries();
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    if (model.running && model.call === null && signaling?.phase === "open" && filtersChanged()) sendSearch();
  }, FILTER_DEBOUNCE_MS);
}

// --- searching and matches -----------------------------------------------------------------------------------

function sendSearch() {
  const filters = currentFilters();
  if (request("search", { type: "search", want: filters.want, countries: filters.countries }) !== null) {
    model.searching = true;
    model.filtersSent = JSON.stringify(filters);
  }
}

/** Search with the form's filters, after saying hello again first if the user's gender changed. */
function beginSearch() {
  if (!model.running || signaling?.phase !== "open") return; // the next welcome comes back here
  if (model.sessionGender !== ui.gender.value && model.call === null) {
    signaling.renew(); // gender is said in hello only, so a fresh session says the new one
    return;
  }
  sendSearch();
  render();
}

async function start() {
  if (model.running || model.banned) return;
  model.running = true;
  model.partnerLeftAt = 0;
  savePrefs();
  render();
  await cameraReady; // a match made before the camera answers would go without it
  beginSearch();
}

/** Leave the current partner and search again (with the form's filters). */
function next() {
  if (!model.running || signaling?.phase !== "open" || model.call === null) return;
  model.partnerLeftAt = 0;
  endCall();
  if (filtersChanged()) {
    // `next` searches with the old filters, and `search` is refused while matched: stop, then search.
    send({ type: "stop" });
    sendSearch();
  } else if (send({ type: "next" })) {
    model.searching = true;
  }
  render();
}

function stop() {
  model.running = false;
  model.partnerLeftAt = 0;
  model.searching = false;
  if (model.call) endCall();
  send({ type: "stop" }); // if the connection is down, the welcome that resumes it sends it
  render();
}

/** Capture the partner's current frame (drawn at once, encoded later) as a JPEG Blob, or null without one. */
function captureFrame() {
  const video = ui.remoteVideo;
  const { videoWidth: width, videoHeight: height } = video;
  if (!width || !height || video.readyState < 2) return Promise.resolve(null);
  const scale = Math.min(1, SNAPSHOT_MAX_WIDTH / width);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  try {
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  } catch (error) {
    console.warn("vchat: cannot capture the partner's frame", error);
    return Promise.resolve(null);
  }
  return encodeJpeg(canvas);
}

async function encodeJpeg(canvas) {
  for (const quality of SNAPSHOT_QUALITIES) {
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
    if (blob && blob.size <= SNAPSHOT_MAX_BYTES) return blob;
  }
  return null;
}

function startCall(match) {
  model.call = new Call({
    match,
    configuration: model.configuration,
    localStream: model.camera.stream,
    sendSignal: (payload) => {
      if (model.call?.matchId === match.match_id) send({ type: "signal", match_id: match.match_id, payload });
    },
    onChange: render,
  });
  model.searching = false;
  model.partnerLeftAt = 0;
  model.partnerReconnecting = false;
  clearChat();
  const country = match.partner?.country;
  if (typeof country === "string" && /^[A-Za-z]{2}$/.test(country)) {
    systemLine(t("chat.matched", { country: `${flag(country)} ${countryName(country.toUpperCase())}` }));
  } else {
    systemLine(t("chat.matched-unknown"));
  }
}

/**
 * End the current match on this side: keep its id and the partner's last frame for a report, close the
 * connection and stop the partner's tracks. The page shows no trace of the partner afterwards.
 */
function endCall() {
  const call = model.call;
  if (call === null) return;
  model.lastMatch = { matchId: call.matchId, frame: captureFrame(), endedAt: Date.now() };
  setTimeout(render, REPORT_WINDOW_MS + 50);
  call.close();
  model.call = null;
  model.partnerReconnecting = false;
  ui.remoteVideo.srcObject = null;
  hideTyping();
}

function isCurrent(message) {
  return model.call !== null && message.match_id === model.call.matchId;
}

// --- server messages -----------------------------------------------------------------------------------------

const handlers = {
  welcome(message) {
    model.sessionId = typeof message.session_id === "string" ? message.session_id : null;
    noteOnline(message);
    model.configuration = rtcConfiguration(message);
    model.partnerReconnecting = false;
    model.searching = false; // a lost connection cancels a search
    if (!message.resumed) {
      model.sessionGender = signaling.lastHello?.gender ?? "account"; // left out: the account's
      model.filtersSent = null;
      model.lastMatch = null; // a new session cannot report the old one's partner
    }
    const match = message.match && typeof message.match.match_id === "string" ? message.match : null;
    if (match && model.call?.matchId === match.match_id && model.running) {
      model.call.restartIce(); // this side's network changed; the offer side restarts ICE
    } else if (match) {
      // A match this page has no connection for (or the user stopped meanwhile): end it.
      if (model.call) endCall();
      if (model.running && !filtersChanged() && send({ type: "next" })) model.searching = true;
      else {
        send({ type: "stop" });
        beginSearch();
      }
    } else {
      if (model.call) {
        endCall(); // the partner left while this page was away
        model.partnerLeftAt = Date.now();
        setTimeout(render, PARTNER_LEFT_SHOWN_MS + 50);
        systemLine(t("chat.left"));
      }
      beginSearch();
    }
  },

  searching(message) {
    model.searching = true;
    noteOnline(message);
  },

  pong(message) {
    noteOnline(message); // the heartbeat's answer keeps the count fresh
  },

  idle() {
    model.searching = false;
  },

  matched(message) {
    if (typeof message.match_id !== "string") return;
    if (model.call) endCall();
    if (!model.running) return; // Stop crossed it: the server ends it when the `stop` arrives
    startCall(message);
  },

  signal(message) {
    if (isCurrent(message)) model.call.handleSignal(message.payload); // a late one for an ended match is dropped
  },

  chat(message) {
    if (!isCurrent(message) || typeof message.text !== "string") return;
    hideTyping();
    chatLine("partner", message.text);
  },

  typing(message) {
    if (isCurrent(message)) showTyping();
  },

  partner_left(message) {
    if (!isCurrent(message)) return;
    endCall();
    model.partnerLeftAt = Date.now();
    setTimeout(render, PARTNER_LEFT_SHOWN_MS + 50);
    systemLine(t("chat.left"));
    beginSearch(); // the server leaves this side idle; search again, with the form's filters
  },

  partner_reconnecting(message) {
    if (isCurrent(message)) model.partnerReconnecting = true;
  },

  partner_resumed(message) {
    if (!isCurrent(message)) return;
    model.partnerReconnecting = false;
    model.call.restartIce(); // the partner's network likely changed (only the offer side does it)
  },

  banned(message) {
    model.banned = {
      reason: typeof message.reason === "string" ? message.reason : null,
      until: typeof message.until === "number" ? message.until : null,
    };
    model.running = false;
    model.searching = false;
    if (model.call) endCall();
  },

  reported(message) {
    model.requests.delete(message.re);
    showNotice(t("report.sent"));
  },

  error(message) {
    const pending = model.requests.get(message.re);
    model.requests.delete(message.re);
    const code = typeof message.code === "string" ? message.code : "";
    if (code === "login_required" || code === "account_deleted") {
      // The connection closes for good (signaling.js); the page shows why.
      model.running = false;
      model.searching = false;
      if (model.call) endCall();
      if (code === "account_deleted") forgetAccount();
      return;
    }
    if (code === "kicked") {
      model.running = false;
      model.searching = false;
      if (model.call) endCall();
      showNotice(t("notice.kicked"));
      return;
    }
    if (pending?.kind === "chat") {
      const known = ["partner_reconnecting", "rate_limited", "too_long", "no_match"].includes(code);
      systemLine(t("chat.not-delivered", { reason: t(`chat.reason.${known ? code : "other"}`) }));
    } else if (pending?.kind === "report") {
      showNotice(t(code === "no_match" ? "report.too-late" : "report.failed"));
    } else if (code !== "no_match" && code !== "partner_reconnecting" && code !== "in_match") {
      // no_match and partner_reconnecting are expected after races with the partner; in_match after a
      // search crossed a `matched`.
      console.warn("vchat: the server refused a message:", code, message.message);
    }
  },
};

/** The online count that `welcome`, `searching` and `pong` carry. */
function noteOnline(message) {
  if (Number.isInteger(message.online)) model.online = message.online;
}

function onMessage(event) {
  const message = event.detail;
  const handler = Object.hasOwn(handlers, message.type) ? handlers[message.type] : null;
  if (handler) handler(message);
  render();
}

function onPhase(event) {
  if (event.detail === "closed" && signaling.closedReason === "banned") {
    model.running = false;
    if (model.call) endCall();
  }
  render();
}

// --- chat ----------------------------------------------------------------------------------------------------

function appendLine(className, who, text) {
  const line = document.createElement("p");
  line.className = `line ${className}`;
  if (who) {
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = `${who}: `;
    line.append(label);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  line.append(body);
  ui.chatLog.append(line);
  while (ui.chatLog.childElementCount > MAX_CHAT_LINES) ui.chatLog.firstElementChild.remove();
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

function chatLine(from, text) {
  appendLine(from === "me" ? "me" : "partner", t(from === "me" ? "chat.you" : "chat.partner"), text);
}

function systemLine(text) {
  appendLine("system", null, text);
}

function clearChat() {
  ui.chatLog.replaceChildren();
  hideTyping();
}

let typingTimer = null;

function showTyping() {
  ui.typing.hidden = false;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(hideTyping, TYPING_SHOWN_MS);
}

function hideTyping() {
  clearTimeout(typingTimer);
  ui.typing.hidden = true;
}

function sendChat(event) {
  event.preventDefault();
  const call = model.call;
  const text = ui.chatInput.value;
  if (call === null || !text.trim()) return;
  if (request("chat", { type: "chat", match_id: call.matchId, text }) === null) return;
  chatLine("me", text);
  ui.chatInput.value = "";
  model.typingSentAt = 0;
}

function typed() {
  const call = model.call;
  const now = Date.now();
  if (call === null || !ui.chatInput.value || now - model.typingSentAt < TYPING_SEND_EVERY_MS) return;
  if (send({ type: "typing", match_id: call.matchId })) model.typingSentAt = now;
}

// --- reports -------------------------------------------------------------------------------------------------

let reporting = null; // {matchId, frame} while the report dialog is open
let snapshotUrl = null;

function openReport() {
  const target = reportTarget();
  if (target === null) return;
  // The frame is taken on the click, so that what made the user press Report is in it.
  reporting = { matchId: target.matchId, frame: target.frame ?? captureFrame() };
  ui.reportReason.value = "";
  ui.reportComment.value = "";
  showSnapshot(null);
  ui.reportSnapshotNote.textContent = "";
  const shown = reporting;
  reporting.frame.then((blob) => {
    if (reporting === shown) showSnapshot(blob);
  });
  ui.reportDialog.showModal();
}

function showSnapshot(blob) {
  if (snapshotUrl) URL.revokeObjectURL(snapshotUrl);
  snapshotUrl = blob ? URL.createObjectURL(blob) : null;
  ui.reportSnapshot.hidden = snapshotUrl === null;
  if (snapshotUrl) ui.reportSnapshot.src = snapshotUrl;
  else ui.reportSnapshot.removeAttribute("src");
  ui.reportSnapshotNote.textContent = t(blob ? "report.snapshot" : "report.no-snapshot");
}

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function submitReport(event) {
  event.preventDefault();
  const target = reporting;
  const sending = event.submitter?.value === "send";
  if (sending && !ui.reportForm.reportValidity()) return;
  reporting = null;
  ui.reportDialog.close();
  showSnapshot(null);
  if (!sending || target === null) return;
  const message = { type: "report", match_id: target.matchId, reason: ui.reportReason.value };
  const comment = ui.reportComment.value.trim().slice(0, 500);
  if (comment) message.comment = comment;
  const blob = await target.frame;
  if (blob) message.snapshot = await base64(blob);
  showNotice(t("report.sending"));
  // `type` stays the first member: a report over 64 KiB must begin with {"type":"report",
  if (request("report", message) === null) showNotice(t("report.failed"));
}

function cancelReport() {
  reporting = null;
  showSnapshot(null);
}

// --- language ------------------------------------------------------------------------------------------------

/** The page's language: ?lang=, else the account's choice, else this browser's last choice, else its own. */
function chooseLanguage() {
  const asked = new URLSearchParams(location.search).get("lang");
  const chosen = accountPanel.account?.settings?.lang;
  return pickLanguage([asked, chosen, stored(LANG_KEY), ...(navigator.languages ?? [navigator.language])]);
}

function applyLanguage(lang) {
  setLanguage(lang);
  translatePage();
  ui.uiLang.value = language();
  fillCountryPicker();
  renderCountries();
  labelAccountGender();
  accountPanel.render();
  render();
}

// --- the account ---------------------------------------------------------------------------------------------

/**
 * Offer "I am: as my account says" when the logged-in account has a gender, and pick it unless the user
 * picked something else; a hello with it leaves `gender` out, so the server takes the account's.
 */
function offerAccountGender(account) {
  const gender = accountGender(account);
  let offered = ui.gender.querySelector('option[value="account"]');
  if (gender === null) {
    if (offered) {
      if (ui.gender.value === "account") ui.gender.value = "u";
      offered.remove();
    }
    return;
  }
  if (!offered) {
    offered = new Option("", "account");
    ui.gender.prepend(offered);
  }
  offered.dataset.gender = gender;
  labelAccountGender();
  if (!model.genderChosen) ui.gender.value = "account";
}

function labelAccountGender() {
  const offered = ui.gender.querySelector('option[value="account"]');
  if (offered) offered.textContent = t("gender.account", { gender: t(`gender.${offered.dataset.gender}`) });
}

/** The account's settings, known or changed: its language, and its filters as the page's. */
function accountSettingsChanged(settings) {
  if (language() !== chooseLanguage()) applyLanguage(chooseLanguage());
  if (["any", "m", "f"].includes(settings.want)) ui.want.value = settings.want;
  if (Array.isArray(settings.countries)) ui.countries.value = settings.countries.join(", ");
  filtersEdited();
}

/** The account is gone (deleted here, or elsewhere): the page is anonymous from now on. */
function forgetAccount() {
  accountPanel.forget();
  offerAccountGender(null);
  render();
}

function accountDeleted(purgeAt) {
  forgetAccount();
  const when = typeof purgeAt === "number" ? dateTime(purgeAt) : "";
  showNotice(t("account.deleted", { date: when }), { shownMs: LOGIN_ERROR_SHOWN_MS });
}

/** A login the server refused comes back as /#login-error=CODE: say why, and clean the address. */
function showLoginError() {
  const code = loginError(location.hash);
  if (code === null) return;
  showNotice(t(`login.error.${code}`), { shownMs: LOGIN_ERROR_SHOWN_MS, loginError: code });
  history.replaceState(null, "", location.pathname + location.search);
}

const accountReady = loadAccount()
  .then((status) => {
    offerAccountGender(status.account);
    accountPanel.set(status);
    render();
  })
  .catch((error) => console.warn("vchat: cannot show the account", error)); // the chat works without it

// --- wiring --------------------------------------------------------------------------------------------------

async function confirmAge() {
  ui.gate.hidden = true;
  ui.app.hidden = false;
  cameraReady = startCamera().then(render);
  render();
  await accountReady; // the hello leaves out the gender an account says
  signaling = new Signaling(signalingUrl(), () => {
    const hello = { client: clientFacts() };
    if (ui.gender.value !== "account") hello.gender = ui.gender.value;
    const lang = userLanguage();
    if (lang) hello.lang = lang;
    return hello;
  });
  signaling.addEventListener("message", onMessage);
  signaling.addEventListener("phase", onPhase);
  signaling.start();
  render();
}

function init() {
  ui.uiLang.replaceChildren(...Object.entries(LANGUAGE_NAMES).map(([code, name]) => new Option(name, code)));
  loadPrefs();
  applyLanguage(chooseLanguage());
  showLoginError();

  ui.ageConfirm.addEventListener("click", confirmAge, { once: true });
  ui.start.addEventListener("click", start);
  ui.next.addEventListener("click", next);
  ui.stop.addEventListener("click", stop);
  ui.report.addEventListener("click", openReport);
  ui.reportForm.addEventListener("submit", submitReport);
  ui.reportDialog.addEventListener("cancel", cancelReport);
  ui.filters.addEventListener("submit", (event) => event.preventDefault());
  ui.gender.addEventListener("change", () => {
    model.genderChosen = ui.gender.value !== "account";
    savePrefs();
  });
  ui.want.addEventListener("change", filtersEdited);
  ui.countries.addEventListener("input", filtersEdited);
  ui.countryAdd.addEventListener("change", () => {
    const code = ui.countryAdd.value;
    ui.countryAdd.value = "";
    if (!code) return;
    const { codes } = parseCountries(ui.countries.value);
    if (!codes.includes(code)) ui.countries.value = [...codes, code].join(", ");
    filtersEdited();
  });
  ui.countryChips.addEventListener("click", (event) => {
    const code = event.target.closest("button.chip")?.dataset.code;
    if (!code) return;
    ui.countries.value = parseCountries(ui.countries.value)
      .codes.filter((kept) => kept !== code)
      .join(", ");
    filtersEdited();
  });
  ui.chatForm.addEventListener("submit", sendChat);
  ui.chatInput.addEventListener("input", typed);
  ui.uiLang.addEventListener("change", () => {
    store(LANG_KEY, ui.uiLang.value);
    applyLanguage(ui.uiLang.value);
  });

  // Leaving the page ends the session at once (a clean close), so the partner is told right away.
  window.addEventListener("pagehide", () => {
    signaling?.close();
    model.call?.close();
    for (const track of model.camera.stream?.getTracks() ?? []) track.stop();
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) location.reload(); // back from the back-forward cache: its session has ended
  });

  // A small read-only surface for debugging and tests (docs/web-client.md).
  window.vchat = Object.freeze({
    pc: () => model.call?.pc ?? null,
    state: () => ui.status.dataset.state,
    matchId: () => model.call?.matchId ?? null,
    role: () => model.call?.role ?? null,
    partner: () => (model.call ? { ...model.call.partner } : null),
    sessionId: () => model.sessionId,
    phase: () => signaling?.phase ?? "new",
    online: () => model.online,
    language: () => language(),
    deviceId: () => DEVICE,
    localStream: () => model.camera.stream,
    account: () => (accountPanel.account ? structuredClone(accountPanel.account) : null),
  });
}

init();

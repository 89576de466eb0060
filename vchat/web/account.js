// The user's account on the page (docs/web-client.md#accounts): whether the server has logins at all, a login
// button per provider, and the account dialog (settings, data export, logout, deletion). It speaks to
// /auth/... and /api/me on the page's own server (docs/accounts.md); the login cookie itself is HttpOnly, so the
// page learns who is logged in only from GET /api/me.

import { parseCountries } from "./countries.js";
import { LANGUAGE_NAMES, languageName, t } from "./i18n.js";

const ANSWER_MS = 8_000; // a request the server does not answer within this counts as failed
const PROVIDER_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
const LANGUAGE_CODE = /^[a-z]{2,3}$/;
// The languages offered for translating the chat into; an account's other choice is kept and shown too.
const TRANSLATION_TARGETS = ["ar", "de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "nl", "pl", "pt", "ro", "ru",
  "sv", "th", "tr", "uk", "vi", "zh"];
const LOGIN_ERRORS = new Set(["state", "cancelled", "provider", "under_18", "deleted"]);
const GENDERS = new Set(["m", "f"]);

/** A JSON request to the page's own server: {status, body}; body is null when the answer is not JSON. */
async function requestJson(method, url, body) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
    signal: AbortSignal.timeout(ANSWER_MS),
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  let json = null;
  if ((response.headers.get("Content-Type") ?? "").startsWith("application/json")) {
    try {
      json = await response.json();
    } catch {
      json = null;
    }
  }
  return { status: response.status, body: json };
}

/** Why the server refused a request, as it said it (vchat.jsonapi's errors), else a general sentence. */
function refusal(answer) {
  const message = answer?.body?.error?.message;
  return typeof message === "string" && message ? message : t("account.failed");
}

function isProvider(value) {
  return typeof value?.name === "string" && PROVIDER_NAME.test(value.name) && typeof value.label === "string";
}

function isAccount(value) {
  return (
    typeof value?.id === "string" &&
    Array.isArray(value.providers) &&
    value.settings !== null &&
    typeof value.settings === "object"
  );
}

/**
 * What the server says of logins: `{state, account, providers}`, where state is `none` (the server has no
 * logins: both routes answer 404), `anonymous`, `logged-in` or `unknown` (it did not answer).
 */
export async function loadAccount() {
  let me;
  let listed;
  try {
    [me, listed] = await Promise.all([requestJson("GET", "/api/me"), requestJson("GET", "/auth/providers")]);
  } catch (error) {
    console.warn("vchat: cannot read the login state", error);
    return { state: "unknown", account: null, providers: [] };
  }
  if (me.status === 404 && listed.status === 404) return { state: "none", account: null, providers: [] };
  const providers = listed.status === 200 && Array.isArray(listed.body) ? listed.body.filter(isProvider) : [];
  if (me.status === 200 && isAccount(me.body)) return { state: "logged-in", account: me.body, providers };
  if (me.status === 401 && providers.length > 0) return { state: "anonymous", account: null, providers };
  return { state: "unknown", account: null, providers };
}

/** The code of a refused login from the address's fragment (`#login-error=CODE`), or null. */
export function loginError(hash) {
  const match = /^#login-error=([a-z_]{1,32})$/.exec(hash);
  if (match === null) return null;
  return LOGIN_ERRORS.has(match[1]) ? match[1] : "other";
}

/** The account's gender when its provider gave one ("m" or "f"), else null. */
export function accountGender(account) {
  return GENDERS.has(account?.gender) ? account.gender : null;
}

function option(value, text) {
  return new Option(text, value);
}

function showStatus(element, state, text) {
  element.hidden = state === null;
  element.dataset.state = state ?? "";
  element.textContent = text;
}

/**
 * The account area in the page's header and the account dialog. `onSettings(settings)` is told of the
 * account's settings when they are first known and after each change; `onDeleted()` after the account is
 * deleted.
 */
export class AccountPanel {
  constructor(elements, { onSettings, onDeleted }) {
    this.ui = elements;
    this.onSettings = onSettings;
    this.onDeleted = onDeleted;
    this.status = { state: "unknown", account: null, providers: [] };
    const ui = elements;
    ui.open.addEventListener("click", () => this.openDialog());
    ui.close.addEventListener("click", () => ui.dialog.close());
    ui.settings.addEventListener("submit", (event) => this.saveSettings(event));
    ui.translate.addEventListener("change", () => {
      ui.translateTo.disabled = !ui.translate.checked;
    });
    ui.logout.addEventListener("click", () => this.logOut());
    ui.delete.addEventListener("click", () => {
      ui.deleteBox.hidden = false;
      ui.deleteUnderstand.checked = false;
      ui.deleteConfirm.disabled = true;
      ui.deleteUnderstand.focus();
    });
    ui.deleteUnderstand.addEventListener("change", () => {
      ui.deleteConfirm.disabled = !ui.deleteUnderstand.checked;
    });
    ui.deleteConfirm.addEventListener("click", () => this.deleteAccount());
  }

  /** The logged-in account as GET /api/me gave it (with the settings saved since), or null. */
  get account() {
    return this.status.account;
  }

  /** Show `status`, from `loadAccount()`. */
  set(status) {
    this.status = status;
    this.render();
    if (status.account) this.onSettings(status.account.settings);
  }

  /** The account is gone (deleted, here or elsewhere): show the login buttons again. */
  forget() {
    if (this.ui.dialog.open) this.ui.dialog.close();
    this.status = { ...this.status, state: this.status.providers.length ? "anonymous" : "unknown", account: null };
    this.render();
  }

  /** Bring the header's area (and an open dialog's words) in line with the state and the language. */
  render() {
    const { state, providers } = this.status;
    const ui = this.ui;
    ui.area.dataset.state = state;
    ui.area.hidden = state === "none";
    ui.logins.hidden = state !== "anonymous";
    ui.logins.replaceChildren(
      ...providers.map((provider) => {
        const link = document.createElement("a");
        link.className = "login";
        link.href = `/auth/${provider.name}/start`;
        link.dataset.provider = provider.name;
        link.dataset.testid = `login-${provider.name}`;
        link.textContent = t("account.login-with", { provider: provider.label });
        return link;
      }),
    );
    ui.open.hidden = state !== "logged-in";
    this.fillLanguages();
  }

  fillLanguages() {
    const { lang, translateTo } = this.ui;
    const settings = this.status.account?.settings ?? {};
    lang.replaceChildren(
      option("", t("settings.lang.browser")),
      ...Object.entries(LANGUAGE_NAMES).map(([code, name]) => option(code, name)),
    );
    const targets = [...TRANSLATION_TARGETS];
    const chosen = settings.translate_to;
    if (typeof chosen === "string" && LANGUAGE_CODE.test(chosen) && !targets.includes(chosen)) targets.push(chosen);
    const named = targets.map((code) => [code, languageName(code)]).sort((a, b) => a[1].localeCompare(b[1]));
    translateTo.replaceChildren(...named.map(([code, name]) => option(code, name)));
    lang.value = typeof settings.lang === "string" && Object.hasOwn(LANGUAGE_NAMES, settings.lang) ? settings.lang : "";
    translateTo.value = typeof chosen === "string" && targets.includes(chosen) ? chosen : "en";
  }

  openDialog() {
    const account = this.status.account;
    if (account === null) return;
    const ui = this.ui;
    const labels = new Map(this.status.providers.map((provider) => [provider.name, provider.label]));
    ui.id.textContent = account.id;
    ui.providers.textContent = account.providers.map((name) => labels.get(name) ?? String(name)).join(", ");
    const gender = accountGender(account);
    ui.gender.textContent = gender ? t(`gender.${gender}`) : t("account.gender.none");
    const settings = account.settings;
    this.fillLanguages();
    ui.translate.checked = settings.translate === true;
    ui.translateTo.disabled = !ui.translate.checked;
    ui.want.value = ["any", "m", "f"].includes(settings.want) ? settings.want : "any";
    ui.countries.value = Array.isArray(settings.countries) ? settings.countries.join(", ") : "";
    showStatus(ui.settingsStatus, null, "");
    showStatus(ui.actionStatus, null, "");
    const grace = Number.isFinite(account.deletion_grace_s) ? account.deletion_grace_s : 30 * 86400;
    ui.deleteText.textContent = t("account.delete.text", { days: Math.ceil(grace / 86400) });
    ui.deleteBox.hidden = true;
    ui.dialog.showModal();
  }

  async saveSettings(event) {
    event.preventDefault();
    const ui = this.ui;
    const { codes, ignored } = parseCountries(ui.countries.value);
    if (ignored.length) {
      showStatus(ui.settingsStatus, "error", t("countries.ignored", { codes: ignored.join(", ") }));
      return;
    }
    const changes = {
      lang: ui.lang.value || null,
      translate: ui.translate.checked,
      translate_to: ui.translateTo.value || null,
      want: ui.want.value,
      countries: codes,
    };
    showStatus(ui.settingsStatus, "saving", t("settings.saving"));
    let answer;
    try {
      answer = await requestJson("PATCH", "/api/me/settings", changes);
    } catch {
      answer = null;
    }
    const settings = answer?.status === 200 ? answer.body?.settings : null;
    if (typeof settings !== "object" || settings === null || !Array.isArray(settings.countries)) {
      showStatus(ui.settingsStatus, "error", refusal(answer));
      return;
    }
    if (this.status.account === null) return; // deleted or logged out meanwhile
    this.status.account.settings = settings;
    ui.countries.value = settings.countries.join(", ");
    this.onSettings(settings);
    showStatus(ui.settingsStatus, "saved", t("settings.saved"));
  }

  async logOut() {
    showStatus(this.ui.actionStatus, null, "");
    let answer;
    try {
      answer = await requestJson("POST", "/auth/logout");
    } catch {
      answer = null;
    }
    if (answer?.status !== 204) {
      showStatus(this.ui.actionStatus, "error", refusal(answer));
      return;
    }
    // The WebSocket session was opened with the login: a fresh page opens a fresh, anonymous one.
    location.replace(location.pathname + location.search);
  }

  async deleteAccount() {
    const ui = this.ui;
    ui.deleteConfirm.disabled = true;
    showStatus(ui.actionStatus, null, "");
    let answer;
    try {
      answer = await requestJson("DELETE", "/api/me", { confirm: true });
    } catch {
      answer = null;
    }
    if (answer?.status !== 200 || answer.body?.deleted !== true) {
      showStatus(ui.actionStatus, "error", refusal(answer));
      ui.deleteConfirm.disabled = !ui.deleteUnderstand.checked;
      return;
    }
    ui.dialog.close();
    this.onDeleted(answer.body.purge_at);
  }
}

// The moderator page: signs in with the admin token, then polls the admin API and keeps the lists in step.
// Every value from the server reaches the page through textContent or an attribute, never as markup.
"use strict";

(() => {
  const REFRESH_MS = 3000;
  const NOTICE_MS = 8000;
  const LIST_LIMIT = 200;
  const TOKEN_KEY = "vchat-admin-token";
  const DURATIONS = [
    ["3600", "1 hour"],
    ["86400", "1 day"],
    ["604800", "7 days"],
    ["2592000", "30 days"],
    ["", "Permanent"],
  ];
  const DEFAULT_DURATION = "86400";
  const TARGET_LABELS = { user_id: "User", ip: "Address", device_id: "Device" };

  const $ = (id) => document.getElementById(id);
  const view = {
    login: $("login-view"),
    form: $("login-form"),
    token: $("token"),
    remember: $("remember"),
    authError: $("auth-error"),
    dashboard: $("dashboard"),
    logout: $("logout"),
    offline: $("offline"),
    notice: $("notice"),
    updated: $("updated"),
    reports: $("reports"),
    flags: $("flags"),
    bans: $("bans"),
  };

  class Unauthorized extends Error {}
  class Unreachable extends Error {}
  class Refused extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  let token = null; // the token requests send: a candidate while signing in
  let signedIn = false; // the server has taken the token
  let session = 0; // bumped at each sign-in and sign-out: answers meant for an earlier one are dropped
  let changes = 0; // bumped by each action: a refresh that began before it is stale
  let refreshing = false;
  let refreshAgain = false;
  let timer = null;
  let noticeTimer = null;

  // --- the token: sessionStorage (this tab, until it closes), localStorage only if "remember" is ticked ----

  function storage(kind) {
    try {
      return window[kind];
    } catch {
      return null; // storage disabled: the token lives in this page only
    }
  }

  function savedToken() {
    for (const kind of ["sessionStorage", "localStorage"]) {
      const value = storage(kind)?.getItem(TOKEN_KEY);
      if (value) return value;
    }
    return null;
  }

  function saveToken(value, remember) {
    storage("sessionStorage")?.setItem(TOKEN_KEY, value);
    if (remember) storage("localStorage")?.setItem(TOKEN_KEY, value);
    else storage("localStorage")?.removeItem(TOKEN_KEY);
  }

  function forgetToken() {
    storage("sessionStorage")?.removeItem(TOKEN_KEY);
    storage("localStorage")?.removeItem(TOKEN_KEY);
  }

  // --- the API ---------------------------------------------------------------------------------------------

  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new Unreachable("the server cannot be reached");
    }
    setOffline(false);
    if (response.status === 401) throw new Unauthorized("the server refused the token");
    if (!response.ok) {
      let code = `http_${response.status}`;
      let message = `the server answered ${response.status}`;
      try {
        const answer = await response.json();
        if (answer && answer.error) ({ code, message } = answer.error);
      } catch {
        // not JSON: keep the status line
      }
      throw new Refused(response.status, code, message);
    }
    return response;
  }

  async function callJson(method, path, body) {
    const response = await call(method, path, body);
    try {
      return await response.json();
    } catch {
      throw new Unreachable("the answer was cut off");
    }
  }

  const quote = encodeURIComponent;

  // --- states: signed out, signed in, offline --------------------------------------------------------------

  function setOffline(offline) {
    if (offline === !view.offline.hidden) return;
    view.offline.textContent = signedIn
      ? "Server unreachable: retrying every few seconds. What is shown may be out of date."
      : "Server unreachable: check that vchat is running, then sign in again.";
    view.offline.hidden = !offline;
    document.body.classList.toggle("is-offline", offline);
  }

  function notify(message) {
    view.notice.textContent = message;
    view.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      view.notice.hidden = true;
    }, NOTICE_MS);
  }

  function showAuthError(message) {
    view.authError.textContent = message;
    view.authError.hidden = false;
  }

  function showDashboard() {
    view.login.hidden = true;
    view.authError.hidden = true;
    view.dashboard.hidden = false;
    view.logout.hidden = false;
  }

  function signOut(message) {
    session += 1;
    token = null;
    signedIn = false;
    forgetToken();
    clearTimeout(timer);
    for (const list of [view.reports, view.flags, view.bans]) syncList(list, [], () => "", null);
    view.dashboard.hidden = true;
    view.logout.hidden = true;
    view.login.hidden = false;
    view.updated.textContent = "";
    setOffline(false);
    view.token.value = "";
    if (message) showAuthError(message);
    else view.authError.hidden = true;
    view.token.focus();
  }

  async function signIn(candidate, remember) {
    const mine = ++session;
    token = candidate;
    view.authError.hidden = true;
    view.form.setAttribute("aria-busy", "true");
    try {
      const stats = await callJson("GET", "/api/stats");
      if (mine !== session) return;
      signedIn = true;
      saveToken(candidate, remember);
      view.token.value = "";
      showDashboard();
      renderStats(stats);
      refresh();
    } catch (error) {
      if (mine !== session) return;
      token = null;
      if (error instanceof Unauthorized) {
        showAuthError("Wrong token: the server refused it. Copy it again from DATA_DIR/admin-token.");
        view.token.select();
      } else if (error instanceof Unreachable) {
        setOffline(true);
      } else {
        showAuthError(`Cannot sign in: ${error.message}`);
      }
    } finally {
      view.form.removeAttribute("aria-busy");
    }
  }

  // A failed refresh or action: offline, signed out, or a message.
  function failed(error, doing) {
    if (error instanceof Unreachable) setOffline(true);
    else if (error instanceof Unauthorized)
      signOut("The server no longer accepts this token (it may have changed). Paste the current one.");
    else notify(`${doing}: ${error.message}`);
  }

  // --- refreshing ------------------------------------------------------------------------------------------

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    if (!signedIn) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    clearTimeout(timer);
    if (document.hidden) return schedule(); // a background tab need not poll; it refreshes when shown
    const mine = session;
    const since = changes;
    refreshing = true;
    refreshAgain = false;
    try {
      const [stats, reports, flags, bans] = await Promise.all([
        callJson("GET", "/api/stats"),
        callJson("GET", `/api/reports?status=open&limit=${LIST_LIMIT}`),
        callJson("GET", `/api/flags?status=open&limit=${LIST_LIMIT}`),
        callJson("GET", `/api/bans?status=active&limit=${LIST_LIMIT}`),
      ]);
      if (mine !== session) return;
      if (since !== changes) {
        refreshAgain = true; // an action landed meanwhile: these lists may still show what it removed
        return;
      }
      renderStats(stats);
      renderReports(reports.items);
      renderFlags(flags.items);
      renderBans(bans.items);
      renderTimes();
      view.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (mine === session) failed(error, "Refresh failed");
    } finally {
      refreshing = false;
      if (signedIn) {
        if (refreshAgain || mine !== session) refresh(); // mine !== session: signed in again meanwhile
        else schedule();
      }
    }
  }

  // --- rendering -------------------------------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    return add(node, ...children);
  }

  // Appends `children` to `node`, skipping the absent ones; strings become text nodes.
  function add(node, ...children) {
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function setText(id, value) {
    $(id).textContent = value === undefined || value === null ? "–" : String(value);
  }

  function renderStats(stats) {
    const sessions = stats.sessions || {};
    setText("count-online", sessions.online);
    setText("count-searching", sessions.searching);
    setText("count-matched", sessions.matched);
    setText("count-bans", stats.bans_active);
    renderCluster(stats.cluster || {});
    const stun = $("count-stun");
    // "off": this process has no STUN responder (another one serves its clients); "down": it has one, stopped.
    const state = !stats.stun || !stats.stun.enabled ? "off" : stats.stun.running ? "up" : "down";
    stun.textContent = state;
    stun.className = state;
  }

  // In cluster mode, the online count is this node's: the cluster's total and its nodes are shown under it.
  function renderCluster(cluster) {
    const enabled = Boolean(cluster.enabled);
    $("online-label").textContent = enabled ? "Online here" : "Online";
    const whole = $("count-cluster");
    whole.hidden = !enabled;
    if (!enabled) return;
    const online = cluster.totals && cluster.totals.online;
    const nodes = (cluster.nodes || []).length;
    const total = typeof online === "number" ? online.toLocaleString() : "–";
    whole.textContent =
      `${total} on ${nodes} ${nodes === 1 ? "node" : "nodes"}` + (cluster.redis_up ? "" : " (Redis unreachable)");
  }

  // Keeps `container`'s children in step with `items` (in order), keyed by id: existing nodes are kept as
  // they are (an open select keeps its choice), new ones are made, and gone ones are disposed of and removed.
  function syncList(container, items, keyOf, make) {
    const wanted = new Set(items.map(keyOf));
    for (const node of Array.from(container.children)) {
      if (!wanted.has(node.dataset.key)) {
        dispose(node);
        node.remove();
      }
    }
    const present = new Map(Array.from(container.children, (node) => [node.dataset.key, node]));
    items.forEach((item, index) => {
      const key = keyOf(item);
      let node = present.get(key);
      if (!node) {
        node = make(item);
        node.dataset.key = key;
      }
      const at = container.children[index] || null;
      if (at !== node) container.insertBefore(node, at);
    });
    const empty = $(`${container.id}-empty`);
    if (empty) empty.hidden = items.length > 0;
  }

  function dispose(node) {
    for (const img of node.querySelectorAll("img[src^='blob:']")) URL.revokeObjectURL(img.src);
    if (lazy) for (const img of node.querySelectorAll("img")) lazy.unobserve(img);
  }

  function removeItem(node) {
    changes += 1;
    const container = node.parentNode;
    dispose(node);
    node.remove();
    if (container) {
      const empty = $(`${container.id}-empty`);
      if (empty) empty.hidden = container.children.length > 0;
    }
    if (container === view.reports) setText("count-reports", view.reports.children.length);
  }

  function label(value) {
    const text = String(value || "").replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const UNITS = [
    ["year", 31536000],
    ["day", 86400], // no weeks or months: "in 7 days" and "in 30 days" say what the ban durations are
    ["hour", 3600],
    ["minute", 60],
  ];

  function ago(seconds) {
    const delta = seconds - Date.now() / 1000;
    for (const [unit, size] of UNITS) {
      if (Math.abs(delta) >= size) return relative.format(Math.round(delta / size), unit);
    }
    return Math.abs(delta) < 10 ? "just now" : relative.format(Math.round(delta), "second");
  }

  function when(seconds) {
    const date = new Date(seconds * 1000);
    return el("time", {
      datetime: date.toISOString(),
      title: date.toLocaleString(),
      "data-at": seconds,
      text: ago(seconds),
    });
  }

  function renderTimes() {
    for (const node of document.querySelectorAll("time[data-at]")) {
      node.textContent = ago(Number(node.dataset.at));
    }
  }

  function facts(pairs) {
    const list = el("dl", { className: "facts" });
    for (const [name, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      const shown = typeof value === "object" ? JSON.stringify(value) : String(value);
      list.append(el("div", {}, el("dt", { text: name }), el("dd", { text: shown })));
    }
    return list;
  }

  function durationSelect(id) {
    const select = el("select", { id, "data-testid": "ban-duration" });
    for (const [value, text] of DURATIONS) {
      select.append(el("option", { value, selected: value === DEFAULT_DURATION, text }));
    }
    return select;
  }

  function durationOf(select) {
    return select.value === "" ? null : Number(select.value);
  }

  // The Ban-for select and the Ban and Dismiss buttons of a card; `act(action, duration_s)` does the work.
  function actions(prefix, id, subject, act) {
    const selectId = `${prefix}-${id}-duration`;
    const select = durationSelect(selectId);
    const ban = el("button", { type: "button", className: "danger", "data-testid": "ban", text: "Ban" });
    const dismiss = el("button", { type: "button", "data-testid": "dismiss", text: "Dismiss" });
    ban.setAttribute("aria-label", `Ban ${subject}`);
    dismiss.setAttribute("aria-label", `Dismiss, no ban for ${subject}`);
    const run = async (action) => {
      for (const button of [ban, dismiss, select]) button.disabled = true;
      try {
        await act(action, durationOf(select));
      } finally {
        for (const button of [ban, dismiss, select]) button.disabled = false;
      }
    };
    ban.addEventListener("click", () => run("ban"));
    dismiss.addEventListener("click", () => run("dismiss"));
    return el(
      "div",
      { className: "actions" },
      el("label", { for: selectId, text: "Ban for" }),
      select,
      ban,
      dismiss,
    );
  }

  function cardError(card) {
    return card.querySelector(".card-error");
  }

  // --- snapshots: fetched with the token, shown through a blob: URL, loaded when the card comes into view --

  const lazy =
    "IntersectionObserver" in window
      ? new IntersectionObserver(
          (entries) => {
            for (const entry of entries) {
              if (!entry.isIntersecting) continue;
              lazy.unobserve(entry.target);
              loadSnapshot(entry.target);
            }
          },
          { rootMargin: "300px" },
        )
      : null;

  function snapshot(path, alt, testid) {
    const img = el("img", { alt, "data-src": path, "data-testid": testid, decoding: "async" });
    if (lazy) lazy.observe(img);
    else loadSnapshot(img);
    return el("figure", { className: "snapshot" }, img);
  }

  async function loadSnapshot(img) {
    const mine = session;
    try {
      const blob = await (await call("GET", img.dataset.src)).blob();
      if (mine !== session || !img.isConnected) return;
      img.src = URL.createObjectURL(blob);
    } catch (error) {
      if (mine !== session) return;
      const figure = img.parentNode;
      if (!figure) return;
      if (error instanceof Refused && error.status === 404) {
        const gone = "The snapshot is gone (expired or deleted).";
        figure.replaceChildren(el("p", { className: "muted", text: gone }));
      } else {
        figure.replaceChildren(el("p", { className: "muted", text: "The snapshot could not be loaded." }));
        failed(error, "Loading a snapshot failed");
      }
    }
  }

  // --- reports ---------------------------------------------------------------------------------------------

  function renderReports(items) {
    const newest = [...items].sort((a, b) => b.created_at - a.created_at);
    syncList(view.reports, newest, (report) => report.id, reportCard);
    const shown = items.length >= LIST_LIMIT ? `${LIST_LIMIT}+` : items.length;
    setText("count-reports", shown);
  }

  function reportCard(report) {
    const reported = report.reported || {};
    const reporter = report.reporter || {};
    const headingId = `report-${report.id}-title`;
    const card = el("article", {
      className: "card",
      "data-testid": "report",
      "data-report-id": report.id,
      "aria-labelledby": headingId,
    });
    add(
      card,
      el(
        "header",
        {},
        el("h3", { id: headingId, text: label(report.reason) }),
        when(report.created_at),
      ),
      report.has_snapshot
        ? snapshot(
            `/api/reports/${quote(report.id)}/snapshot`,
            "Snapshot sent with the report",
            "report-snapshot",
          )
        : el("p", { className: "muted no-snapshot", text: "No snapshot" }),
      report.comment ? el("blockquote", { className: "comment", text: report.comment }) : null,
      facts([
        ["Reported user", reported.user_id],
        ["Device", reported.device_id],
        ["Address", reported.ip],
        ["Client", reported.client && Object.keys(reported.client).length ? reported.client : null],
        ["Reported by", reporter.user_id],
        ["Reporter's device", reporter.device_id],
      ]),
      actions("report", report.id, `reported user ${reported.user_id || ""}`, (action, duration) =>
        resolve(card, `/api/reports/${quote(report.id)}/resolve`, action, duration, "report"),
      ),
      el("p", { className: "card-error", role: "alert", hidden: true }),
    );
    return card;
  }

  // Resolves a report or a flag; on success (or if someone else already did) the card goes.
  async function resolve(card, path, action, duration, what) {
    const body = action === "ban" ? { action, duration_s: duration } : { action };
    const error = cardError(card);
    error.hidden = true;
    try {
      await callJson("POST", path, body);
      removeItem(card);
      refresh();
    } catch (failure) {
      if (failure instanceof Refused && failure.code === "already_resolved") {
        removeItem(card);
        notify(`That ${what} was already resolved, perhaps by another moderator.`);
        refresh();
      } else if (failure instanceof Refused) {
        error.textContent = `Not done: ${failure.message}`;
        error.hidden = false;
      } else {
        failed(failure, `Resolving the ${what} failed`);
      }
    }
  }

  // --- flags -----------------------------------------------------------------------------------------------

  function renderFlags(items) {
    const newest = [...items].sort((a, b) => b.created_at - a.created_at);
    syncList(view.flags, newest, (flag) => flag.id, flagCard);
  }

  function flagCard(flag) {
    const headingId = `flag-${flag.id}-title`;
    const card = el("article", {
      className: "card",
      "data-testid": "flag",
      "data-flag-id": flag.id,
      "aria-labelledby": headingId,
    });
    add(
      card,
      el("header", {}, el("h3", { id: headingId }, el("code", { text: flag.rule })), when(flag.created_at)),
      facts([["User", flag.user_id], ["Device", flag.device_id], ...Object.entries(flag.summary || {})]),
      actions("flag", flag.id, `flagged user ${flag.user_id || ""}`, (action, duration) =>
        resolve(card, `/api/flags/${quote(flag.id)}/resolve`, action, duration, "flag"),
      ),
      el("p", { className: "card-error", role: "alert", hidden: true }),
    );
    return card;
  }

  // --- bans ------------------------------------------------------------------------------------------------

  function renderBans(items) {
    const newest = [...items].sort((a, b) => b.created_at - a.created_at);
    syncList(view.bans, newest, (ban) => ban.id, banRow);
  }

  function banRow(ban) {
    const target = ban.target || {};
    const row = el("li", { className: "ban", "data-testid": "ban-row", "data-ban-id": ban.id });
    const until =
      ban.ends_at === null || ban.ends_at === undefined
        ? el("span", { className: "permanent", text: "permanent" })
        : el("span", {}, "ends ", when(ban.ends_at));
    const lift = el("button", { type: "button", "data-testid": "lift", text: "Lift" });
    const kind = TARGET_LABELS[target.kind] || target.kind;
    lift.setAttribute("aria-label", `Lift the ban on ${kind} ${target.value}`);
    lift.addEventListener("click", () => liftBan(row, ban.id, lift));
    add(
      row,
      el(
        "div",
        { className: "target" },
        el("span", { className: "kind", text: TARGET_LABELS[target.kind] || label(target.kind) }),
        el("code", { text: target.value }),
      ),
      el(
        "div",
        { className: "meta" },
        el("span", { className: "category", text: label(ban.category) }),
        until,
        el("span", { text: `by ${ban.source}` }),
        el("span", {}, "set ", when(ban.created_at)),
      ),
      ban.reason ? el("p", { className: "reason", text: ban.reason }) : null,
      evidence(ban),
      lift,
    );
    return row;
  }

  // A chat-abuse ban's messages and a ban's snapshot, behind a disclosure (the snapshot loads when opened).
  function evidence(ban) {
    const messages = ban.messages || [];
    if (!ban.has_snapshot && messages.length === 0) return null;
    const details = el("details", { className: "evidence" }, el("summary", { text: "Evidence" }));
    if (messages.length) {
      const list = el("ol", { className: "messages" });
      for (const message of messages) list.append(el("li", { text: message }));
      details.append(list);
    }
    if (ban.has_snapshot) {
      details.addEventListener(
        "toggle",
        () => {
          const path = `/api/bans/${quote(ban.id)}/snapshot`;
          details.append(snapshot(path, "Snapshot kept with the ban", "ban-snapshot"));
        },
        { once: true },
      );
    }
    return details;
  }

  async function liftBan(row, id, button) {
    button.disabled = true;
    try {
      await callJson("DELETE", `/api/bans/${quote(id)}`);
      removeItem(row);
      refresh();
    } catch (error) {
      button.disabled = false;
      if (error instanceof Refused && error.status === 404) {
        removeItem(row);
        refresh();
      } else {
        failed(error, "Lifting the ban failed");
      }
    }
  }

  // --- start -----------------------------------------------------------------------------------------------

  view.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = view.token.value.trim();
    if (!candidate) {
      showAuthError("Paste the admin token first.");
      return;
    }
    signIn(candidate, view.remember.checked);
  });
  view.logout.addEventListener("click", () => signOut(null));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });

  const saved = savedToken();
  if (saved) {
    token = saved;
    signedIn = true;
    showDashboard();
    refresh(); // a refused token signs out with a message; an unreachable server shows the banner
  } else {
    view.token.focus();
  }
})();

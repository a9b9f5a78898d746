// The chatlane dashboard. Plain JS, no build step. Every piece of data comes from the /v1 JSON API
// with `Authorization: Bearer <key>` (the key is asked for on the first 401 and kept in
// sessionStorage, so it lives only as long as the tab). An admin key also names the tenant it acts
// for (X-Chatlane-Tenant), asked for with the key and kept the same way. Everything shown is set
// with textContent, never innerHTML: history and replies are user and model text.
"use strict";

const KEY_STORE = "chatlane.key";
const TENANT_STORE = "chatlane.tenant";
const TENANT_HEADER = "X-Chatlane-Tenant";
// The fleet's two calls SCAN the turn records (O(turns kept)): polled less often than a session.
const POLL_MS = { fleet: 5000, session: 2000 };
const RATE_WINDOW_MS = 60000;
const HISTORY_PAGE = 200;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

const state = {
  view: null,
  needKey: false,
  sessionId: null,
  counterSamples: [], // [{t, counters}] over the last RATE_WINDOW_MS, for per-minute rates
  stream: null, // {turnId, text, lastId, ended, status, controller}
  pollTimer: null,
};

// -- the API -----------------------------------------------------------------------------------

function authHeaders(extra) {
  const headers = { Accept: "application/json", ...extra };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const tenant = sessionStorage.getItem(TENANT_STORE);
  if (key && tenant) headers[TENANT_HEADER] = tenant;
  return headers;
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  if (res.status === 401) {
    askKey(sessionStorage.getItem(KEY_STORE) ? "That key was refused. Enter another one." : null);
    throw new ApiError(401, "unauthorized", "this API wants a key");
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new ApiError(res.status, data && data.code, data && data.message);
    // An admin key without a tenant (422), or a tenant key naming another tenant (403): the auth
    // guard refused the tenant, not the request. Ask again, saying why.
    if ((res.status === 422 || res.status === 403) && err.message.includes(TENANT_HEADER)) {
      askKey(`${err.message}.`);
      throw new ApiError(401, err.code, err.message);
    }
    throw err;
  }
  return data;
}

function showError(err) {
  if (err instanceof ApiError && err.status === 401) return; // the key form says it
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

// -- the key ------------------------------------------------------------------------------------

function askKey(why) {
  state.needKey = true;
  if (why) $("key-prompt").textContent = why;
  $("key-form").hidden = false;
  $("key-input").focus();
  renderKeyState();
}

function renderKeyState() {
  const has = Boolean(sessionStorage.getItem(KEY_STORE));
  const tenant = sessionStorage.getItem(TENANT_STORE);
  $("key-state").textContent = has ? `key set${tenant ? ` · tenant ${tenant}` : ""}` : state.needKey ? "key needed" : "no key";
  $("forget-key").hidden = !has;
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
  const tenant = $("tenant-input").value.trim();
  if (tenant) sessionStorage.setItem(TENANT_STORE, tenant);
  else sessionStorage.removeItem(TENANT_STORE);
  $("key-input").value = "";
  $("key-form").hidden = true;
  state.needKey = false;
  renderKeyState();
  stopStream(); // a stream refused for want of a key is followed again from the start
  route();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  sessionStorage.removeItem(TENANT_STORE);
  stopStream();
  renderKeyState();
  route();
});

// -- small DOM helpers --------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function badge(st) {
  return el("span", { className: `badge ${st}`, textContent: st });
}

function short(id) {
  return id ? `${id.slice(0, 8)}…` : "";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

// -- routing: #/fleet, #/session/<id> ----------------------------------------------------------

function route() {
  const [, view, ...rest] = (location.hash || "#/fleet").split("/");
  state.view = view === "session" ? "session" : "fleet";
  $("fleet-view").hidden = state.view !== "fleet";
  $("session-view").hidden = state.view !== "session";
  $("nav-fleet").classList.toggle("active", state.view === "fleet");
  $("nav-session").classList.toggle("active", state.view === "session");
  if (state.view === "session") {
    const sid = decodeURIComponent(rest.join("/"));
    if (sid !== state.sessionId) openSession(sid || null);
  } else {
    stopStream();
    state.sessionId = null;
  }
  poll();
}

window.addEventListener("hashchange", route);

function poll() {
  clearTimeout(state.pollTimer);
  const refresh = state.view === "fleet" ? refreshFleet : refreshSession;
  refresh()
    .catch(showError)
    .finally(() => {
      state.pollTimer = setTimeout(poll, POLL_MS[state.view]);
    });
}

// -- fleet view ---------------------------------------------------------------------------------

async function refreshFleet() {
  if (state.needKey) return;
  const since = $("failed-since").value;
  const [fleet, failed] = await Promise.all([
    api("GET", "/v1/fleet?window_s=60"),
    api("GET", `/v1/fleet/failed${since ? `?since=${since}` : ""}`),
  ]);
  showError(null);
  $("workers").textContent = fleet.workers_alive;
  $("queue-depth").textContent = fleet.queue_depth;
  $("sessions-pending").textContent = fleet.sessions_pending;
  const perMin = (n) => Math.round((n * 60) / fleet.window_s);
  $("rate-completed").textContent = perMin(fleet.ended.completed || 0);
  $("rate-failed").textContent = perMin(fleet.ended.failed || 0);

  const ended = $("ended").tBodies[0];
  ended.replaceChildren(
    ...Object.entries(fleet.ended).map(([st, n]) =>
      el("tr", {}, el("td", {}, badge(st)), el("td", { className: "num", textContent: n })),
    ),
  );

  const now = performance.now();
  state.counterSamples.push({ t: now, counters: fleet.counters });
  state.counterSamples = state.counterSamples.filter((s) => now - s.t <= RATE_WINDOW_MS);
  const first = state.counterSamples[0];
  const minutes = (now - first.t) / 60000;
  const counters = $("counters").tBodies[0];
  $("counters-empty").hidden = Object.keys(fleet.counters).length > 0;
  counters.replaceChildren(
    ...Object.entries(fleet.counters).map(([name, total]) => {
      const rate = minutes > 0 ? ((total - (first.counters[name] || 0)) / minutes).toFixed(1) : "–";
      return el(
        "tr",
        {},
        el("td", { className: "mono", textContent: name }),
        el("td", { className: "num", textContent: total }),
        el("td", { className: "num", textContent: rate }),
      );
    }),
  );
  renderFailed(failed.turns);
}

// Retry results survive the re-render of the failed list on the next poll.
const retried = new Map(); // old turn id -> new turn status

function renderFailed(turns) {
  $("failed-empty").hidden = turns.length > 0;
  const rows = turns
    .slice()
    .reverse()
    .map((t) => {
      const done = retried.get(t.turn_id);
      const action = done
        ? el("a", {
            href: `#/session/${encodeURIComponent(done.session_id)}`,
            className: "retried",
            textContent: `retried as ${short(done.turn_id)}`,
            dataset: { newTurn: done.turn_id },
          })
        : el("button", {
            type: "button",
            className: "small retry",
            textContent: "Retry",
            onclick: (ev) => retry(t, ev.target),
          });
      return el(
        "tr",
        { dataset: { turn: t.turn_id } },
        el("td", { textContent: when(t.finished_at) }),
        el(
          "td",
          {},
          el("a", { href: `#/session/${encodeURIComponent(t.session_id)}`, textContent: t.session_id }),
        ),
        el("td", { className: "mono", textContent: short(t.turn_id), title: t.turn_id }),
        el("td", { className: "text", textContent: t.text }),
        el("td", { className: "text", textContent: t.error || "" }),
        el("td", {}, action),
      );
    });
  $("failed").tBodies[0].replaceChildren(...rows);
}

async function retry(turn, button) {
  button.disabled = true;
  try {
    const res = await api("POST", `/v1/turns/${turn.turn_id}/retry`);
    retried.set(turn.turn_id, res.turn);
    showError(null);
    await refreshFleet();
  } catch (err) {
    button.disabled = false;
    showError(err);
  }
}

$("failed-since").addEventListener("change", () => poll());

// -- session view -------------------------------------------------------------------------------

function openSession(sid) {
  stopStream();
  state.sessionId = sid;
  $("session-input").value = sid || "";
  $("session-body").hidden = !sid;
  $("history").replaceChildren();
  $("live-turns").replaceChildren();
  renderStream();
}

$("open-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  location.hash = `#/session/${encodeURIComponent($("session-input").value.trim())}`;
});

$("new-session").addEventListener("click", () => {
  const id = `ui-${crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0")}`;
  location.hash = `#/session/${id}`;
});

async function refreshSession() {
  const sid = state.sessionId;
  if (!sid || state.needKey) return;
  const path = `/v1/sessions/${encodeURIComponent(sid)}`;
  const [page, live] = await Promise.all([
    api("GET", `${path}/messages?limit=${HISTORY_PAGE}`),
    api("GET", `${path}/turns`),
  ]);
  if (sid !== state.sessionId) return; // another session was opened meanwhile
  showError(null);
  renderHistory(page);
  renderLive(live.turns);
  // Follow the turn that runs next when nothing is being followed.
  if ((!state.stream || state.stream.ended) && live.turns.length > 0) {
    const head = live.turns[0];
    if (!state.stream || state.stream.turnId !== head.turn_id) followTurn(head.turn_id);
  }
}

function renderHistory(page) {
  $("history-count").textContent = `${page.total} message(s)${page.next_before !== null ? `, newest ${page.messages.length} shown` : ""}`;
  const list = $("history");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(
    ...page.messages.map((m) => {
      const meta = el(
        "div",
        { className: "meta" },
        el("span", { className: "role", textContent: m.role }),
        el("span", { textContent: `#${m.index}` }),
        m.turn_id ? el("span", { className: "mono", textContent: `turn ${short(m.turn_id)}`, title: m.turn_id }) : null,
        m.role === "tool" ? el("span", { textContent: `${m.name || "tool"} → call ${m.tool_call_id || ""}` }) : null,
      );
      const calls = (m.tool_calls || []).map((c) =>
        el("div", { className: "call", textContent: `calls ${c.name}(${JSON.stringify(c.args)})  [${c.id || ""}]` }),
      );
      return el(
        "li",
        { className: `msg ${m.role}`, dataset: { role: m.role, index: m.index } },
        meta,
        m.content ? el("div", { className: "content", textContent: m.content }) : null,
        m.error ? el("div", { className: "content", textContent: m.error }) : null,
        ...calls,
      );
    }),
  );
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderLive(turns) {
  $("live-empty").hidden = turns.length > 0;
  $("live-turns").replaceChildren(
    ...turns.map((t) =>
      el(
        "li",
        { dataset: { turn: t.turn_id, state: t.state } },
        badge(t.state),
        el("span", { className: "text", textContent: t.text, title: t.text }),
        el("span", { className: "mono muted", textContent: short(t.turn_id), title: t.turn_id }),
        el("button", {
          type: "button",
          className: "small danger",
          textContent: t.state === "running" ? "Stop" : "Cancel",
          onclick: (ev) => cancelTurn(t.turn_id, ev.target),
        }),
      ),
    ),
  );
}

$("send-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  send();
});

$("send-text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    send();
  }
});

async function send() {
  const box = $("send-text");
  const text = box.value;
  if (!text.trim() || !state.sessionId) return;
  $("send").disabled = true;
  try {
    const st = await api("POST", `/v1/sessions/${encodeURIComponent(state.sessionId)}/turns`, { text });
    box.value = "";
    showError(null);
    if (!state.stream || state.stream.ended) followTurn(st.turn_id);
    await refreshSession();
  } catch (err) {
    showError(err);
  } finally {
    $("send").disabled = false;
    box.focus();
  }
}

async function cancelTurn(turnId, button) {
  if (button) button.disabled = true;
  try {
    await api("POST", `/v1/turns/${turnId}/cancel`, { keep_partial: true });
    showError(null);
  } catch (err) {
    showError(err);
  }
  await refreshSession().catch(showError);
}

$("stop").addEventListener("click", () => {
  if (state.stream && !state.stream.ended) cancelTurn(state.stream.turnId, $("stop"));
});

// -- the live token stream ----------------------------------------------------------------------
// EventSource cannot send an Authorization header, so the SSE stream is read with fetch() and
// parsed here: frames end with a blank line; `event:`, `data:` and `id:` fields; `:` comments.

function stopStream() {
  if (state.stream && state.stream.controller) state.stream.controller.abort();
  state.stream = null;
}

function followTurn(turnId) {
  stopStream();
  state.stream = { turnId, text: "", tools: [], lastId: "", ended: false, status: null, controller: null };
  renderStream();
  readStream(state.stream);
}

async function readStream(s) {
  for (let failures = 0; !s.ended && state.stream === s; ) {
    s.controller = new AbortController();
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (s.lastId) headers["Last-Event-ID"] = s.lastId;
      const res = await fetch(`/v1/turns/${s.turnId}/stream`, { headers, signal: s.controller.signal });
      if (res.status === 401) return askKey(null);
      if (res.status === 404) return finish(s, null); // deleted, or expired after it ended
      if (!res.ok) throw new Error(`stream: HTTP ${res.status}`);
      await readFrames(res.body, (frame) => {
        failures = 0;
        onFrame(s, frame);
      });
    } catch (err) {
      if (err.name === "AbortError" || state.stream !== s) return;
      if (++failures > 5) return showError(err);
    }
    // The connection closed before `end` (a restart, a proxy): resume after the last event.
    if (!s.ended) await new Promise((r) => setTimeout(r, 1000));
  }
}

async function readFrames(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = parseFrame(buf.slice(0, cut));
      buf = buf.slice(cut + 2);
      if (frame) onEvent(frame);
    }
  }
}

function parseFrame(text) {
  const frame = { event: "message", data: [], id: null };
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // a keepalive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") frame.event = value;
    else if (field === "data") frame.data.push(value);
    else if (field === "id") frame.id = value;
  }
  return frame.data.length ? { ...frame, data: frame.data.join("\n") } : null;
}

function onFrame(s, frame) {
  if (state.stream !== s) return;
  if (frame.id) s.lastId = frame.id;
  const data = JSON.parse(frame.data);
  if (frame.event === "chunk") s.text += data.text;
  else if (frame.event === "reset") s.text = "";
  else if (frame.event === "tool") s.tools.push(`${data.phase === "call" ? "calls" : "result of"} ${data.name}`);
  else if (frame.event === "end") return finish(s, data);
  else if (frame.event === "error") showError(new Error(`stream: ${data.message}`));
  s.status = s.status || { state: "running" };
  renderStream();
}

function finish(s, status) {
  s.ended = true;
  s.status = status || { state: "gone" };
  if (status && status.reply !== null && status.reply !== undefined) s.text = status.reply; // authoritative
  renderStream();
  // The reply is in the history now; the next queued turn (if any) is followed from there.
  refreshSession().catch(showError);
}

function renderStream() {
  const s = state.stream;
  $("stream").classList.toggle("live", Boolean(s && !s.ended));
  $("stream-turn").textContent = s ? `turn ${short(s.turnId)}` : "no turn";
  $("stream-turn").title = s ? s.turnId : "";
  $("stream").dataset.turn = s ? s.turnId : "";
  const st = s ? (s.status ? s.status.state : "waiting") : "";
  $("stream-state").textContent = st;
  $("stream-state").className = `badge ${st}`;
  $("stream").dataset.state = st;
  $("stream-text").textContent = s ? s.text : "";
  $("stream-tools").replaceChildren(...(s ? s.tools : []).map((t) => el("li", { textContent: t })));
  $("stop").disabled = !s || s.ended;
}

renderKeyState();
route();

// The agent desk: sign in, the queue, a handover's conversation, reply, notes, hand back, resolve.
// Live: the tenant's events arrive on WS /api/v1/desk/ws (the token goes in the first frame, never in the URL);
// each event refreshes the queue and the open handover. No framework, no build step.
"use strict";

const KEY = "botloom:desk";
const OPEN = "waiting,assigned,with_agent";
let session = JSON.parse(sessionStorage.getItem(KEY) || "null");  // {token, agent}
let socket = null, retry = 0, selected = null, selectedConversation = null, heartbeat = null;
let agents = {}, canned = [], pending = null, queueTimer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value; else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) { signOut("Your session ended: sign in again."); throw new Error("signed out"); }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && data.detail) || "HTTP " + response.status);
  return data;
}

function showError(id, error) { $(id).textContent = error ? String(error.message || error) : ""; }

// -- signing in and out --------------------------------------------------------------------------

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("sign-in-error", null);
  const body = { tenant: $("tenant").value.trim(), email: $("email").value.trim(), password: $("password").value };
  try {
    const response = await fetch("/api/v1/agents/sign-in", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error(response.status === 401 ? "Wrong tenant, e-mail or password." : (data && data.detail) || "HTTP " + response.status);
    session = { token: data.token, agent: data.agent };
    sessionStorage.setItem(KEY, JSON.stringify(session));
    $("password").value = "";
    start();
  } catch (error) { showError("sign-in-error", error); }
});

$("sign-out").addEventListener("click", () => signOut(""));

function signOut(message) {
  if (session) fetch("/api/v1/agents/me/presence", {
    method: "POST", headers: { Authorization: "Bearer " + session.token, "Content-Type": "application/json" },
    body: JSON.stringify({ status: "away" }),
  }).catch(() => {});
  session = null;
  sessionStorage.removeItem(KEY);
  clearInterval(heartbeat);
  if (socket) { const s = socket; socket = null; s.close(); }
  $("desk-view").hidden = true; $("sign-out").hidden = true; $("sign-in-view").hidden = false;
  $("who").textContent = ""; setLive(false);
  showError("sign-in-error", message || null);
}

async function start() {
  $("sign-in-view").hidden = true; $("desk-view").hidden = false; $("sign-out").hidden = false;
  $("who").textContent = session.agent.name + " · " + session.agent.email;
  beat();
  clearInterval(heartbeat);
  heartbeat = setInterval(beat, 30000);  // presence: away by itself after a while without one
  connect();
  await Promise.all([loadAgents(), loadCanned()]).catch(() => {});
  await refreshQueue();
}

function beat() { api("POST", "/api/v1/agents/me/presence", { status: "available" }).catch(() => {}); }

async function loadAgents() {
  agents = {};
  for (const agent of await api("GET", "/api/v1/agents")) agents[agent.id] = agent.name;
}

async function loadCanned() {
  canned = await api("GET", "/api/v1/canned");
  const select = $("canned");
  select.replaceChildren(el("option", { value: "" }, "—"));
  for (const c of canned) select.append(el("option", { value: c.id }, c.shortcut + (c.team ? " (" + c.team + ")" : "")));
}

$("canned").addEventListener("change", () => {
  const chosen = canned.find((c) => c.id === $("canned").value);
  if (chosen) { $("reply").value = chosen.text; $("reply").focus(); }
});

// -- live updates ------------------------------------------------------------------------------

function setLive(on) { $("live").dataset.state = on ? "on" : "off"; $("live").textContent = on ? "live" : "offline"; }

function connect() {
  if (!session) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/api/v1/desk/ws");
  socket = ws;
  ws.onopen = () => ws.send(JSON.stringify({ token: session.token }));
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "ready") {
      retry = 0; setLive(true);
      refreshSoon(null);  // what happened while the socket was away
    } else if (frame.type === "event") {
      refreshSoon(frame.event);
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;  // signed out
    setLive(false);
    socket = null;
    if (event.code === 4401) { signOut("Your session ended: sign in again."); return; }
    retry = Math.min(retry + 1, 6);
    setTimeout(connect, 250 * 2 ** retry);
  };
}

function refreshSoon(event) {
  const data = (event && event.data) || {};
  const touchesOpen = selected && (!event || data.handover_id === selected || event.conversation_id === selectedConversation);
  pending = pending || { open: false };
  pending.open = pending.open || touchesOpen;
  clearTimeout(queueTimer);
  queueTimer = setTimeout(async () => {
    const todo = pending; pending = null;
    if (event && event.kind === "handover.claimed" && !agents[data.agent_id]) await loadAgents().catch(() => {});
    await refreshQueue();
    if (todo.open && selected) await select(selected, false);
  }, 80);
}

// -- the queue ---------------------------------------------------------------------------------

function whoHas(handover) {
  if (!handover.agent_id) return null;
  return handover.agent_id === session.agent.id ? "you" : agents[handover.agent_id] || "another agent";
}

function stateText(handover) {
  const who = whoHas(handover);
  if (handover.status === "waiting") return "waiting since " + new Date(handover.created_at).toLocaleTimeString();
  if (handover.status === "assigned") return who === "you" ? "assigned to you" : "assigned to " + who;
  if (handover.status === "with_agent") return who === "you" ? "yours" : "taken by " + who;
  return handover.status.replaceAll("_", " ");
}

async function refreshQueue() {
  if (!session) return;
  let rows;
  try { rows = await api("GET", "/api/v1/handovers?status=" + OPEN); } catch (error) { return; }
  const list = $("queue");
  list.replaceChildren();
  for (const h of rows) {
    const taken = h.agent_id && h.agent_id !== session.agent.id;
    const summary = h.summary || {};
    const item = el("li", { class: (taken ? "taken " : "") + (h.id === selected ? "selected" : ""), "data-id": h.id, "data-status": h.status, tabIndex: 0 },
      el("span", { class: "reason" }, summary.reason || h.reason || "handover"),
      el("span", { class: "state" }, stateText(h)));
    if (summary.last_messages && summary.last_messages.length) {
      const last = summary.last_messages[summary.last_messages.length - 1];
      const said = typeof last === "object" && last ? last.content || last.text || "" : String(last);
      if (said) item.append(el("span", { class: "last" }, "“" + String(said).slice(0, 80) + "”"));
    }
    item.addEventListener("click", () => select(h.id, true));
    item.addEventListener("keydown", (event) => { if (event.key === "Enter") select(h.id, true); });
    list.append(item);
  }
  $("queue-empty").hidden = rows.length > 0;
  await refreshResumes();
}

// -- closed handovers the bot has not taken back yet (its resume failed and is retried) ----------

function resumeText(h) {
  const closed = h.status.replaceAll("_", " ");
  if (!h.resume_attempts) return closed + " · the bot is taking over";
  return closed + " · resume failed " + h.resume_attempts + "× (" + (h.resume_error || "error") + ") · retrying";
}

async function refreshResumes() {
  let rows;
  try { rows = await api("GET", "/api/v1/handovers?resume=pending"); } catch (error) { return; }
  const list = $("resumes");
  list.replaceChildren();
  for (const h of rows) {
    const summary = h.summary || {};
    const retry = el("button", { type: "button", class: "retry" }, "Retry now");
    retry.addEventListener("click", async (event) => {
      event.stopPropagation();
      retry.disabled = true;
      showError("resume-error", null);
      try {
        const after = await api("POST", "/api/v1/handovers/" + encodeURIComponent(h.id) + "/resume");
        if (!after.resumed_at) showError("resume-error", "Still failing: " + (after.resume_error || "error") + ".");
      } catch (error) { showError("resume-error", error); }
      await refreshQueue();
    });
    // A person keeps answering: the handover is the agent's again and its pending resume is cancelled.
    const takeBack = el("button", { type: "button", class: "take-back" }, "Take it back");
    takeBack.addEventListener("click", async (event) => {
      event.stopPropagation();
      takeBack.disabled = true;
      showError("resume-error", null);
      try {
        await api("POST", "/api/v1/handovers/" + encodeURIComponent(h.id) + "/take-back");
        await refreshQueue();
        await select(h.id, true);
      } catch (error) { showError("resume-error", error); await refreshQueue(); }
    });
    const item = el("li", { "data-id": h.id, "data-status": h.status, tabIndex: 0 },
      el("span", { class: "reason" }, summary.reason || h.reason || "handover"),
      el("span", { class: "state" }, resumeText(h)), retry, takeBack);
    item.addEventListener("click", () => select(h.id, true));
    item.addEventListener("keydown", (event) => { if (event.key === "Enter" && event.target === item) select(h.id, true); });
    list.append(item);
  }
  $("resumes-box").hidden = rows.length === 0;
}

// -- one handover ------------------------------------------------------------------------------

function summaryValue(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (Array.isArray(value)) {
    return value.map((v) => (v && typeof v === "object" && ("content" in v || "text" in v))
      ? (v.role ? v.role + ": " : "") + (v.content || v.text) : typeof v === "object" ? JSON.stringify(v) : String(v)).join("\n") || "—";
  }
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)).join("\n") || "—";
  return String(value);
}

async function select(id, fresh) {
  selected = id;
  if (fresh) showError("action-error", null);
  let h;
  try { h = await api("GET", "/api/v1/handovers/" + encodeURIComponent(id)); } catch (error) { showError("action-error", error); return; }
  if (selected !== id) return;
  selectedConversation = h.conversation_id;
  for (const item of $("queue").children) item.classList.toggle("selected", item.dataset.id === id);
  $("pick").hidden = true; $("open").hidden = false;
  $("open").dataset.id = id; $("open").dataset.status = h.status;
  $("open-title").textContent = (h.summary && h.summary.reason) || h.reason || "Handover";
  const who = whoHas(h);
  $("open-status").textContent = stateText(h) + " · " + h.channel + (h.user ? " · " + h.user : "") + (h.team ? " · team " + h.team : "");
  const dl = $("summary");
  dl.replaceChildren();
  for (const [key, value] of Object.entries(h.summary || {})) dl.append(el("dt", {}, key.replaceAll("_", " ")), el("dd", {}, summaryValue(value)));
  if (h.note) dl.append(el("dt", {}, "note"), el("dd", {}, h.note));
  const history = $("history");
  history.replaceChildren();
  for (const m of h.messages) history.append(el("li", { class: m.direction, "data-id": m.id }, m.text));
  history.scrollTop = history.scrollHeight;
  const notes = $("notes");
  notes.replaceChildren();
  for (const n of h.notes) notes.append(el("li", {}, (agents[n.agent_id] || "someone") + ": " + n.text));
  const mine = who === "you";
  const open = ["waiting", "assigned", "with_agent"].includes(h.status);
  $("claim").disabled = !(h.status === "waiting" || (h.status === "assigned" && mine));
  $("claim").textContent = h.status === "with_agent" && !mine ? "Taken by " + who : "Claim";
  for (const control of $("reply-form").elements) control.disabled = !(open && mine);
  for (const control of $("handback-form").elements) control.disabled = !(open && mine);
  $("resolve").disabled = !(open && mine);
}

async function act(path, body, after) {
  showError("action-error", null);
  try { await api("POST", "/api/v1/handovers/" + encodeURIComponent(selected) + path, body); if (after) after(); }
  catch (error) { showError("action-error", error); }
  await refreshQueue();
  if (selected) await select(selected, false);
}

$("claim").addEventListener("click", () => act("/claim"));
// Each reply carries a client_message_id: sending the same draft again (a double click, a retry after a
// network error) is stored and delivered once; a new text gets a new id.
let draft = { text: null, id: null };
function messageId(text) {
  if (draft.text !== text) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    draft = { text, id: Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("") };
  }
  return draft.id;
}
$("reply-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("reply").value.trim();
  if (text) act("/messages", { text, client_message_id: messageId(text) }, () => {
    $("reply").value = ""; $("canned").value = ""; draft = { text: null, id: null };
  });
});
$("handback-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("/release", { note: $("handback-note").value.trim() || null }, () => { $("handback-note").value = ""; });
});
$("resolve").addEventListener("click", () => {
  act("/resolve", { note: $("handback-note").value.trim() || null }, () => { $("handback-note").value = ""; });
});
$("note-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("note").value.trim();
  if (text) act("/notes", { text }, () => { $("note").value = ""; });
});

if (session) start();

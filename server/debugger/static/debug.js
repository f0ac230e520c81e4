// botloom's graph debugger: plain JS over the /api/v1 debug routes (no framework, no build step).
"use strict";

const KEY = "botloom.debug.key";
const $ = (id) => document.getElementById(id);
const state = { bot: null, conversation: null, turn: null, step: 0, cursors: {} };

const REFUSED = "That key was refused: it is not a tenant's API key (blk_…) or the operator's token, or it was revoked.";

function key() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  if (options.body && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { signOut(REFUSED); throw new Error("401"); }
  return response;
}

async function json(path, options) {
  const response = await api(path, options);
  if (!response.ok) {
    let detail = `${response.status}`;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(detail), { status: response.status });
  }
  return response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function pretty(value) { return el("pre", {}, JSON.stringify(value, null, 2)); }

// A cost in US dollars as the API gives it: null is a model without a price (unknown, never a guess).
function usd(value) {
  if (value === null || value === undefined) return "cost unknown";
  return value > 0 && value < 0.01 ? `$${value.toFixed(6)}` : `$${value.toFixed(4)}`;
}

function callsText(turn) {
  if (!turn.model_calls || !turn.model_calls.length) return "";
  const unknown = turn.unpriced_models && turn.unpriced_models.length ? ` (no price for ${turn.unpriced_models.join(", ")})` : "";
  return `${turn.model_calls.length} model call(s) · ${turn.tokens} tokens · ${usd(turn.cost_usd)}${unknown}`;
}

// -- sign in ---------------------------------------------------------------------------

async function signIn(candidate) {
  sessionStorage.setItem(KEY, candidate);
  $("sign-in-error").textContent = "";
  let bots;
  try {
    bots = await json("/api/v1/debug/bots");
  } catch (error) {
    if (error.message === "401") return;  // signOut said why
    signOut(error.status === 403
      ? "That key may not use the debugger (a desk agent's token?): sign in with a tenant's API key or the operator's token."
      : `Signing in failed: ${error.message}`);
    return;
  }
  try {
    $("sign-in").hidden = true; $("app").hidden = false; $("sign-out").hidden = false;
    $("who").textContent = bots.length ? `${new Set(bots.map((b) => b.tenant_slug)).size} tenant(s)` : "no bots";
    const select = $("bot");
    select.replaceChildren(...bots.map((b) => el("option", { value: b.id }, `${b.tenant_slug}/${b.slug}`)));
    const [botId, conversationId, checkpointId] = place();
    const start = bots.find((b) => b.id === botId) ? botId : bots.length ? bots[0].id : null;
    if (start) await pickBot(start, start === botId);
    if (start && start === botId && conversationId) {
      await openConversation(conversationId);
      if (checkpointId) await openTurn(checkpointId);
    }
  } catch (error) {
    if (error.message !== "401") $("sign-in-error").textContent = error.message;
    console.error(error);
  }
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  $("app").hidden = true; $("sign-in").hidden = false; $("sign-out").hidden = true; $("who").textContent = "";
  $("sign-in-error").textContent = message;
}

// -- bot, graph, conversations -----------------------------------------------------------

async function drawGraph(path = []) {
  const query = path.length ? `?path=${encodeURIComponent(path.join(","))}` : "";
  const response = await api(`/api/v1/bots/${state.bot}/graph${query}`);
  const svg = await response.text();
  const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
  $("graph").replaceChildren(document.importNode(doc.documentElement, true));
}

// The page keeps its place in its address: /debug/BOT/CONVERSATION/CHECKPOINT (reload or share it).
function place() {
  return location.pathname.replace(/^\/debug\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
}

function remember(...parts) {
  history.replaceState(null, "", ["/debug", ...parts.map(encodeURIComponent)].join("/"));
}

async function pickBot(botId, keepPlace = false) {
  state.bot = botId; state.conversation = null;
  $("bot").value = botId;
  if (!keepPlace) remember(botId);
  resetTeach();
  openTeach().catch(teachError);
  await drawGraph();
  await listConversations(false);
}

async function listConversations(more) {
  const params = new URLSearchParams({ limit: "20" });
  const text = $("f-text").value.trim(), channel = $("f-channel").value.trim(), status = $("f-status").value;
  if (text) params.set("q", text);
  if (channel) params.set("channel", channel);
  if (status) params.set("status", status);
  if (more && state.cursors.conversations) params.set("cursor", state.cursors.conversations);
  const page = await json(`/api/v1/bots/${state.bot}/debug/conversations?${params}`);
  const items = page.items.map((c) => el("li", { dataset: { id: c.id }, tabindex: "0" },
    el("span", { className: `badge ${c.status}` }, c.status), el("span", { className: "badge" }, c.channel),
    el("span", {}, c.last_text || "(no messages)"), el("div", { className: "muted" }, `${c.messages} messages · ${new Date(c.updated_at).toLocaleString()}`)));
  if (more) $("conversations").append(...items); else $("conversations").replaceChildren(...items);
  if (!more && !items.length) $("conversations").replaceChildren(el("li", { className: "muted" }, "No conversations match."));
  state.cursors.conversations = page.next_cursor;
  $("more-conversations").hidden = !page.next_cursor;
}

async function openConversation(id) {
  state.conversation = id; state.turn = null; state.cursors.messages = null; state.cursors.turns = null;
  remember(state.bot, id);
  for (const li of $("conversations").children) li.classList.toggle("selected", li.dataset.id === id);
  $("transcript").replaceChildren(); $("turns").replaceChildren(); $("turn").hidden = true;
  await Promise.all([loadMessages(false), loadTurns(false)]);
}

async function loadMessages(older) {
  const params = new URLSearchParams({ limit: "50" });
  if (older && state.cursors.messages) params.set("cursor", state.cursors.messages);
  const page = await json(`/api/v1/conversations/${state.conversation}/transcript?${params}`);
  const items = page.messages.map((m) => el("li", { className: m.direction, dataset: { turn: m.turn_id || "" } },
    m.text, el("div", { className: "muted" }, `${m.status}${m.intent ? " · " + m.intent : ""}`)));
  if (older) $("transcript").prepend(...items); else $("transcript").replaceChildren(...items);
  state.cursors.messages = page.next_cursor;
  $("older-messages").hidden = !page.next_cursor;
  markTranscript();
}

async function loadTurns(older) {
  const params = new URLSearchParams({ limit: "20" });
  if (older && state.cursors.turns) params.set("cursor", state.cursors.turns);
  const page = await json(`/api/v1/conversations/${state.conversation}/turns?${params}`);
  const items = page.turns.map((t) => el("li", { dataset: { checkpoint: t.checkpoint_id }, tabindex: "0" },
    el("span", {}, t.user_text ?? "(resumed)"), el("div", { className: "muted" },
      `${t.path.join(" → ")}${t.next.length ? " ⏸ " + t.next.join(",") : ""}${t.intent ? " · " + t.intent : ""}` +
      (t.model_calls && t.model_calls.length ? ` · ${t.tokens} tokens · ${usd(t.cost_usd)}` : ""))));
  $("turns").append(...items);
  state.cursors.turns = page.next_cursor;
  $("older-turns").hidden = !page.next_cursor;
}

function markTranscript() {
  const turnId = state.turn && state.turn.turn.turn_id;
  for (const li of $("transcript").children) li.classList.toggle("current", Boolean(turnId) && li.dataset.turn === turnId);
}

// -- a turn, node by node ------------------------------------------------------------------

async function openTurn(checkpointId) {
  for (const li of $("turns").children) li.classList.toggle("selected", li.dataset.checkpoint === checkpointId);
  state.turn = await json(`/api/v1/conversations/${state.conversation}/turns/${encodeURIComponent(checkpointId)}`);
  remember(state.bot, state.conversation, checkpointId);
  state.step = 0;
  $("turn").hidden = false;
  $("turn-title").textContent = `Turn: ${state.turn.turn.user_text ?? "(resumed by an agent)"}`;
  $("turn-cost").textContent = callsText(state.turn.turn) || "No model call.";
  $("fork-result").hidden = true; $("fork-diff").hidden = true; $("replay-result").hidden = true;
  $("replay-summary").textContent = ""; $("actions-error").textContent = ""; $("actions-missing").hidden = true;
  const finished = !state.turn.turn.next.length;  // the run went on to the end: so does its drawn path
  await drawGraph(finished ? [...state.turn.turn.path, "__end__"] : state.turn.turn.path);
  markTranscript();
  showStep();
}

function did(step) {
  const parts = [];
  const w = step.wrote || {};
  const section = (title, ...body) => parts.push(el("h4", {}, title), ...body);
  if (Array.isArray(w.passages)) {
    section("Passages retrieved", w.passages.length ? el("ul", {}, ...w.passages.map((p) =>
      el("li", {}, el("b", {}, Number(p.score).toFixed(3)), " ", `${p.document}${p.title ? " — " + p.title : ""}: `,
        el("span", { className: "muted" }, String(p.text || "").slice(0, 240))))) : el("p", { className: "muted" }, "none"));
  }
  if ("intent" in w || "confidence" in w) {
    section("Intent", el("p", {}, `${w.intent ?? "(none)"} · confidence ${Number(w.confidence ?? 0).toFixed(2)}`));
  }
  for (const name of ["candidates", "intent_candidates"]) {
    if (Array.isArray(w[name])) section("Intent candidates", pretty(w[name]));
  }
  if (w.slots && Object.keys(w.slots).length) section("Slots", pretty(w.slots));
  if (Array.isArray(w.tool_results) && w.tool_results.length) {
    section("Tools called", el("ul", {}, ...w.tool_results.map((t) => el("li", {},
      el("b", {}, t.tool), ` ${t.ok ? "ok" : "failed"}${t.ms != null ? ` (${Number(t.ms).toFixed(1)} ms)` : ""}`,
      pretty({ arguments: t.arguments, ...(t.ok ? { result: t.result } : { error: t.error }) })))));
  }
  const calls = (state.turn.turn.model_calls || []).filter((c) => c.node === step.node);
  if (calls.length) {
    section("Model calls", el("ul", { className: "model-calls" }, ...calls.map((c) => el("li", {},
      el("b", {}, c.model ?? "(model)"), ` · ${c.prompt_tokens} in / ${c.completion_tokens} out`,
      c.ms != null ? ` · ${Number(c.ms).toFixed(0)} ms` : "", " · ", el("span", { className: "cost" }, usd(c.cost_usd))))));
  }
  for (const name of ["model_calls", "llm_calls"]) {
    const mine = Array.isArray(w[name]) ? w[name].filter((c) => !c || !c.node || c.node === step.node) : [];
    if (mine.length) section("Prompts", pretty(mine.map((c) => (c && c.prompt) || c)));
  }
  if (Array.isArray(w.replies) && w.replies.length) section("Replies", el("ul", {}, ...w.replies.map((r) => el("li", {}, r))));
  if (w.escalation_reason) section("Escalation reason", el("p", {}, w.escalation_reason));
  if (Array.isArray(w.errors) && w.errors.length) section("Errors", el("ul", { className: "error" }, ...w.errors.map((e) => el("li", {}, e))));
  const shown = new Set(["passages", "intent", "confidence", "candidates", "intent_candidates", "slots", "tool_results",
    "model_calls", "llm_calls", "replies", "escalation_reason", "errors"]);
  const rest = Object.fromEntries(Object.entries(w).filter(([k]) => !shown.has(k)));
  if (Object.keys(rest).length) section("Also wrote", pretty(rest));
  if (!parts.length) parts.push(el("p", { className: "muted" }, "It changed no state key."));
  return parts;
}

// A list that only grew (the trace, the messages) shows what was appended, not both lists whole.
function appended(before, after) {
  if (Array.isArray(before) && Array.isArray(after) && after.length > before.length &&
      JSON.stringify(after.slice(0, before.length)) === JSON.stringify(before)) {
    return [el("span", { className: "muted" }, `${before.length} item(s)`),
      el("div", {}, el("span", { className: "muted" }, `+ ${after.length - before.length} appended:`), pretty(after.slice(before.length)))];
  }
  return [pretty(before), pretty(after)];
}

function showStep() {
  const steps = state.turn.steps;
  const waiting = (state.turn.turn.interrupts || []).map((i) => (i && i.reason) || "").filter(Boolean);
  const paused = state.turn.turn.next.length
    ? ` · paused before ${state.turn.turn.next.join(", ")}${waiting.length ? ` (for a person: ${waiting.join("; ")})` : ""}`
    : "";
  if (!steps.length) {
    $("step-node").textContent = "(no node ran)"; $("step-meta").textContent = paused; $("step-did").replaceChildren();
    $("step-position").textContent = ""; $("diff").hidden = true; return;
  }
  const step = steps[state.step];
  $("step-position").textContent = `step ${state.step + 1} of ${steps.length}`;
  $("prev-step").disabled = state.step === 0;
  $("next-step").disabled = state.step === steps.length - 1;
  $("step-node").textContent = step.node;
  $("step-meta").textContent = `${step.ms != null ? step.ms.toFixed(1) + " ms" : ""} · ${step.summary}${paused}`;
  $("step-did").replaceChildren(el("div", { className: "did" }, ...did(step)));
  for (const g of document.querySelectorAll("#graph g.node")) {
    g.style.filter = g.dataset.node === step.node ? "drop-shadow(0 0 4px #e8590c)" : "";
  }
  const rows = step.diff.map((d) => {
    const [before, after] = appended(d.before, d.after);
    return el("tr", { className: d.change }, el("td", {}, d.key), el("td", {}, before), el("td", {}, after));
  });
  $("diff").querySelector("tbody").replaceChildren(...rows);
}

// -- fork, replay, golden test (the Debug-actions endpoints; hidden when the server has none) --

function nodes(text) { return text.split(",").map((s) => s.trim()).filter(Boolean); }

function actionMissing(response) {
  if (response.status === 404 || response.status === 405) {
    $("actions-missing").hidden = false;
    return true;
  }
  return false;
}

async function actionError(response) {
  let detail = `${response.status}`;
  try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
  $("actions-error").textContent = detail;
}

function text(reply) { return typeof reply === "string" ? reply : reply.text ?? JSON.stringify(reply); }

function showFork(result) {
  state.fork = result.fork_id;
  $("fork-result").hidden = false;
  const original = result.original || state.turn.turn;
  $("fork-original").replaceChildren(...(original.replies || []).map((r) => el("li", {}, text(r))),
    el("li", { className: "muted" }, `path: ${(original.path || []).join(" → ")}`));
  $("fork-replies").replaceChildren(...(result.replies || []).map((r) => el("li", { className: "fork-reply" }, text(r))),
    el("li", { className: "muted" }, `path: ${(result.path || []).join(" → ")}`));
  $("fork-paused").textContent = result.paused_at ? `paused ${result.pause || "at"} ${result.paused_at}` : "ran to its end (nothing was sent to the user)";
  $("fork-continue").hidden = !result.paused_at;
  $("fork-continue-state").hidden = !result.paused_at;
  const rows = Object.entries(result.diff || {}).map(([field, change]) => el("tr", { className: "changed" },
    el("td", {}, field), el("td", {}, pretty(change && change.original)), el("td", {}, pretty(change && change.fork))));
  $("fork-diff").querySelector("tbody").replaceChildren(...rows);
  $("fork-diff").hidden = !rows.length;
  $("fork-state-view").replaceChildren(pretty(result.state || {}));
}

async function fork(event) {
  event.preventDefault();
  $("actions-error").textContent = "";
  const body = { checkpoint_id: state.turn.turn.checkpoint_id };
  const text = $("fork-text").value.trim();
  if (text) body.text = text;
  const edited = $("fork-state").value.trim();
  if (edited) {
    try { body.state = JSON.parse(edited); } catch (_) { $("actions-error").textContent = "The state is not JSON."; return; }
  }
  if (nodes($("fork-before").value).length) body.break_before = nodes($("fork-before").value);
  if (nodes($("fork-after").value).length) body.break_after = nodes($("fork-after").value);
  const response = await api(`/api/v1/conversations/${state.conversation}/forks`, { method: "POST", body: JSON.stringify(body) });
  if (actionMissing(response)) return;
  if (!response.ok) { await actionError(response); return; }
  showFork(await response.json());
}

async function continueFork() {
  $("actions-error").textContent = "";
  const body = {};
  const edited = $("fork-continue-state").value.trim();
  if (edited) {
    try { body.state = JSON.parse(edited); } catch (_) { $("actions-error").textContent = "The state is not JSON."; return; }
  }
  const response = await api(`/api/v1/forks/${state.fork}/continue`, { method: "POST", body: JSON.stringify(body) });
  if (!response.ok) { await actionError(response); return; }
  showFork(await response.json());
}

async function replay() {
  $("actions-error").textContent = "";
  const response = await api(`/api/v1/conversations/${state.conversation}/replay`, {
    method: "POST", body: JSON.stringify({ mode: $("replay-mode").value }) });
  if (actionMissing(response)) return;
  if (!response.ok) { await actionError(response); return; }
  const result = await response.json();
  const show = (v) => {
    if (v == null) return "";
    if (typeof v === "string") return v;
    if (Array.isArray(v)) return v.map(text).join("\n");
    const lines = (v.replies || []).map(text);
    if (v.intent) lines.push(`(intent ${v.intent})`);
    return lines.join("\n");
  };
  $("replay-result").querySelector("tbody").replaceChildren(...result.turns.map((t) =>
    el("tr", { className: t.same ? "same" : "changed" }, el("td", {}, t.index), el("td", {}, show(t.input)),
      el("td", {}, el("pre", {}, show(t.original))),
      el("td", {}, el("pre", {}, show(t.replayed)), t.same ? "" : el("div", { className: "muted" },
        `differs: ${(t.differs || []).join(", ") || "yes"}${t.error ? " · " + t.error : ""}`)))));
  $("replay-summary").textContent = `${result.differences} turn(s) differ${result.truncated ? " (the first turns only)" : ""}`;
  $("replay-result").hidden = false;
}

async function golden() {
  const response = await api(`/api/v1/conversations/${state.conversation}/golden-test`);
  if (actionMissing(response)) return;
  if (!response.ok) { await actionError(response); return; }
  const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `test_conversation_${state.conversation.slice(0, 8)}.py` });
  document.body.append(link); link.click(); link.remove();
}

// -- teach: fallbacks, synonyms, examples; preview, apply (the teaching routes, docs/graphs.md) --

// The panel shows one bot: `bot` is the one it loads or shows, `loaded` the one whose loads succeeded (Preview
// and Apply wait for it), `run` counts the bots shown: a request that returns after it changed draws nothing.
const teach = { bot: null, loaded: null, run: 0, synonyms: {}, pending: [], previewing: null, applying: null };

// A request of the Teach panel: its JSON answer (null for none); an error names what the API said.
async function teachJson(path, options) {
  const response = await api(path, options);
  if (!response.ok) {
    let detail = `${response.status}`;
    try {
      const body = await response.json();
      detail = body.detail || detail;
      const extra = Array.isArray(body.extra) ? body.extra.map((e) => (e && e.message) || "") : [];
      detail = [detail, ...extra.filter((m) => m && !detail.includes(m))].join(": ");  // a 400 says which field
    } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.status === 204 ? null : response.json();
}

function teachError(error) {
  if (error.message !== "401") $("teach-error").textContent = error.message;
  console.error(error);
}

function plural(count, one, many = `${one}s`) { return `${count} ${count === 1 ? one : many}`; }

function teachPath(bot, rest) { return `/api/v1/bots/${encodeURIComponent(bot)}/${rest}`; }

// Preview and Apply (and Add synonym) only once the bot shown is loaded, and not while running for it.
function teachButtons() {
  const ready = teach.loaded !== null && teach.loaded === teach.bot && teach.bot === state.bot;
  $("teach-preview").disabled = !ready || teach.previewing === teach.run;
  $("teach-apply").disabled = !ready || teach.applying === teach.run;
  $("add-synonym").disabled = !ready;
}

// Forget the bot shown: its questions, synonyms, intents, edits and preview go at once, never onto another bot.
function resetTeach() {
  teach.run += 1; teach.bot = null; teach.loaded = null; teach.synonyms = {}; teach.pending = [];
  $("fallbacks").replaceChildren(); $("synonyms").querySelector("tbody").replaceChildren();
  $("example-intent").replaceChildren(); $("example-text").value = ""; showPending();
  $("teach-error").textContent = ""; $("teach-status").textContent = "";
  $("preview-summary").textContent = ""; $("preview-changes").replaceChildren();
  teachButtons();
}

// Load what the bot is taught once per bot (reopening the panel keeps unsaved edits; after a failed load it tries again).
async function openTeach() {
  if (!$("teach").open || !state.bot || teach.bot === state.bot) return;
  resetTeach();
  const bot = state.bot, run = teach.run;
  teach.bot = bot;
  let groups, synonyms, plugins;
  try {
    [groups, synonyms, plugins] = await Promise.all([teachJson(teachPath(bot, "fallbacks?limit=50")),
      teachJson(teachPath(bot, "synonyms")), teachJson(teachPath(bot, "plugins"))]);
  } catch (error) {
    if (teach.run !== run) return;  // another bot by now: not its error
    teach.bot = null;  // opening the panel again tries again
    if (error.message === "401") throw error;
    throw new Error(`${error.message} (close and open Teach to try again)`);
  }
  if (teach.run !== run) return;
  showFallbacks(groups); showSynonyms(synonyms.synonyms);
  const intents = [...new Set(plugins.filter((p) => p.enabled).flatMap((p) => p.intents))].sort();
  $("example-intent").replaceChildren(...intents.map((name) => el("option", { value: name }, name)));
  teach.loaded = bot;
  teachButtons();
}

function showFallbacks(groups) {
  const items = groups.map((g) => {
    const others = g.variants.filter((v) => v !== g.question);
    return el("li", { title: g.variants.join("\n") },
      el("button", { type: "button", className: "question", dataset: { question: g.question } }, g.question),
      " ", el("span", { className: "badge" }, `×${g.count}`),
      el("span", { className: "muted" }, `last ${new Date(g.last_seen).toLocaleString()}`),
      others.length ? el("details", {}, el("summary", { className: "muted" }, plural(others.length, "other wording")),
        el("ul", { className: "variants" }, ...others.map((v) => el("li", {}, v)))) : "");
  });
  $("fallbacks").replaceChildren(...(items.length ? items
    : [el("li", { className: "muted" }, "No question got the fallback yet.")]));
}

function showSynonyms(synonyms) {
  teach.synonyms = synonyms;
  $("synonyms").querySelector("tbody").replaceChildren(...Object.entries(synonyms).map(([k, v]) => synonymRow(k, v)));
}

function synonymRow(phrase = "", meaning = "") {
  const remove = el("button", { type: "button", className: "remove", "aria-label": "Remove synonym", title: "Remove" }, "✕");
  const row = el("tr", {},
    el("td", {}, el("input", { "aria-label": "Phrase", placeholder: "hoodie", maxlength: "100" })),
    el("td", {}, el("input", { "aria-label": "Meaning", placeholder: "sweater", maxlength: "100" })),
    el("td", {}, remove));
  const [phraseInput, meaningInput] = row.querySelectorAll("input");
  phraseInput.value = phrase; meaningInput.value = meaning;  // values, never markup
  remove.addEventListener("click", () => row.remove());
  return row;
}

// The synonyms as edited: phrase → meaning; an error for a half-filled row or a phrase given twice.
function editedSynonyms() {
  const synonyms = Object.create(null);  // a phrase "constructor" is a phrase, not a property of every object
  for (const row of $("synonyms").querySelectorAll("tbody tr")) {
    const [phrase, meaning] = [...row.querySelectorAll("input")].map((i) => i.value.trim().split(/\s+/).join(" "));
    if (!phrase && !meaning) continue;
    if (!phrase || !meaning) throw new Error(`A synonym needs a phrase and what it means ("${phrase || meaning}").`);
    const key = phrase.toLowerCase();
    if (key in synonyms) throw new Error(`The phrase "${phrase}" is there twice.`);
    synonyms[key] = meaning.toLowerCase();
  }
  return synonyms;
}

function sameSynonyms(a, b) {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => b[k] === a[k]);
}

// The pending examples by intent: an intent named like an object property ("constructor") is an intent like any other.
function pendingExamples(pending) {
  const examples = Object.create(null);
  for (const { intent, text } of pending) (examples[intent] ||= []).push(text);
  return examples;
}

function showPending() {
  $("pending-examples").replaceChildren(...teach.pending.map((example) => {
    const remove = el("button", { type: "button", className: "remove", "aria-label": "Remove example", title: "Remove" }, "✕");
    remove.addEventListener("click", () => {
      const at = teach.pending.indexOf(example);
      if (at >= 0) teach.pending.splice(at, 1);
      showPending();
    });
    return el("li", {}, el("span", { className: "badge" }, example.intent), example.text, " ", remove);
  }));
}

function addExample(event) {
  event.preventDefault();
  const intent = $("example-intent").value, text = $("example-text").value.trim();
  if (!intent || !text || teach.loaded !== state.bot) return;
  if (!teach.pending.some((p) => p.intent === intent && p.text === text)) teach.pending.push({ intent, text });
  $("example-text").value = "";
  showPending();
}

function untested(answer) { return Array.isArray(answer.tools_not_run) ? answer.tools_not_run : []; }  // older servers: none

function answerText(answer) {
  const reply = answer.replies.length ? answer.replies[0] : "(no reply)";
  const tools = untested(answer);
  return [`${answer.intent ?? "fallback"}: ${reply}`,
    tools.length ? el("span", { className: "muted" }, ` (would call ${tools.join(", ")}: not run in a preview)`) : ""];
}

// A change from one answer to another, or to the fallback, may break what worked: it is marked so. An answer that
// would call a tool the preview does not run shows the bot's words for a failed tool: neither better nor worse.
function verdict(change) {
  const tools = untested(change.after);
  const calls = `would call ${tools.join(", ")} (tools are not run in a preview)`;
  if (change.before.intent != null && change.after.intent == null) return ["regression", "possible regression: now the fallback"];
  if (change.before.intent != null && change.before.intent !== change.after.intent) {
    return ["regression", `possible regression: a different answer${tools.length ? `; it ${calls}` : ""}`];
  }
  if (tools.length) return ["untested", calls];
  if (change.before.intent == null && change.after.intent != null) return ["improved", "now answered"];
  if (change.before.intent != null) return ["regression", "possible regression: a different answer"];
  return ["changed", "a different fallback"];
}

async function preview() {
  const bot = state.bot, run = teach.run;
  if (teach.loaded !== bot || teach.bot !== bot) return;
  $("teach-error").textContent = ""; $("teach-status").textContent = "";
  const body = { synonyms: editedSynonyms(), examples: pendingExamples([...teach.pending]) };
  teach.previewing = run; teachButtons();
  $("preview-summary").textContent = "Replaying recent conversations…"; $("preview-changes").replaceChildren();
  try {
    const result = await teachJson(teachPath(bot, "teaching/preview"), { method: "POST", body: JSON.stringify(body) });
    if (teach.run !== run) return;  // another bot by now: not its preview
    $("preview-summary").textContent = `replayed ${plural(result.turns, "turn")} of ${plural(result.conversations, "conversation")}` +
      `${result.truncated ? " (truncated: the first turns of long conversations only)" : ""}; ` +
      `${plural(result.changed.length, "answer")} would change`;
    $("preview-changes").replaceChildren(...result.changed.map((change) => {
      const [kind, label] = verdict(change);
      return el("li", { className: kind },
        el("div", {}, el("span", { className: `badge ${kind}` }, label), el("span", { className: "message" }, change.message)),
        el("div", { className: "before" }, el("span", { className: "muted" }, "before "), ...answerText(change.before)),
        el("div", { className: "after" }, el("span", { className: "muted" }, "after "), ...answerText(change.after)));
    }));
  } catch (error) {
    if (teach.run !== run) return;
    $("preview-summary").textContent = "";
    throw error;
  } finally {
    if (teach.previewing === run) teach.previewing = null;
    teachButtons();
  }
}

// Apply to the bot shown when it was clicked what was on the page then; once another bot is shown, nothing more.
async function apply() {
  const bot = state.bot, run = teach.run;
  if (teach.loaded !== bot || teach.bot !== bot) return;
  const stale = () => teach.run !== run;
  $("teach-error").textContent = ""; $("teach-status").textContent = "";
  const synonyms = editedSynonyms(), pending = [...teach.pending];
  teach.applying = run; teachButtons();
  try {
    const done = [];
    if (!sameSynonyms(synonyms, teach.synonyms)) {
      const saved = await teachJson(teachPath(bot, "synonyms"), { method: "PUT", body: JSON.stringify({ synonyms }) });
      if (stale()) return;
      teach.synonyms = saved.synonyms;
      done.push("synonyms saved");
    }
    let added = 0;
    for (const example of pending) {  // one at a time: a refused example stays pending, with the error shown
      await teachJson(teachPath(bot, `intents/${encodeURIComponent(example.intent)}/examples`),
        { method: "POST", body: JSON.stringify({ text: example.text }) });
      if (stale()) return;
      const at = teach.pending.indexOf(example);
      if (at >= 0) teach.pending.splice(at, 1);
      added += 1; showPending();
    }
    if (added) done.push(`${plural(added, "example")} added`);
    $("preview-summary").textContent = ""; $("preview-changes").replaceChildren();
    $("teach-status").textContent = done.length ? `Applied: ${done.join(", ")}.` : "Nothing to apply.";
  } catch (error) {
    // What was applied stays applied; a refused example stays pending and the edited synonyms stay as typed.
    if (!stale()) teachError(error);
    return;
  } finally {
    if (teach.applying === run) teach.applying = null;
    teachButtons();
    if (!stale()) showPending();
  }
  let groups, saved;
  try {
    [groups, saved] = await Promise.all([teachJson(teachPath(bot, "fallbacks?limit=50")), teachJson(teachPath(bot, "synonyms"))]);
  } catch (error) {
    if (stale()) return;
    throw error;
  }
  if (stale()) return;
  showFallbacks(groups); showSynonyms(saved.synonyms);
}

// -- wiring -------------------------------------------------------------------------------

function onPick(list, attribute, handler) {
  const pick = (event) => {
    const li = event.target.closest("li");
    if (li && li.dataset[attribute]) handler(li.dataset[attribute]).catch(report);
  };
  list.addEventListener("click", pick);
  list.addEventListener("keydown", (event) => { if (event.key === "Enter") pick(event); });
}

function report(error) { if (error.message !== "401") $("actions-error").textContent = error.message; console.error(error); }

$("sign-in-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("api-key").value.trim()); });
$("sign-out").addEventListener("click", () => signOut());
$("bot").addEventListener("change", () => pickBot($("bot").value).catch(report));
$("filters").addEventListener("submit", (event) => { event.preventDefault(); listConversations(false).catch(report); });
$("more-conversations").addEventListener("click", () => listConversations(true).catch(report));
$("older-messages").addEventListener("click", () => loadMessages(true).catch(report));
$("older-turns").addEventListener("click", () => loadTurns(true).catch(report));
onPick($("conversations"), "id", openConversation);
onPick($("turns"), "checkpoint", openTurn);
$("prev-step").addEventListener("click", () => { state.step = Math.max(0, state.step - 1); showStep(); });
$("next-step").addEventListener("click", () => { state.step = Math.min(state.turn.steps.length - 1, state.step + 1); showStep(); });
$("show-diff").addEventListener("click", () => { $("diff").hidden = !$("diff").hidden; });
$("fork-form").addEventListener("submit", (event) => fork(event).catch(report));
$("fork-continue").addEventListener("click", () => continueFork().catch(report));
$("replay").addEventListener("click", () => replay().catch(report));
$("golden").addEventListener("click", () => golden().catch(report));
$("teach").addEventListener("toggle", () => openTeach().catch(teachError));
$("fallbacks").addEventListener("click", (event) => {
  const question = event.target.closest("button.question");
  if (!question) return;
  $("example-text").value = question.dataset.question;  // teach this question to an intent
  $("example-text").focus();
});
$("add-synonym").addEventListener("click", () => {
  const row = synonymRow();
  $("synonyms").querySelector("tbody").append(row);
  row.querySelector("input").focus();
});
$("example-form").addEventListener("submit", addExample);
$("teach-preview").addEventListener("click", () => preview().catch(teachError));
$("teach-apply").addEventListener("click", () => apply().catch(teachError));

if (key()) signIn(key());

// The aichat playground: this gateway's own API, called from the browser with the key the
// user types. Plain ES2020, no build step, nothing loaded from elsewhere.
//
// Safety rule for the whole file: text that came over the network (answers, model ids, error
// messages) only ever reaches the page through textContent or new Option(), so an upstream
// cannot inject markup or script whatever it sends.
"use strict";

const KEY_STORAGE = "aichat.playground.key";
const HEALTH_EVERY_MS = 15000;

const $ = (id) => document.getElementById(id);
const ui = {
  health: $("health"),
  healthText: $("health-text"),
  key: $("key"),
  model: $("model"),
  upstreams: $("upstreams"),
  clear: $("clear"),
  error: $("error"),
  log: $("log"),
  empty: $("empty"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  status: $("status"),
};

// Completed turns only: what the next request sends as the conversation so far.
const history = [];
// The AbortController of the answer being streamed, or null when idle.
let running = null;
// Each model-list request gets a number, so a slow stale answer cannot overwrite a newer one.
let modelsRequest = 0;

/** An error whose message is already in plain words for the page. */
class ShownError extends Error {}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
  scrollToEnd();  // the error area takes room from the log: keep its newest lines in view
}

function setStatus(text) {
  ui.status.textContent = text;
}

function authHeaders() {
  return { Authorization: `Bearer ${ui.key.value.trim()}` };
}

const UNREACHABLE = "Cannot reach the gateway. Is it still running, and is this the right address?";

/** A failed HTTP answer from the gateway, explained for a person rather than a program. */
async function describeFailure(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = (body && body.error && body.error.message) || "";
  } catch {
    // Not JSON (a proxy's error page, say): the status alone has to do.
  }
  const status = response.status;
  const suffix = detail ? ` The gateway said: ${detail}` : "";
  if (status === 401) {
    return "The gateway refused this API key (401). Enter one of its keys: APP_SECRET in " +
      "the server's .env, or one of AICHAT_API_KEYS." + suffix;
  }
  if (status === 429) {
    const wait = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    const when = Number.isFinite(wait) ? `in ${wait} second${wait === 1 ? "" : "s"}` : "in a moment";
    return `Too many requests (429): the gateway or its upstream is limiting the rate. ` +
      `Try again ${when}.` + suffix;
  }
  if (status === 502) return "The upstream service failed (502), so there is no answer." + suffix;
  if (status === 503) {
    return "The gateway cannot answer right now (503): it is overloaded, shutting down, or " +
      "its upstream is unavailable. Try again shortly." + suffix;
  }
  if (status === 504) return "The upstream did not answer in time (504)." + suffix;
  if (status >= 500) return `The gateway failed (${status}).` + suffix;
  return `The gateway turned the request down (${status}).` + suffix;
}

// ---- health and version --------------------------------------------------------------

async function checkHealth() {
  let state = "down";
  let text = "unreachable";
  try {
    const [health, ready] = await Promise.all([fetch("health"), fetch("ready")]);
    const info = await health.json();
    state = ready.ok ? "ok" : "busy";
    text = `v${info.version} · ${ready.ok ? "ready" : "not ready (starting or stopping)"}`;
  } catch {
    // Keep "unreachable": the gateway is down or the network is.
  }
  ui.health.dataset.state = state;
  ui.healthText.textContent = text;
}

// ---- upstreams -----------------------------------------------------------------------

const CIRCUIT_WORDS = {
  closed: "answering",
  half_open: "on trial after failures",
  open: "failing: skipped for now",
  unused: "not used yet",
  unanswered: "no answer yet",
};

/** The circuit's state, except that a closed circuit that never saw an answer is not
 * "answering": nothing was asked yet, or it failed fewer times than opens the circuit. */
function upstreamState(upstream) {
  if (upstream.state !== "closed" || upstream.last_answer_seconds_ago != null) return upstream.state;
  return upstream.last_error ? "unanswered" : "unused";
}

function upstreamLine(upstream) {
  const item = document.createElement("li");
  const state = upstreamState(upstream);
  item.dataset.state = state;
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.setAttribute("aria-hidden", "true");
  let text = `${upstream.upstream}: ${CIRCUIT_WORDS[state] || state}`;
  if (upstream.retry_in_seconds) text += `, next try in ${Math.ceil(upstream.retry_in_seconds)} s`;
  if (upstream.last_error) {
    const ago = Math.round(upstream.last_error_seconds_ago || 0);
    text += ` · last error ${ago} s ago: ${upstream.last_error}`;
  }
  const words = document.createElement("span");
  words.textContent = text;
  item.append(dot, words);
  return item;
}

/** Each upstream's circuit and last error, beside the model list (hidden if not allowed). */
async function loadUpstreams() {
  let upstreams = [];
  try {
    // No key of its own: behind AICHAT_METRICS_KEY it answers 401, and the list stays hidden.
    const response = await fetch("ready?verbose=1");
    if (response.ok || response.status === 503) upstreams = (await response.json()).upstreams;
  } catch {
    // The health line already says when the gateway is unreachable.
  }
  upstreams = Array.isArray(upstreams) ? upstreams : [];
  ui.upstreams.replaceChildren(...upstreams.map(upstreamLine));
  ui.upstreams.hidden = upstreams.length === 0;
}

// ---- key and models ------------------------------------------------------------------

function setModelPlaceholder(text) {
  ui.model.replaceChildren(new Option(text, ""));
  ui.model.disabled = true;
}

async function loadModels() {
  const ticket = ++modelsRequest;
  if (!ui.key.value.trim()) {
    setModelPlaceholder("enter a key to list models");
    return;
  }
  let ids;
  try {
    const response = await fetch("v1/models", { headers: authHeaders() });
    if (ticket !== modelsRequest) return;
    if (!response.ok) {
      const failure = await describeFailure(response);
      if (ticket !== modelsRequest) return;
      setModelPlaceholder("no models: see the message above");
      showError(failure);
      return;
    }
    ids = (await response.json()).data.map((model) => String(model.id));
  } catch {
    if (ticket !== modelsRequest) return;
    setModelPlaceholder("no models: see the message above");
    showError(UNREACHABLE);
    return;
  }
  if (ticket !== modelsRequest) return;
  const previous = ui.model.value;
  ui.model.replaceChildren(...ids.map((id) => new Option(id, id)));
  ui.model.disabled = ids.length === 0;
  if (ids.includes(previous)) ui.model.value = previous;
  showError("");
}

let keyTimer = 0;

function keyChanged() {
  // sessionStorage only: the key is gone when the tab closes and never reaches a cookie.
  const key = ui.key.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  clearTimeout(keyTimer);
  keyTimer = setTimeout(loadModels, 300);  // once typing pauses, not on every keystroke
}

// ---- the conversation ----------------------------------------------------------------

function addMessage(role, label, text) {
  ui.empty.hidden = true;
  const item = document.createElement("article");
  item.className = "msg";
  item.dataset.role = role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = label;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  ui.log.append(item);
  scrollToEnd();
  return { item, body };
}

function scrollToEnd() {
  ui.log.scrollTop = ui.log.scrollHeight;
}

function setRunning(controller) {
  running = controller;
  ui.send.disabled = controller !== null;
  ui.stop.disabled = controller === null;
}

/** The ``data:`` payloads of a server-sent-events body, each as soon as it is complete. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // The gateway ends lines with \n; dropping \r also accepts CRLF from anything else.
      buffer += value.replace(/\r/g, "");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5));
        if (data.length) yield data.join("\n");
      }
    }
  } finally {
    reader.cancel().catch(() => {});  // after [DONE], a stop or an error: let the body go
  }
}

/** Read the streamed answer into ``reply``; true when it ended with [DONE]. */
async function streamAnswer(response, reply) {
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") return true;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ShownError("The gateway sent something that is not a streamed answer.");
    }
    if (chunk.error) {
      throw new ShownError(
        "The answer broke off: the upstream failed in the middle of it. " +
          `The gateway said: ${chunk.error.message || "no details"}`,
      );
    }
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      reply.text += delta.content;
      reply.body.textContent = reply.text;
      scrollToEnd();
    }
  }
  return false;
}

async function send(text) {
  const model = ui.model.value;
  if (!ui.key.value.trim()) return showError("Enter the API key first.");
  if (!model) return showError("There is no model to ask: check the key and the message above.");
  showError("");
  const turn = { role: "user", content: text };
  addMessage("user", "You", text);
  const reply = { ...addMessage("assistant", model, ""), text: "" };
  reply.item.dataset.state = "streaming";
  const controller = new AbortController();
  setRunning(controller);
  setStatus("Waiting for the answer…");
  let state = "done";
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages: [...history, turn], stream: true }),
      signal: controller.signal,
    });
    if (!response.ok) throw new ShownError(await describeFailure(response));
    setStatus("Streaming…");
    if (!(await streamAnswer(response, reply))) {
      throw new ShownError("The connection closed before the answer was complete.");
    }
    setStatus("");
  } catch (err) {
    state = err.name === "AbortError" ? "stopped" : "failed";
    // "New chat" aborts the stream it removes: nothing is left to report about that one.
    if (reply.item.isConnected) {
      setStatus(state === "stopped" ? "Stopped. The text above is what had arrived." : "");
      // fetch reports a dropped or refused connection as a TypeError.
      if (state === "failed") showError(err instanceof ShownError ? err.message : UNREACHABLE);
    }
  }
  reply.item.dataset.state = state;
  setRunning(null);
  loadUpstreams();  // an answer or a failure may have changed a circuit
  if (!reply.item.isConnected) return;
  if (reply.text) {
    // Whatever arrived stays on the page and in the conversation, even when cut short.
    history.push(turn, { role: "assistant", content: reply.text });
  } else {
    reply.body.textContent = state === "stopped" ? "(stopped before any text)" : "(no answer)";
  }
}

function newChat() {
  if (running) running.abort();
  history.length = 0;
  ui.log.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  showError("");
  setStatus("");
}

// ---- wiring --------------------------------------------------------------------------

ui.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
ui.key.addEventListener("input", keyChanged);
ui.clear.addEventListener("click", newChat);
ui.stop.addEventListener("click", () => running && running.abort());
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || running) return;
  ui.prompt.value = "";
  send(text);
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running) running.abort();
});

checkHealth();
loadUpstreams();
setInterval(() => {
  checkHealth();
  loadUpstreams();
}, HEALTH_EVERY_MS);
loadModels();

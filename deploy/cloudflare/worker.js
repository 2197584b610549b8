// aichat as a Cloudflare Worker: the OpenAI-compatible gateway for the aichats web chat,
// for users without a server. Same endpoints, shapes and errors as the Python gateway
// (README.md), with these limits: usage is an estimate (one token per four UTF-8 bytes),
// there are no access logs and no /ready draining, and the only upstream is aichats.
//
// Configuration comes from the Worker's environment (wrangler.toml [vars] and secrets):
//   APP_SECRET, AICHAT_API_KEYS   client keys (secrets; comma-separated)
//   AICHAT_ALLOW_NO_AUTH          "1" to serve without any key
//   AICHATS_BASE_URL              upstream (default https://ai-chats.org)
//   AICHATS_HISTORY               "transcript" (default) or "turns"
//   AICHAT_MODELS                 comma-separated model names (default gpt-4o,gpt-4o-2024-05-13)
//   AICHAT_CORS_ORIGINS           comma-separated origins or "*" (default)
//   AICHAT_FIRST_BYTE_TIMEOUT, AICHAT_IDLE_TIMEOUT   seconds (default 60 each)
//   AICHAT_MAX_BODY_BYTES         largest request body (default 1048576)
//
// The small pure functions are exported for the tests (test/*.test.mjs); the Worker entry
// point is the default export.

// Only functions and classes are exported: workerd takes every named export of the main
// module for an entrypoint and refuses to start if one is a plain value.
const VERSION = "0.1.0";

const DEFAULTS = {
  AICHATS_BASE_URL: "https://ai-chats.org",
  AICHATS_HISTORY: "transcript",
  AICHAT_MODELS: "gpt-4o,gpt-4o-2024-05-13",
  AICHAT_CORS_ORIGINS: "*",
  AICHAT_FIRST_BYTE_TIMEOUT: "60",
  AICHAT_IDLE_TIMEOUT: "60",
  AICHAT_MAX_BODY_BYTES: "1048576",
};

const USER = "you";
const ASSISTANT = "chatGPT";
const TRYLIMIT = " trylimit";
const BROWSER_UA =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " +
  "Chrome/130.0.0.0 Safari/537.36";
const REQUEST_ID_HEADER = "X-Request-ID";
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const SSE_HEADERS = {
  "Content-Type": "text/event-stream; charset=utf-8",
  "Cache-Control": "no-cache",
  "X-Accel-Buffering": "no",
};

// ---------------------------------------------------------------------------------------
// Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}

export class ApiError extends Error {
  constructor(status, message, { type = "invalid_request_error", code = null, param = null } = {}) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
    this.headers = {};
  }

  body() {
    const { message, type, param, code } = this;
    return { error: { message, type, param, code } };
  }
}

const invalid = (message, code, param = null) => new ApiError(400, message, { code, param });
const upstreamError = (message) =>
  new ApiError(502, message, { type: "upstream_error", code: "upstream_error" });
const upstreamTimeout = (message) =>
  new ApiError(504, message, { type: "upstream_error", code: "upstream_timeout" });
const serverError = (message, code) => new ApiError(500, message, { type: "server_error", code });
const internalError = () => serverError("Internal server error.", "internal_error");

/** The SSE event that ends a stream that failed after it started (no [DONE] follows). */
export function errorEvent(err) {
  return `data: ${JSON.stringify(err.body())}\n\n`;
}

// ---------------------------------------------------------------------------------------
// Configuration

/** Comma-separated list -> trimmed, non-empty items. */
export function splitList(value) {
  return (value ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

function setting(env, name) {
  const value = env[name];
  return typeof value === "string" && value.trim() !== "" ? value.trim() : DEFAULTS[name];
}

function positiveNumber(env, name, problems) {
  const value = Number(setting(env, name));
  if (!Number.isFinite(value) || value <= 0) problems.push(`${name}: must be a positive number`);
  return value;
}

/** The gateway's settings from the Worker environment; throws a 500 naming bad variables. */
export function loadConfig(env = {}) {
  const problems = [];
  const baseUrl = setting(env, "AICHATS_BASE_URL").replace(/\/+$/, "");
  if (!/^https?:\/\//.test(baseUrl)) {
    problems.push("AICHATS_BASE_URL: must start with http:// or https://");
  }
  const history = setting(env, "AICHATS_HISTORY");
  if (history !== "transcript" && history !== "turns") {
    problems.push("AICHATS_HISTORY: must be 'transcript' or 'turns'");
  }
  const models = splitList(setting(env, "AICHAT_MODELS"));
  if (!models.length) problems.push("AICHAT_MODELS: must name at least one entry");
  const keys = [...splitList(env.APP_SECRET), ...splitList(env.AICHAT_API_KEYS)];
  const allowNoAuth = ["1", "true", "yes", "on"].includes(
    String(env.AICHAT_ALLOW_NO_AUTH ?? "")
      .trim()
      .toLowerCase(),
  );
  const config = {
    baseUrl,
    history,
    models,
    keys,
    allowNoAuth,
    corsOrigins: splitList(setting(env, "AICHAT_CORS_ORIGINS")),
    firstByteMs: positiveNumber(env, "AICHAT_FIRST_BYTE_TIMEOUT", problems) * 1000,
    idleMs: positiveNumber(env, "AICHAT_IDLE_TIMEOUT", problems) * 1000,
    maxBodyBytes: positiveNumber(env, "AICHAT_MAX_BODY_BYTES", problems),
  };
  if (problems.length) {
    throw serverError(`Invalid configuration: ${problems.join("; ")}.`, "invalid_config");
  }
  if (!keys.length && !allowNoAuth) {
    throw serverError(
      "No API key configured: run 'wrangler secret put APP_SECRET' (or set AICHAT_API_KEYS, " +
        "or AICHAT_ALLOW_NO_AUTH=1 to serve without auth).",
      "no_api_key_configured",
    );
  }
  return config;
}

// ---------------------------------------------------------------------------------------
// Auth: keys compared as SHA-256 digests, every key every time, no early exit.

const encoder = new TextEncoder();
const digestCache = new Map();

async function sha256(text) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** 1 when the two byte arrays are equal, else 0, in time that depends only on their length. */
export function sameBytes(a, b) {
  if (a.length !== b.length) return 0;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0 ? 1 : 0;
}

function keyDigests(keys) {
  const cacheKey = JSON.stringify(keys);
  let digests = digestCache.get(cacheKey);
  if (!digests) {
    digests = Promise.all(keys.map(sha256));
    digestCache.clear(); // keys only change on redeploy: keep one entry
    digestCache.set(cacheKey, digests);
  }
  return digests;
}

/** Whether `presented` is one of `keys`. */
export async function keyAccepted(presented, keys) {
  if (!presented) return false;
  const candidate = await sha256(presented);
  let found = 0;
  for (const digest of await keyDigests(keys)) found |= sameBytes(candidate, digest);
  return found === 1;
}

/** The key a client sent as `Authorization: Bearer <key>`, or null. */
export function presentedKey(header) {
  const match = /^bearer\s+(.+)$/i.exec((header ?? "").trim());
  return match ? match[1].trim() : null;
}

// ---------------------------------------------------------------------------------------
// Request validation (what the Python gateway's pydantic schema enforces)

const ROLES = new Set(["system", "developer", "user", "assistant", "tool", "function"]);
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
const isInt = (v) => Number.isInteger(v);

function badValue(param, what) {
  return invalid(`Invalid value for '${param}': ${what}.`, "invalid_value", param);
}

// Optional top-level fields: [name, check, what the check wants]. null is always allowed.
const OPTIONAL_FIELDS = [
  ["stream", (v) => typeof v === "boolean", "must be a boolean"],
  ["stream_options", isObject, "must be an object"],
  ["tools", Array.isArray, "must be an array"],
  ["functions", Array.isArray, "must be an array"],
  ["tool_choice", (v) => typeof v === "string" || isObject(v), "must be a string or an object"],
  ["temperature", (v) => typeof v === "number" && v >= 0 && v <= 2, "must be a number from 0 to 2"],
  ["top_p", (v) => typeof v === "number" && v >= 0 && v <= 1, "must be a number from 0 to 1"],
  ["n", (v) => isInt(v) && v >= 1 && v <= 128, "must be an integer from 1 to 128"],
  ["max_tokens", (v) => isInt(v) && v >= 1, "must be a positive integer"],
  ["max_completion_tokens", (v) => isInt(v) && v >= 1, "must be a positive integer"],
  [
    "stop",
    (v) => typeof v === "string" || (Array.isArray(v) && v.every((s) => typeof s === "string")),
    "must be a string or an array of strings",
  ],
];

function checkMessage(message, i) {
  const at = `messages[${i}]`;
  if (!isObject(message)) throw badValue(at, "must be an object");
  if (!ROLES.has(message.role)) {
    throw badValue(`${at}.role`, `must be one of ${[...ROLES].join(", ")}`);
  }
  const content = message.content;
  if (Array.isArray(content)) {
    content.forEach((part, j) => {
      const partAt = `${at}.content[${j}]`;
      if (!isObject(part)) throw badValue(partAt, "must be an object");
      if (typeof part.type !== "string") throw badValue(`${partAt}.type`, "must be a string");
      if (part.text != null && typeof part.text !== "string") {
        throw badValue(`${partAt}.text`, "must be a string");
      }
    });
  } else if (content != null && typeof content !== "string") {
    throw badValue(`${at}.content`, "must be a string or an array of content parts");
  }
  if (message.tool_calls != null && !Array.isArray(message.tool_calls)) {
    throw badValue(`${at}.tool_calls`, "must be an array");
  }
}

/** A decoded JSON body checked as a chat completion request; throws a 400 naming the field. */
export function parseChatRequest(body) {
  if (!isObject(body)) throw invalid("Request body must be a JSON object.", "invalid_body");
  if (typeof body.model !== "string" || body.model === "") {
    throw badValue("model", "must be a non-empty string");
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw badValue("messages", "must be a non-empty array");
  }
  body.messages.forEach(checkMessage);
  for (const [name, check, what] of OPTIONAL_FIELDS) {
    if (body[name] != null && !check(body[name])) throw badValue(name, what);
  }
  const includeUsage = body.stream_options?.include_usage;
  if (includeUsage != null && typeof includeUsage !== "boolean") {
    throw badValue("stream_options.include_usage", "must be a boolean");
  }
  return body;
}

// ---------------------------------------------------------------------------------------
// Messages -> the upstream's messagesHistory (as aichat/providers/aichats.py does)

/** A message's text: the string, or its text parts joined by "\n"; other parts: 400. */
export function textOf(message, index) {
  const content = message.content;
  if (content == null) return "";
  if (typeof content === "string") return content;
  return content
    .map((part, j) => {
      if (part.type !== "text" || part.text == null) {
        throw invalid(
          `Content part of type '${part.type}' is not supported by this model; ` +
            "send text parts only.",
          "unsupported_content",
          `messages[${index}].content[${j}]`,
        );
      }
      return part.text;
    })
    .join("\n");
}

const instructions = (texts) => `Instructions:\n${texts.join("\n\n")}`;

/** The conversation as [from, text] turns, system/developer text folded into user turns. */
export function conversationTurns(request) {
  if (request.tools?.length || request.functions?.length) {
    throw invalid("This model does not support tools or functions.", "unsupported", "tools");
  }
  const turns = [];
  let pendingSystem = [];
  request.messages.forEach((message, i) => {
    if (message.role === "tool" || message.role === "function" || message.tool_calls?.length) {
      throw invalid(
        "This model does not support tool calls or tool messages.",
        "unsupported",
        `messages[${i}]`,
      );
    }
    let text = textOf(message, i);
    if (message.role === "system" || message.role === "developer") {
      pendingSystem.push(text);
    } else if (message.role === "user") {
      if (pendingSystem.length) {
        text = `${instructions(pendingSystem)}\n\n${text}`;
        pendingSystem = [];
      }
      turns.push([USER, text]);
    } else if (text) {
      turns.push([ASSISTANT, text]);
    }
  });
  if (pendingSystem.length) turns.push([USER, instructions(pendingSystem)]);
  return turns;
}

/** The `messagesHistory` list: one entry per turn, or one folded transcript. */
export function buildHistory(request, mode) {
  const turns = conversationTurns(request);
  if (mode === "turns" || turns.length === 1) {
    return turns.map(([from, content]) => ({ from, content }));
  }
  const labels = { [USER]: "User", [ASSISTANT]: "Assistant" };
  const transcript = turns.map(([from, text]) => `${labels[from]}: ${text}`).join("\n\n");
  return [{ from: USER, content: transcript }];
}

// ---------------------------------------------------------------------------------------
// Upstream bytes -> lines -> answer pieces. Lines are cut on bytes at "\n" only and decoded
// whole: 0x0A never occurs inside a multi-byte UTF-8 character, so reads that split one
// cannot corrupt it.

/** Stateful bytes -> text lines; `feed` each read, `flush` at the end. */
export class LineSplitter {
  constructor() {
    this.held = []; // bytes of the unfinished line, as received
    this.decoder = new TextDecoder("utf-8"); // invalid bytes become U+FFFD, never an error
  }

  /** The lines completed by `bytes` (a Uint8Array), without "\n" or "\r\n". */
  feed(bytes) {
    const lines = [];
    let start = 0;
    let newline = bytes.indexOf(0x0a);
    while (newline !== -1) {
      this.held.push(bytes.subarray(start, newline));
      lines.push(this.takeLine());
      start = newline + 1;
      newline = bytes.indexOf(0x0a, start);
    }
    if (start < bytes.length) this.held.push(bytes.slice(start));
    return lines;
  }

  /** The last line if the input ended without a newline. */
  flush() {
    return this.held.some((part) => part.length) ? [this.takeLine()] : [];
  }

  takeLine() {
    const parts = this.held;
    this.held = [];
    let line = parts.length === 1 ? parts[0] : concatBytes(parts);
    if (line.length && line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
    return this.decoder.decode(line);
  }
}

/** The byte arrays `parts` as one. */
export function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The payload of an SSE `data:` line (one space after the colon removed), or null. */
export function sseData(line) {
  if (!line.startsWith("data:")) return null;
  return line.startsWith("data: ") ? line.slice(6) : line.slice(5);
}

/** Answer text of one payload: ` trylimit` markers removed, backslash+n -> newline. */
export function pieceText(payload) {
  if (payload.includes(TRYLIMIT)) {
    payload = payload.replaceAll(TRYLIMIT, "");
  } else if (payload === TRYLIMIT.trim()) {
    // The SSE separator space can swallow the marker's own leading space.
    return "";
  }
  return payload.replaceAll("\\n", "\n");
}

/** The answer text carried by one upstream line ("" for anything that is not `data:`). */
export function lineText(line) {
  const payload = sseData(line);
  return payload === null ? "" : pieceText(payload);
}

// ---------------------------------------------------------------------------------------
// Token estimates (aichat/core/tokens.py's fallback: ceil(UTF-8 bytes / 4))

const PER_MESSAGE = 3;
const REPLY_PRIMING = 3;

/** UTF-8 length of a string, without encoding it. */
export function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

export const estimateTokens = (text) => Math.ceil(utf8Length(text) / 4);

/** The text of each message for counting (non-text parts skipped). */
function promptTexts(request) {
  return request.messages.map((message) =>
    Array.isArray(message.content)
      ? message.content
          .filter((part) => part.text != null)
          .map((part) => part.text)
          .join("\n")
      : (message.content ?? ""),
  );
}

/** OpenAI's usage object, estimated: per message 3 + its tokens, plus 3 for the reply. */
export function estimateUsage(request, answer) {
  const prompt = promptTexts(request).reduce(
    (total, text) => total + PER_MESSAGE + estimateTokens(text),
    REPLY_PRIMING,
  );
  const completion = estimateTokens(answer);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
  };
}

// ---------------------------------------------------------------------------------------
// OpenAI response shapes

/** Identity shared by every chunk of one answer: one id, `created` in Unix seconds. */
export function newCompletion(model, now = Date.now()) {
  return { id: `chatcmpl-${randomHex(12)}`, created: Math.floor(now / 1000), model };
}

function randomHex(bytes) {
  const random = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
}

function chunk(completion, choices, extra = {}) {
  const { id, created, model } = completion;
  const event = { id, object: "chat.completion.chunk", created, model, choices, ...extra };
  return `data: ${JSON.stringify(event)}\n\n`;
}

const choice = (delta, finishReason = null) => [
  { index: 0, delta, logprobs: null, finish_reason: finishReason },
];

export const roleChunk = (c) => chunk(c, choice({ role: "assistant", content: "" }));
export const textChunk = (c, text) => chunk(c, choice({ content: text }));
export const finishChunk = (c) => chunk(c, choice({}, "stop"));
export const usageChunk = (c, usage) => chunk(c, [], { usage });
const DONE = "data: [DONE]\n\n";

/** The whole `chat.completion` object. */
export function completionBody(completion, text, usage) {
  return {
    id: completion.id,
    object: "chat.completion",
    created: completion.created,
    model: completion.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: text, refusal: null },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage,
  };
}

// ---------------------------------------------------------------------------------------
// The upstream call

/** `promise`, or a rejection with `onTimeout()` after `ms`; the timer never outlives it. */
async function within(promise, ms, onTimeout) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function errorDetail(response, ms) {
  try {
    const reader = response.body.getReader();
    const { value } = await within(reader.read(), ms, () => new Error("timeout"));
    reader.cancel().catch(() => {});
    const text = new TextDecoder().decode((value ?? new Uint8Array()).subarray(0, 2048));
    return text.split(/\s+/).filter(Boolean).join(" ").slice(0, 300);
  } catch {
    return "";
  }
}

/** One upstream answer, read piece by piece: `next()` gives text, or null at the end. */
export class UpstreamAnswer {
  constructor(body, { firstByteMs, idleMs }) {
    this.reader = body.getReader();
    this.lines = new LineSplitter();
    this.queue = [];
    this.waitMs = firstByteMs;
    this.idleMs = idleMs;
    this.ended = false;
  }

  async next() {
    while (!this.queue.length) {
      if (this.ended) return null;
      await this.read();
    }
    return this.queue.shift();
  }

  async read() {
    let result;
    try {
      result = await within(this.reader.read(), this.waitMs, () =>
        upstreamTimeout("aichats upstream stopped sending."),
      );
    } catch (err) {
      this.cancel();
      if (err instanceof ApiError) throw err;
      throw upstreamError(`aichats upstream connection broke: ${err?.name ?? "Error"}.`);
    }
    this.waitMs = this.idleMs;
    const lines = result.done ? this.lines.flush() : this.lines.feed(result.value);
    this.ended = result.done;
    for (const line of lines) {
      const text = lineText(line);
      if (text) this.queue.push(text);
    }
  }

  cancel() {
    this.ended = true;
    this.reader.cancel().catch(() => {});
  }
}

/** POST the conversation to aichats; the answer once its status is 2xx, else a 502/504. */
export async function callUpstream(config, history) {
  const abort = new AbortController();
  let response;
  try {
    response = await within(
      fetch(`${config.baseUrl}/chat/send2/`, {
        method: "POST",
        headers: {
          accept: "application/json, text/event-stream",
          "content-type": "application/json",
          origin: config.baseUrl,
          referer: `${config.baseUrl}/chat/`,
          "user-agent": BROWSER_UA,
        },
        body: JSON.stringify({ type: "chat", messagesHistory: history }),
        signal: abort.signal,
      }),
      config.firstByteMs,
      () => {
        abort.abort();
        return upstreamTimeout("aichats upstream did not answer in time.");
      },
    );
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw upstreamError(`aichats upstream unreachable: ${err?.name ?? "Error"}.`);
  }
  if (!response.ok) {
    const detail = await errorDetail(response, config.firstByteMs);
    throw upstreamError(
      `aichats upstream answered HTTP ${response.status}${detail ? `: ${detail}` : "."}`,
    );
  }
  if (!response.body) return new UpstreamAnswer(new Response("").body, config);
  return new UpstreamAnswer(response.body, config);
}

// ---------------------------------------------------------------------------------------
// Handlers

function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json; charset=utf-8", ...headers },
  });
}

function errorResponse(err) {
  return json(err.body(), err.status, err.headers);
}

let startedAt = null; // per isolate, set on its first request (Date.now() is 0 at load time)

function modelObject(id) {
  startedAt ??= Math.floor(Date.now() / 1000);
  return { id, object: "model", created: startedAt, owned_by: "aichats" };
}

function modelNotFound(model) {
  return new ApiError(404, `The model '${model}' does not exist or you do not have access to it.`, {
    code: "model_not_found",
    param: "model",
  });
}

async function readJson(request, maxBytes) {
  const declared = Number(request.headers.get("Content-Length"));
  const tooLarge = () =>
    new ApiError(413, "Request body is larger than the configured limit (AICHAT_MAX_BODY_BYTES).", {
      code: "request_too_large",
    });
  if (declared > maxBytes) throw tooLarge();
  const raw = await request.arrayBuffer();
  if (raw.byteLength > maxBytes) throw tooLarge();
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
  } catch {
    throw invalid("Request body is not valid JSON.", "invalid_json");
  }
}

function streamResponse(answer, first, request, completion) {
  const wantUsage = request.stream_options?.include_usage === true;
  const parts = [];
  let next = first; // the piece to send on the next pull; undefined: read one
  let cancelled = false;
  const bytes = (text) => encoder.encode(text);
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(bytes(roleChunk(completion)));
    },
    async pull(controller) {
      let events;
      let last = true;
      try {
        const piece = next !== undefined ? next : await answer.next();
        next = undefined;
        if (piece !== null) {
          if (wantUsage) parts.push(piece);
          events = textChunk(completion, piece);
          last = false;
        } else {
          events = finishChunk(completion);
          if (wantUsage) events += usageChunk(completion, estimateUsage(request, parts.join("")));
          events += DONE;
        }
      } catch (err) {
        // Started streams end with an error event and no [DONE]: the client knows it is cut.
        events = errorEvent(err instanceof ApiError ? err : internalError());
      }
      if (cancelled) return;
      controller.enqueue(bytes(events));
      if (last) controller.close();
    },
    cancel() {
      cancelled = true;
      answer.cancel(); // the client left: stop the upstream download too
    },
  });
  return new Response(body, { headers: SSE_HEADERS });
}

async function chatCompletions(request, config) {
  const chat = parseChatRequest(await readJson(request, config.maxBodyBytes));
  if (!config.models.includes(chat.model)) throw modelNotFound(chat.model);
  const history = buildHistory(chat, config.history);
  const completion = newCompletion(chat.model);
  const answer = await callUpstream(config, history);
  // Until the first piece arrives nothing has been sent: failures are still HTTP errors.
  const first = await answer.next();
  if (chat.stream === true) return streamResponse(answer, first, chat, completion);
  const parts = [];
  for (let piece = first; piece !== null; piece = await answer.next()) parts.push(piece);
  const text = parts.join("");
  return json(completionBody(completion, text, estimateUsage(chat, text)));
}

// Path -> the methods it answers and its handler.
const ROUTES = [
  [/^\/health$/, ["GET", "HEAD"], () => json({ status: "ok", version: VERSION })],
  [/^\/ready$/, ["GET", "HEAD"], () => json({ status: "ready" })],
  [
    /^\/v1\/models$/,
    ["GET", "HEAD"],
    (_request, config) => json({ object: "list", data: config.models.map(modelObject) }),
  ],
  [
    /^\/v1\/models\/(.+)$/,
    ["GET", "HEAD"],
    (_request, config, id) => {
      if (!config.models.includes(id)) throw modelNotFound(id);
      return json(modelObject(id));
    },
  ],
  [/^\/v1\/chat\/completions$/, ["POST"], chatCompletions],
];

function route(method, path) {
  for (const [pattern, methods, handler] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    if (!methods.includes(method)) {
      const err = new ApiError(405, `Method not allowed. Allowed: ${methods.join(", ")}.`, {
        code: "method_not_allowed",
      });
      err.headers.Allow = methods.join(", ");
      throw err;
    }
    return (request, config) => handler(request, config, match[1] && safeDecode(match[1]));
  }
  throw new ApiError(404, "Unknown path. See GET /v1/models and POST /v1/chat/completions.", {
    code: "not_found",
  });
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** CORS headers for a request from `origin`, or none when it is not allowed. */
export function corsHeaders(origin, allowed) {
  if (!origin) return {};
  if (allowed.includes("*")) return { "Access-Control-Allow-Origin": "*" };
  if (allowed.includes(origin)) return { "Access-Control-Allow-Origin": origin, Vary: "Origin" };
  return {};
}

function preflight(cors) {
  if (!cors["Access-Control-Allow-Origin"]) return new Response(null, { status: 204 });
  return new Response(null, {
    status: 204,
    headers: {
      ...cors,
      "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
      "Access-Control-Allow-Headers": `Content-Type, Authorization, ${REQUEST_ID_HEADER}`,
      "Access-Control-Max-Age": "600",
    },
  });
}

async function handle(request, env) {
  const config = loadConfig(env);
  const url = new URL(request.url);
  const cors = corsHeaders(request.headers.get("Origin"), config.corsOrigins);
  if (request.method === "OPTIONS") return { response: preflight(cors), cors };
  // As in the Python gateway, the key is checked before routing: no path probing without it.
  if (url.pathname.startsWith("/v1/") && config.keys.length) {
    const key = presentedKey(request.headers.get("Authorization"));
    if (!(await keyAccepted(key, config.keys))) {
      throw new ApiError(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
        { code: "invalid_api_key" },
      );
    }
  }
  const handler = route(request.method, url.pathname);
  return { response: await handler(request, config), cors };
}

async function fetchHandler(request, env) {
  const given = request.headers.get(REQUEST_ID_HEADER) ?? "";
  const requestId = SAFE_REQUEST_ID.test(given) ? given : randomHex(8);
  let response;
  let cors = {};
  try {
    ({ response, cors } = await handle(request, env ?? {}));
  } catch (err) {
    if (!(err instanceof ApiError)) console.error("unhandled error", err?.stack ?? err);
    response = errorResponse(err instanceof ApiError ? err : internalError());
    try {
      cors = corsHeaders(request.headers.get("Origin"), loadConfig(env ?? {}).corsOrigins);
    } catch {
      cors = {};
    }
  }
  const headers = new Headers(response.headers);
  headers.set(REQUEST_ID_HEADER, requestId);
  for (const [name, value] of Object.entries(cors)) headers.set(name, value);
  if (cors["Access-Control-Allow-Origin"]) {
    headers.set("Access-Control-Expose-Headers", REQUEST_ID_HEADER);
  }
  return new Response(response.body, { status: response.status, headers });
}

export default { fetch: fetchHandler };

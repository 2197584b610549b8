// The Worker in workerd (Miniflare) in front of a fake aichats upstream on 127.0.0.1.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, beforeEach, describe, test } from "node:test";
import {
  API_KEY,
  ROOT,
  SECOND_KEY,
  VECTORS,
  auth,
  chat,
  contentDeltas,
  jsonEvents,
  sseEvents,
  startUpstream,
  startWorker,
} from "./helpers.mjs";

let upstream;
let worker;

before(async () => {
  upstream = await startUpstream();
  worker = await startWorker({
    APP_SECRET: API_KEY,
    AICHAT_API_KEYS: `other-key, ${SECOND_KEY}`,
    AICHATS_BASE_URL: upstream.url,
    AICHAT_IDLE_TIMEOUT: "1",
    AICHAT_MAX_BODY_BYTES: "4096",
  });
});

after(async () => {
  await worker?.close();
  await upstream?.close();
});

beforeEach(() => {
  upstream.behave({});
  upstream.requests.length = 0;
  upstream.closed.length = 0;
});

/** Run `fn` with another Worker: the usual environment with `overrides` (undefined: unset). */
async function withWorker(overrides, fn) {
  const env = { APP_SECRET: API_KEY, AICHATS_BASE_URL: upstream.url, ...overrides };
  const other = await startWorker(
    Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined)),
  );
  try {
    await fn(other);
  } finally {
    await other.close();
  }
}

function assertError(body, { type = "invalid_request_error", code, param = null }) {
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.equal(typeof body.error.message, "string");
  assert.equal(body.error.type, type);
  assert.equal(body.error.code, code);
  assert.equal(body.error.param, param);
}

describe("meta endpoints", () => {
  test("health needs no key and tells the version, the Python package's", async () => {
    const resp = await worker.fetch("/health");
    assert.equal(resp.status, 200);
    const pyproject = readFileSync(new URL("pyproject.toml", ROOT), "utf8");
    const version = /^version\s*=\s*"([^"]+)"/m.exec(pyproject)[1];
    assert.deepEqual(await resp.json(), { status: "ok", version });
    assert.match(resp.headers.get("X-Request-ID"), /^[0-9a-f]{16}$/);
  });

  test("a plain client request id is echoed", async () => {
    const resp = await worker.fetch("/health", { headers: { "X-Request-ID": "abc-123" } });
    assert.equal(resp.headers.get("X-Request-ID"), "abc-123");
    await resp.arrayBuffer();
  });

  test("models list and one model", async () => {
    const list = await worker.fetch("/v1/models", { headers: auth() });
    assert.equal(list.status, 200);
    const body = await list.json();
    assert.equal(body.object, "list");
    assert.deepEqual(
      body.data.map((m) => m.id),
      ["gpt-4o", "gpt-4o-2024-05-13"],
    );
    for (const model of body.data) {
      assert.equal(model.object, "model");
      assert.equal(model.owned_by, "aichats");
      assert.ok(Math.abs(model.created - Date.now() / 1000) < 600);
    }
    const one = await worker.fetch("/v1/models/gpt-4o-2024-05-13", { headers: auth() });
    assert.equal((await one.json()).id, "gpt-4o-2024-05-13");
    const missing = await worker.fetch("/v1/models/gpt-5", { headers: auth() });
    assert.equal(missing.status, 404);
    assertError(await missing.json(), { code: "model_not_found", param: "model" });
  });
});

describe("auth", () => {
  for (const [name, headers] of [
    ["missing key", {}],
    ["wrong key", { Authorization: "Bearer nope" }],
    ["not a bearer key", { Authorization: `Basic ${API_KEY}` }],
  ]) {
    test(`${name}: 401`, async () => {
      const resp = await worker.fetch("/v1/models", { headers });
      assert.equal(resp.status, 401);
      assertError(await resp.json(), { code: "invalid_api_key" });
    });
  }

  test("every configured key works", async () => {
    for (const key of [API_KEY, SECOND_KEY, "other-key"]) {
      const resp = await worker.fetch("/v1/models", { headers: auth(key) });
      assert.equal(resp.status, 200, key);
      await resp.arrayBuffer();
    }
  });

  test("unknown API paths need a key before they say 404", async () => {
    const anonymous = await worker.fetch("/v1/nothing");
    assert.equal(anonymous.status, 401);
    await anonymous.arrayBuffer();
    const resp = await worker.fetch("/v1/nothing", { headers: auth() });
    assert.equal(resp.status, 404);
    assertError(await resp.json(), { code: "not_found" });
  });
});

describe("routing and CORS", () => {
  test("unknown path: 404 in OpenAI's shape", async () => {
    const resp = await worker.fetch("/nothing/here");
    assert.equal(resp.status, 404);
    assertError(await resp.json(), { code: "not_found" });
  });

  test("wrong method: 405 with Allow", async () => {
    const resp = await worker.fetch("/v1/chat/completions", { headers: auth() });
    assert.equal(resp.status, 405);
    assert.equal(resp.headers.get("Allow"), "POST");
    assertError(await resp.json(), { code: "method_not_allowed" });
    const health = await worker.fetch("/health", { method: "POST" });
    assert.equal(health.status, 405);
    await health.arrayBuffer();
  });

  test("preflight needs no key", async () => {
    const resp = await worker.fetch("/v1/chat/completions", {
      method: "OPTIONS",
      headers: {
        Origin: "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
      },
    });
    assert.equal(resp.status, 204);
    assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
    assert.match(resp.headers.get("Access-Control-Allow-Methods"), /POST/);
    assert.match(resp.headers.get("Access-Control-Allow-Headers"), /Authorization/);
  });

  test("cross-origin responses, errors included, carry CORS headers", async () => {
    const headers = { Origin: "https://app.example" };
    const resp = await worker.fetch("/v1/models", { headers });
    assert.equal(resp.status, 401);
    assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
    assert.equal(resp.headers.get("Access-Control-Expose-Headers"), "X-Request-ID");
    await resp.arrayBuffer();
  });
});

describe("chat completions", () => {
  test("whole answer: one chat.completion with estimated usage", async () => {
    upstream.behave({
      chunks: ["data: Hello\n\n", "data: ,\\n\n\n", "data:  wörld\n\n", "data:  trylimit\n\n"],
    });
    const started = Date.now() / 1000;
    const resp = await chat(worker, {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Say hello" },
      ],
    });
    assert.equal(resp.status, 200);
    assert.match(resp.headers.get("Content-Type"), /^application\/json/);
    const body = await resp.json();
    assert.match(body.id, /^chatcmpl-[0-9a-f]{24}$/);
    assert.equal(body.object, "chat.completion");
    assert.ok(Math.abs(body.created - started) < 10, "created is in seconds");
    assert.equal(body.model, "gpt-4o");
    assert.deepEqual(body.choices, [
      {
        index: 0,
        message: { role: "assistant", content: "Hello,\n wörld", refusal: null },
        logprobs: null,
        finish_reason: "stop",
      },
    ]);
    // "Be brief." 9 bytes -> 3, "Say hello" 9 -> 3; answer 14 bytes -> 4.
    assert.deepEqual(body.usage, { prompt_tokens: 15, completion_tokens: 4, total_tokens: 19 });

    const [sent] = upstream.requests;
    assert.equal(sent.method, "POST");
    assert.equal(sent.url, "/chat/send2/");
    assert.deepEqual(JSON.parse(sent.body), {
      type: "chat",
      messagesHistory: [{ from: "you", content: "Instructions:\nBe brief.\n\nSay hello" }],
    });
    assert.equal(sent.headers.origin, upstream.url);
    assert.equal(sent.headers.referer, `${upstream.url}/chat/`);
    assert.equal(sent.headers.accept, "application/json, text/event-stream");
    assert.equal(sent.headers["content-type"], "application/json");
    assert.match(sent.headers["user-agent"], /Mozilla/);
    assert.equal(sent.headers.authorization, undefined, "the client's key stays here");
  });

  test("stream: role, deltas, finish, [DONE]; one id and created", async () => {
    upstream.behave({ chunks: ["data: Hel\n\n", "data: lo \n\n", "data: wörld ✓\n\n"] });
    const resp = await chat(worker, { model: "gpt-4o-2024-05-13", stream: true });
    assert.equal(resp.status, 200);
    assert.equal(resp.headers.get("Content-Type"), "text/event-stream; charset=utf-8");
    assert.equal(resp.headers.get("Cache-Control"), "no-cache");
    assert.equal(resp.headers.get("X-Accel-Buffering"), "no");
    const raw = await resp.text();
    assert.equal(sseEvents(raw).at(-1), "[DONE]");
    const chunks = jsonEvents(raw);
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
    assert.equal(new Set(chunks.map((c) => c.created)).size, 1);
    assert.ok(Math.abs(chunks[0].created - Date.now() / 1000) < 10);
    for (const c of chunks) {
      assert.equal(c.object, "chat.completion.chunk");
      assert.equal(c.model, "gpt-4o-2024-05-13");
      assert.equal(c.usage, undefined);
    }
    const [first, ...rest] = chunks;
    const last = rest.pop();
    assert.deepEqual(first.choices, [
      { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
    ]);
    assert.deepEqual(
      rest.map((c) => c.choices[0].delta),
      [{ content: "Hel" }, { content: "lo " }, { content: "wörld ✓" }],
    );
    assert.ok(rest.every((c) => c.choices[0].finish_reason === null));
    assert.deepEqual(last.choices, [
      { index: 0, delta: {}, logprobs: null, finish_reason: "stop" },
    ]);
  });

  test("stream with include_usage ends with a usage chunk", async () => {
    upstream.behave({ chunks: ["data: Hi there!\n\n"] });
    const resp = await chat(worker, { stream: true, stream_options: { include_usage: true } });
    const raw = await resp.text();
    const events = sseEvents(raw);
    assert.equal(events.at(-1), "[DONE]");
    const chunks = jsonEvents(raw);
    const usage = chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.id, chunks[0].id);
    // prompt: 3 + (3 + ceil(2/4)) = 7; "Hi there!" 9 bytes -> 3.
    assert.deepEqual(usage.usage, { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
    assert.equal(chunks.at(-2).choices[0].finish_reason, "stop");
  });

  test("an empty answer still finishes properly", async () => {
    upstream.behave({ chunks: [] });
    const raw = await (await chat(worker, { stream: true })).text();
    const chunks = jsonEvents(raw);
    assert.equal(chunks.length, 2);
    assert.equal(chunks[1].choices[0].finish_reason, "stop");
    assert.equal(sseEvents(raw).at(-1), "[DONE]");
  });

  test("the first piece reaches the client before the upstream finishes", async () => {
    let release;
    const gate = new Promise((resolve) => {
      release = resolve;
    });
    upstream.behave({ chunks: ["data: first\n\n", "data:  second\n\n"], gate });
    const resp = await chat(worker, { stream: true });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let seen = "";
    while (!seen.includes('"content":"first"')) {
      const { value, done } = await reader.read();
      assert.ok(!done, "stream ended before the first piece");
      seen += decoder.decode(value, { stream: true });
    }
    assert.ok(!seen.includes("second"));
    release();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      seen += decoder.decode(r.value, { stream: true });
    }
    assert.deepEqual(contentDeltas(jsonEvents(seen)), ["first", " second"]);
  });
});

describe("shared vectors through the Worker", () => {
  for (const c of VECTORS.stream) {
    test(c.name, async () => {
      upstream.behave({ chunks: c.chunks });
      const raw = await (await chat(worker, { stream: true })).text();
      assert.equal(sseEvents(raw).at(-1), "[DONE]");
      assert.deepEqual(contentDeltas(jsonEvents(raw)), c.pieces);
      const whole = await (await chat(worker, {})).json();
      assert.equal(whole.choices[0].message.content, c.text);
    });
  }

  test("history vectors reach the upstream as expected", async () => {
    await withWorker({ AICHATS_HISTORY: "turns" }, async (turns) => {
      for (const c of VECTORS.history) {
        upstream.requests.length = 0;
        const resp = await chat(c.mode === "turns" ? turns : worker, c.request);
        const body = await resp.json();
        if (c.error) {
          assert.equal(resp.status, c.error.status, c.name);
          assertError(body, { code: c.error.code, param: c.error.param });
          assert.equal(upstream.requests.length, 0, c.name);
        } else {
          assert.equal(resp.status, 200, c.name);
          const sent = JSON.parse(upstream.requests[0].body);
          assert.deepEqual(sent.messagesHistory, c.history, c.name);
        }
      }
    });
  });
});

describe("request errors", () => {
  const cases = [
    ["not JSON", "{nope", 400, { code: "invalid_json" }],
    ["not an object", "[1]", 400, { code: "invalid_body" }],
    ["no messages", { model: "gpt-4o" }, 400, { code: "invalid_value", param: "messages" }],
    [
      "bad role",
      { model: "gpt-4o", messages: [{ role: "robot", content: "x" }] },
      400,
      { code: "invalid_value", param: "messages[0].role" },
    ],
    [
      "bad stream flag",
      { model: "gpt-4o", messages: [{ role: "user", content: "x" }], stream: "yes" },
      400,
      { code: "invalid_value", param: "stream" },
    ],
    [
      "unknown model",
      { model: "gpt-5", messages: [{ role: "user", content: "x" }] },
      404,
      { code: "model_not_found", param: "model" },
    ],
    [
      "body too large",
      { model: "gpt-4o", messages: [{ role: "user", content: "x".repeat(5000) }] },
      413,
      { code: "request_too_large" },
    ],
  ];
  for (const [name, body, status, error] of cases) {
    test(name, async () => {
      const resp = await worker.fetch("/v1/chat/completions", {
        method: "POST",
        headers: auth(),
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      assert.equal(resp.status, status);
      assertError(await resp.json(), error);
      assert.equal(upstream.requests.length, 0);
    });
  }
});

describe("upstream failures", () => {
  const upstreamError = { type: "upstream_error", code: "upstream_error" };

  test("non-2xx before the answer: 502", async () => {
    upstream.behave({ status: 500, errorBody: "boom\n  at line 1" });
    for (const stream of [false, true]) {
      const resp = await chat(worker, { stream });
      assert.equal(resp.status, 502);
      const body = await resp.json();
      assertError(body, upstreamError);
      assert.match(body.error.message, /HTTP 500: boom at line 1/);
    }
  });

  test("unreachable upstream: 502", async () => {
    await withWorker({ AICHATS_BASE_URL: "http://127.0.0.1:9" }, async (dead) => {
      const resp = await chat(dead, { stream: true });
      assert.equal(resp.status, 502);
      assertError(await resp.json(), upstreamError);
    });
  });

  test("connection dropped before any text: 502", async () => {
    upstream.behave({ chunks: [": hello\n", "data: never\n\n"], dropAfter: 1 });
    const resp = await chat(worker, { stream: true });
    assert.equal(resp.status, 502);
    assertError(await resp.json(), upstreamError);
  });

  test("connection dropped mid-stream: error event, no [DONE]", async () => {
    upstream.behave({
      chunks: ["data: one\n\n", "data: two\n\n", "data: three\n\n"],
      dropAfter: 2,
    });
    const resp = await chat(worker, { stream: true });
    assert.equal(resp.status, 200);
    const events = sseEvents(await resp.text());
    assert.ok(!events.includes("[DONE]"));
    const last = JSON.parse(events.at(-1));
    assertError(last, upstreamError);
    assert.deepEqual(contentDeltas(events.slice(0, -1).map((e) => JSON.parse(e))), ["one", "two"]);
  });

  test("connection dropped mid-answer, whole answer: 502", async () => {
    upstream.behave({ chunks: ["data: one\n\n", "data: two\n\n"], dropAfter: 1 });
    const resp = await chat(worker, {});
    assert.equal(resp.status, 502);
    assertError(await resp.json(), upstreamError);
  });

  test("upstream silent mid-stream past the idle timeout: error event", async () => {
    upstream.behave({ chunks: ["data: one\n\n", "data: two\n\n"], stallAfter: 1 });
    const resp = await chat(worker, { stream: true });
    const events = sseEvents(await resp.text());
    assert.ok(!events.includes("[DONE]"));
    assertError(JSON.parse(events.at(-1)), { type: "upstream_error", code: "upstream_timeout" });
    await upstream.closed[0]; // the Worker gave up on the upstream connection
  });

  test("no answer within the first-byte timeout: 504", async () => {
    await withWorker({ AICHAT_FIRST_BYTE_TIMEOUT: "0.3" }, async (impatient) => {
      const timeout = { type: "upstream_error", code: "upstream_timeout" };
      upstream.behave({ delayBefore: 2000 }); // no headers in time
      const resp = await chat(impatient, { stream: true });
      assert.equal(resp.status, 504);
      assertError(await resp.json(), timeout);
      upstream.behave({ stallAfter: 0 }); // headers, then no body in time
      const silent = await chat(impatient, {});
      assert.equal(silent.status, 504);
      assertError(await silent.json(), timeout);
    });
  });
});

describe("configuration", () => {
  test("no key configured: every request refused with a clear message", async () => {
    await withWorker({ APP_SECRET: undefined }, async (open) => {
      const resp = await chat(open, {}, null);
      assert.equal(resp.status, 500);
      const body = await resp.json();
      assertError(body, { type: "server_error", code: "no_api_key_configured" });
      assert.match(body.error.message, /wrangler secret put APP_SECRET/);
    });
  });

  test("AICHAT_ALLOW_NO_AUTH=1 serves without a key", async () => {
    await withWorker({ APP_SECRET: undefined, AICHAT_ALLOW_NO_AUTH: "1" }, async (open) => {
      const resp = await open.fetch("/v1/chat/completions", {
        method: "POST",
        body: JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }] }),
      });
      assert.equal(resp.status, 200);
      assert.equal((await resp.json()).choices[0].message.content, "Hello, world");
    });
  });

  test("invalid settings are named", async () => {
    const bad = { AICHATS_HISTORY: "chat", AICHATS_BASE_URL: "ftp://x", AICHAT_IDLE_TIMEOUT: "-1" };
    await withWorker(bad, async (broken) => {
      const resp = await broken.fetch("/health");
      assert.equal(resp.status, 500);
      const body = await resp.json();
      assertError(body, { type: "server_error", code: "invalid_config" });
      for (const name of Object.keys(bad)) assert.match(body.error.message, new RegExp(name));
    });
  });
});

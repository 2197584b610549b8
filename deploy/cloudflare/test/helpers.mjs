// Shared pieces of the Worker's tests: the vectors, a fake aichats upstream on 127.0.0.1,
// the Worker itself under Miniflare (workerd), and SSE parsing.

import { readFileSync } from "node:fs";
import http from "node:http";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { Miniflare } from "miniflare";

const here = new URL(".", import.meta.url);
export const ROOT = new URL("../../../", here);
export const WORKER = new URL("../worker.js", here);

export const VECTORS = JSON.parse(
  readFileSync(new URL("tests/vectors/aichats_stream.json", ROOT), "utf8"),
);

/** A vector chunk (UTF-8 text or an array of byte values) as bytes. */
export function chunkBytes(chunk) {
  return typeof chunk === "string" ? new TextEncoder().encode(chunk) : Uint8Array.from(chunk);
}

export const API_KEY = "sk-test-key-0123456789";
export const SECOND_KEY = "sk-test-second-key";

/** The compatibility date of the example wrangler.toml, so tests run what users deploy. */
export function compatibilityDate() {
  const toml = readFileSync(new URL("../wrangler.toml", here), "utf8");
  return /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)[1];
}

/**
 * A fake aichats service. `fake.behave({...})` sets how the next requests are answered:
 * chunks (vector chunks, each written and flushed on its own), status, delayBefore (ms before
 * the headers), delayBetween (ms between writes), dropAfter (cut the connection after this
 * many writes), stallAfter (after this many writes send nothing more), gate (a promise the
 * server waits for after its first write).
 */
export async function startUpstream() {
  const fake = {
    requests: [],
    closed: [], // one promise per request, resolved when its connection closes
    behaviour: {},
    behave(behaviour) {
      this.behaviour = { chunks: ["data: Hello\n\n", "data: , world\n\n"], ...behaviour };
    },
  };
  fake.behave({});
  const server = http.createServer(async (req, res) => {
    let body = "";
    for await (const part of req) body += part;
    fake.requests.push({ method: req.method, url: req.url, headers: req.headers, body });
    fake.closed.push(once(res, "close"));
    const b = fake.behaviour;
    if (b.delayBefore) await sleep(b.delayBefore);
    if (b.status && b.status !== 200) {
      res.writeHead(b.status, { "content-type": "text/plain" });
      res.end(b.errorBody ?? "upstream says no");
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.flushHeaders();
    for (const [n, chunk] of b.chunks.entries()) {
      if (n === b.dropAfter) {
        res.socket.destroy();
        return;
      }
      if (n === b.stallAfter) return; // never ends; the test's cleanup closes the socket
      if (res.destroyed) return;
      res.write(chunkBytes(chunk));
      if (n === 0 && b.gate) await b.gate;
      await sleep(b.delayBetween ?? 1);
    }
    if (b.dropAfter === b.chunks.length) res.socket.destroy();
    else res.end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  fake.url = `http://127.0.0.1:${server.address().port}`;
  fake.close = async () => {
    server.closeAllConnections();
    server.close();
    await once(server, "close");
  };
  return fake;
}

/** The Worker running in workerd (via Miniflare) with `bindings` as its environment. */
export async function startWorker(bindings) {
  const mf = new Miniflare({
    modules: true,
    scriptPath: WORKER.pathname,
    compatibilityDate: compatibilityDate(),
    bindings,
  });
  await mf.ready;
  return {
    mf,
    fetch: (path, init = {}) => mf.dispatchFetch(`http://worker.test${path}`, init),
    close: () => mf.dispose(),
  };
}

/** Headers with the test key, and JSON content type when there is a body. */
export function auth(key = API_KEY, extra = {}) {
  return { Authorization: `Bearer ${key}`, "Content-Type": "application/json", ...extra };
}

/** POST a chat completion request as JSON. */
export function chat(worker, body, key = API_KEY) {
  return worker.fetch("/v1/chat/completions", {
    method: "POST",
    headers: auth(key),
    body: JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }], ...body }),
  });
}

/** The `data:` payloads of an SSE body, checking the framing on the way. */
export function sseEvents(raw) {
  if (!raw.endsWith("\n\n")) throw new Error(`SSE body does not end with a blank line: ${raw}`);
  return raw
    .slice(0, -2)
    .split("\n\n")
    .map((block) => {
      if (!block.startsWith("data: ")) throw new Error(`not a data event: ${block}`);
      return block.slice(6);
    });
}

/** The JSON events of an SSE body, without a final [DONE]. */
export function jsonEvents(raw) {
  return sseEvents(raw)
    .filter((event) => event !== "[DONE]")
    .map((event) => JSON.parse(event));
}

/** The content deltas of streamed chunks, in order (the role chunk's "" excluded). */
export function contentDeltas(chunks) {
  return chunks
    .filter((c) => c.choices?.length && c.choices[0].delta.content && !c.choices[0].delta.role)
    .map((c) => c.choices[0].delta.content);
}

// The Worker's fetch handler called directly under Node (its fetch, streams and crypto are
// the same web APIs), for what Miniflare cannot show: local workerd notices a client that
// went away only at its next write, so a client leaving during an upstream silence is seen
// here, where cancelling the response body reaches the Worker's stream at once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import worker from "../worker.js";
import { API_KEY, auth, startUpstream } from "./helpers.mjs";

let upstream;
let env;

before(async () => {
  upstream = await startUpstream();
  env = { APP_SECRET: API_KEY, AICHATS_BASE_URL: upstream.url, AICHAT_IDLE_TIMEOUT: "30" };
});

after(() => upstream?.close());

function post(body) {
  return worker.fetch(
    new Request("http://worker.test/v1/chat/completions", {
      method: "POST",
      headers: auth(),
      body: JSON.stringify({
        model: "gpt-4o",
        messages: [{ role: "user", content: "Hi" }],
        ...body,
      }),
    }),
    env,
  );
}

test("a client that leaves stops the upstream download at once", async () => {
  upstream.behave({ chunks: ["data: one\n\n", "data: two\n\n"], stallAfter: 1 });
  const resp = await post({ stream: true });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  while (!seen.includes('"content":"one"')) seen += decoder.decode((await reader.read()).value);
  await reader.cancel();
  const outlived = sleep(5000, "the upstream connection outlived the client", { ref: false });
  assert.equal(
    await Promise.race([upstream.closed.at(-1).then(() => "closed"), outlived]),
    "closed",
  );
});

test("the same answer as under workerd", async () => {
  upstream.behave({ chunks: ["data: Hel", "lo\n\ndata: ", "w\u00f6rld trylimit\n\n"] });
  const body = await (await post({})).json();
  assert.equal(body.choices[0].message.content, "Hellowörld");
  assert.equal(body.usage.completion_tokens, 3);
});

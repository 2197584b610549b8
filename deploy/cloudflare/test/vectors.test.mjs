// The shared vectors (tests/vectors/aichats_stream.json) against the Worker's pure helpers;
// tests/unit/test_vectors.py checks the same file against the Python gateway.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ApiError,
  LineSplitter,
  buildHistory,
  concatBytes,
  estimateTokens,
  estimateUsage,
  lineText,
  parseChatRequest,
} from "../worker.js";
import { VECTORS, chunkBytes } from "./helpers.mjs";

/** What the Worker makes of these reads: the non-empty answer pieces. */
function pieces(reads) {
  const splitter = new LineSplitter();
  const lines = reads.flatMap((read) => splitter.feed(read));
  lines.push(...splitter.flush());
  return lines.map(lineText).filter(Boolean);
}

function joined(chunks) {
  return concatBytes(chunks.map(chunkBytes));
}

describe("stream vectors", () => {
  for (const c of VECTORS.stream) {
    test(c.name, () => {
      const got = pieces(c.chunks.map(chunkBytes));
      assert.deepEqual(got, c.pieces);
      assert.equal(got.join(""), c.text);
    });

    test(`${c.name} (any reads)`, () => {
      const body = joined(c.chunks);
      const oneByteReads = Array.from(body, (_, i) => body.subarray(i, i + 1));
      assert.deepEqual(pieces(oneByteReads), c.pieces);
      for (let cut = 1; cut < body.length; cut++) {
        assert.deepEqual(
          pieces([body.subarray(0, cut), body.subarray(cut)]),
          c.pieces,
          `cut ${cut}`,
        );
      }
    });
  }
});

describe("history vectors", () => {
  for (const c of VECTORS.history) {
    test(c.name, () => {
      const request = parseChatRequest({ model: "gpt-4o", ...structuredClone(c.request) });
      if (!c.error) {
        assert.deepEqual(buildHistory(request, c.mode), c.history);
        return;
      }
      assert.throws(
        () => buildHistory(request, c.mode),
        (err) =>
          err instanceof ApiError &&
          err.status === c.error.status &&
          err.code === c.error.code &&
          err.param === c.error.param,
      );
    });
  }
});

describe("usage vectors", () => {
  for (const c of VECTORS.usage) {
    test(c.name, () => {
      const request = parseChatRequest({ model: "gpt-4o", ...structuredClone(c.request) });
      const usage = estimateUsage(request, c.answer);
      assert.deepEqual(usage, {
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
        total_tokens: c.prompt_tokens + c.completion_tokens,
      });
      assert.equal(estimateTokens(c.answer), c.completion_tokens);
    });
  }
});

"""Discovered models: the names they are served by and the windows their upstreams state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aichat.answer.discovery import (
    Listed,
    ListingFailed,
    ollama_window,
    read_listing,
    readable_name,
)

LLAMA_PATH = "/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    ("model_id", "aliases", "name"),
    [
        (LLAMA_PATH, [LLAMA_PATH], "SmolLM2-135M-Instruct.Q4_1"),
        ("v/lib/python3.11/site-packages/x/Tiny.GGUF", [], "Tiny"),  # relative, any case
        (r"C:\models\qwen2.5-7b.gguf", [], "qwen2.5-7b"),
        ("./models/phi", [], "phi"),
        ("/models/Llama-3.1-8B", [], "Llama-3.1-8B"),  # vLLM serving a directory
        (LLAMA_PATH, [LLAMA_PATH, "smol"], "smol"),  # an alias the upstream reports
        ("smol", ["smol", "tiny"], "smol"),  # llama.cpp with an alias lists it as the id
        ("meta-llama/Llama-3.1-8B-Instruct", [], "meta-llama/Llama-3.1-8B-Instruct"),
        ("llama3.1:8b", [], "llama3.1:8b"),  # Ollama
        ("/", [], "/"),  # nothing left of a path: the id as it is
    ],
)
def test_a_file_path_is_served_by_its_file_name_and_an_alias_wins(
    model_id: str, aliases: list[str], name: str
) -> None:
    assert readable_name(model_id, aliases) == name


def _listed(data: list[dict[str, Any]]) -> tuple[Listed, ...]:
    return read_listing(json.dumps({"object": "list", "data": data}).encode())


def test_windows_are_read_from_llamacpp_and_vllm_listings() -> None:
    listed = _listed(
        [
            {"id": LLAMA_PATH, "aliases": [LLAMA_PATH], "meta": {"n_ctx": 4096}},
            {"id": "Qwen/Qwen2.5-7B", "object": "model", "max_model_len": 32768},
            {"id": "plain", "object": "model"},
            {"id": "odd", "max_model_len": True, "meta": {"n_ctx": -1}},
            {"id": "huge", "max_model_len": 10**12},
        ]
    )
    assert [(m.id, m.name, m.window) for m in listed] == [
        (LLAMA_PATH, "SmolLM2-135M-Instruct.Q4_1", 4096),
        ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B", 32768),
        ("plain", "plain", None),
        ("odd", "odd", None),
        ("huge", "huge", None),  # past MAX_CONTEXT_WINDOW: not believed
    ]


def test_two_files_of_one_name_keep_both_reachable() -> None:
    listed = _listed([{"id": "/a/m.gguf"}, {"id": "/b/m.gguf"}, {"id": "/a/m.gguf"}, {"id": 7}])
    assert [(m.id, m.name) for m in listed] == [("/a/m.gguf", "m"), ("/b/m.gguf", "/b/m.gguf")]


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"data": 1}', b"not json"])
def test_a_listing_without_a_data_list_is_refused(body: bytes) -> None:
    with pytest.raises(ListingFailed):
        read_listing(body)


@pytest.mark.parametrize(
    ("show", "window"),
    [
        (
            {
                "parameters": 'num_ctx 8192\nstop "<|eot_id|>"',
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            },
            8192,
        ),
        (  # a model file asking for more than the model holds gets the model's own
            {
                "parameters": "num_ctx 65536",
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
            },
            32768,
        ),
        (  # no num_ctx: Ollama's server decides, and does not say
            {
                "parameters": 'stop "<|im_end|>"',
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            },
            None,
        ),
        ({"model_info": {"general.architecture": "llama"}}, None),
        ({"parameters": "num_ctx 4096"}, 4096),
        ([], None),
    ],
)
def test_ollama_states_the_num_ctx_of_the_model_file(show: Any, window: int | None) -> None:
    assert ollama_window(show) == window

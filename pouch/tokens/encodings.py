"""Loading tiktoken's encodings without a network, and the model names that tokenizers match.

tiktoken downloads its rank files on first use, and gateway hosts often have no route to
OpenAI's blob store. pouch ships the two files that matter in ``data/`` and builds the encodings
from them. A user who set ``TIKTOKEN_CACHE_DIR`` (or ``DATA_GYM_CACHE_DIR``) chose how tiktoken
finds its files, so then tiktoken loads them its own way; the shipped copy is only the fallback
when that fails (say, an empty cache and no network). pouch never sets those variables itself.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import types
from pathlib import Path

import tiktoken
from tiktoken_ext import openai_public

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
SHIPPED = ("o200k_base", "cl100k_base")


def _shipped_ranks(url: str, expected_hash: str) -> dict[bytes, int]:
    """Stands in for tiktoken's ``load_tiktoken_bpe``: the same ranks, read from ``data/``.

    Parsed here rather than by ``load_tiktoken_bpe(path)``, which would also copy the file into
    tiktoken's temp-dir cache on every new install path.
    """
    path = DATA_DIR / hashlib.sha1(url.encode()).hexdigest()  # tiktoken's cache file name
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise RuntimeError(f"{path} is damaged: its sha256 is not tiktoken's {expected_hash}")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def load_shipped(name: str) -> tiktoken.Encoding:
    """Build encoding ``name`` from the files shipped with pouch; never touches the network."""
    if name not in SHIPPED:
        raise LookupError(f"pouch ships no {name} tokenizer (it has {', '.join(SHIPPED)})")
    # tiktoken_ext defines each encoding (pattern, special tokens, file URL, sha256) in one
    # function that also downloads the file. Running a copy of that function whose
    # load_tiktoken_bpe is ours keeps tiktoken's own definitions without patching anything global.
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]
    offline = types.FunctionType(
        constructor.__code__, {**vars(openai_public), "load_tiktoken_bpe": _shipped_ranks}
    )
    return tiktoken.Encoding(**offline())


def load_encoding(name: str) -> tiktoken.Encoding:
    """Build encoding ``name``: tiktoken's way if the user configured its cache, else shipped."""
    if "TIKTOKEN_CACHE_DIR" in os.environ or "DATA_GYM_CACHE_DIR" in os.environ:
        try:
            return tiktoken.get_encoding(name)
        except Exception as e:  # requests, OS and hash errors alike: the shipped copy is identical
            log.warning("tiktoken could not load %s (%s); using the copy shipped with pouch", name, e)
    return load_shipped(name)


_loaded: dict[str, tiktoken.Encoding] = {}
_loading = threading.Lock()


def get_encoding(name: str) -> tiktoken.Encoding:
    """Encoding ``name``, built once per process on first use (~0.5 s for o200k_base).

    Call it at start-up to keep that off the first request.
    """
    encoding = _loaded.get(name)
    if encoding is None:
        with _loading:  # two threads must not both spend the load time and memory
            encoding = _loaded.get(name)
            if encoding is None:
                encoding = _loaded[name] = load_encoding(name)
    return encoding


def canonical_model(model: str) -> str:
    """The name model families are matched on: "openai/gpt-4o" -> "gpt-4o", "ft:gpt-4o:org::x"
    -> "gpt-4o:org::x"."""
    if not isinstance(model, str):
        raise ValueError(f"model must be a string, not {type(model).__name__}")
    return model.strip().lower().rsplit("/", 1)[-1].removeprefix("ft:")

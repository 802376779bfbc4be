"""Which ops of a LiteRT artifact run int8 and which stay float, and which run on the XNNPACK
delegate and which fall back to LiteRT's own kernels (issue 17, item 3: why an int8 artifact does
not pay). A static census of the interpreter's ops by type and input dtype, the QUANTIZE/DEQUANTIZE
pairs the float ops force around the int8 ones, and the delegate partitions after one run.

    python benchmarks/bench_litert_ops.py ARTIFACT_DIR_OR_TFLITE [...]

Prints one table per model file and, as the last line, one JSON object
({file: {"ops", "int8_ops", "float_ops", "quantize", "dequantize", "by_type", "partitions",
"on_delegate", "fallback"}}).
"""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Q_OPS = ("QUANTIZE", "DEQUANTIZE")


def census(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    by_type: collections.Counter = collections.Counter()
    for op in it._get_ops_details():  # the interpreter's op list (no public equivalent)
        if op["op_name"] == "DELEGATE":
            continue
        ins = [i for i in op["inputs"] if i >= 0 and i in tensors]
        dtype = tensors[ins[0]]["dtype"].__name__ if ins else "-"
        by_type[f"{op['op_name']} {dtype}"] += 1
    int8 = sum(n for k, n in by_type.items() if k.endswith(("int8", "uint8")) and not k.startswith(Q_OPS))
    quant = {q: sum(n for k, n in by_type.items() if k.startswith(q + " ")) for q in Q_OPS}
    total = sum(by_type.values())
    return {"ops": total, "int8_ops": int8, "float_ops": total - int8 - sum(quant.values()),
            "quantize": quant["QUANTIZE"], "dequantize": quant["DEQUANTIZE"], "by_type": dict(by_type.most_common())}


def delegation(path: Path, threads: int = 1) -> dict:
    """Ops on the XNNPACK delegate and ops left to LiteRT's kernels, after one run on zeros
    (``export.targets.litert.xnnpack_split``): {"partitions", "on_delegate", "fallback"}."""
    from ai_edge_litert.interpreter import Interpreter

    from export.targets.litert import xnnpack_split

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    it.invoke()
    split = xnnpack_split(it)
    return {"partitions": split["partitions"], "on_delegate": split["on_delegate"], "fallback": split["fallback_ops"]}


def main() -> None:
    out = {}
    for arg in sys.argv[1:]:
        p = Path(arg)
        path = p / "model.tflite" if p.is_dir() else p
        c = {**census(path), **delegation(path)}
        out[str(path)] = c
        print(f"\n{path}: {c['ops']} ops, {c['int8_ops']} int8, {c['float_ops']} float, "
              f"{c['quantize']} QUANTIZE + {c['dequantize']} DEQUANTIZE; XNNPACK: {c['on_delegate']} ops in "
              f"{c['partitions']} partitions, fallback {sum(c['fallback'].values())}: "
              + ", ".join(f"{k} {n}" for k, n in c["fallback"].items()))
        print("| op | input dtype | count |\n|---|---|---|")
        for k, n in list(c["by_type"].items())[:15]:
            name, dtype = k.rsplit(" ", 1)
            print(f"| {name} | {dtype} | {n} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""The verdict table: one row per requested artifact (exported, refused or errored), as text.

    model | target | precision | size | MB | PSNR rnd | PSNR real | task ΔdB | min dB | verdict | s | note
"""
from __future__ import annotations

from pathlib import Path

COLUMNS = ("model", "target", "precision", "size", "MB", "PSNR rnd", "PSNR real", "task ΔdB", "min dB", "verdict",
           "s", "note")


def exported_row(req, final: Path, manifest: dict, parity: dict, seconds: float) -> dict:
    def worst(set_name):
        outs = parity.get("sets", {}).get(set_name) or {}
        ps = [e["psnr"] for e in outs.values()]
        return None if not ps or any(p is None for p in ps) else min(ps)
    task = parity.get("task") or {}
    return {"model": req.model, "variant": req.variant, "target": req.target, "precision": req.precision,
            "size": req.size, "status": "exported", "path": str(final), "bytes": manifest["artifact_bytes"],
            "psnr_random": worst("random"), "psnr_realistic": worst("realistic"),
            "task_delta_db": task.get("delta_db"), "task_float_db": task.get("float_psnr_db"),
            "task_quant_db": task.get("quantised_psnr_db"), "threshold": parity["threshold_db"],
            "verdict": parity["verdict"], "reason": parity.get("reason") or "; ".join(parity.get("failures", [])),
            "seconds": round(seconds, 1)}


def refused_row(model: str, variant: str, target: str, precision: str, reason: str) -> dict:
    """A combination skipped under ``--target all``."""
    return {"model": model, "variant": variant, "target": target, "precision": precision,
            "status": "refused", "verdict": "refused", "reason": reason}


def error_row(req, exc: Exception) -> dict:
    """A conversion that failed (no artifact written)."""
    return {"model": req.model, "variant": req.variant, "target": req.target, "precision": req.precision,
            "size": req.size, "status": "error", "verdict": "error", "reason": str(exc)}


def failed(rows: list[dict]) -> bool:
    return any(r["verdict"] in ("fail", "error") for r in rows)


def report_rows(rows: list[dict]) -> list[list[str]]:
    def db(x):
        return "-" if x is None else f"{x:.1f}"
    out = []
    for r in rows:
        out.append([f"{r['model']}-{r.get('variant', '')}", r["target"], r["precision"], r.get("size", "-"),
                    f"{r['bytes'] / 1e6:.2f}" if r.get("bytes") else "-", db(r.get("psnr_random")),
                    db(r.get("psnr_realistic")), db(r.get("task_delta_db")), db(r.get("threshold")),
                    r["verdict"].upper(), str(r.get("seconds", "-")), r.get("reason") or ""])
    return out


def report_text(rows: list[dict]) -> str:
    table = [list(COLUMNS)] + report_rows(rows)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row_ in table:
        lines.append(" | ".join(str(c).ljust(wd) for c, wd in zip(row_, widths)) + " | " + row_[-1])
    lines.insert(1, "-+-".join("-" * wd for wd in widths) + "-+-")
    return "\n".join(lines)

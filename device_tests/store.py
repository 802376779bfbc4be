"""The results store: one SQLite file of latency and parity rows, per device, with regression flags.

Every row records device, model, variant, target, precision, size, threads, tool versions,
artifact sha256 and date (plus the figures). A new row is compared with the previous row of the
same *series* (kind, device, model, variant, target, precision, size, threads): slower by more
than ``margin`` (median), or a parity PSNR lower by more than ``margin_db``, is flagged, and the
flag says whether the artifact or the tool versions changed in between (a new export, a new
runtime) or not (the device itself).
"""
from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from core.errors import UserError

MARGIN = 0.10  # a median slower by more than 10 % is a regression
MARGIN_DB = 1.0  # a parity PSNR lower by more than 1 dB is a regression
SERIES = ("kind", "device", "model", "variant", "target", "precision", "size", "threads")
COLUMNS = {
    "id": "INTEGER PRIMARY KEY AUTOINCREMENT", "kind": "TEXT NOT NULL", "device": "TEXT NOT NULL",
    "model": "TEXT", "variant": "TEXT", "target": "TEXT", "precision": "TEXT", "size": "TEXT",
    "threads": "INTEGER NOT NULL DEFAULT 0", "tool_versions": "TEXT", "artifact_sha256": "TEXT", "date": "TEXT",
    "runtime": "TEXT", "source": "TEXT", "median_ms": "REAL", "p90_ms": "REAL", "min_ms": "REAL",
    "first_ms": "REAL", "runs": "INTEGER", "seconds": "REAL", "peak_mem_mb": "REAL", "delegate": "TEXT",
    "artifact_bytes": "INTEGER", "psnr_db": "REAL", "verdict": "TEXT", "regressions": "TEXT", "extra": "TEXT",
}


class StoreError(UserError):
    """A results store that cannot be opened or is not one."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating) the store; StoreError naming the file when it is not a results store."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path)
        con.row_factory = sqlite3.Row
        cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
        have = {r[1] for r in con.execute("PRAGMA table_info(results)")}
        missing = set(COLUMNS) - have
        if missing:
            con.close()
            raise StoreError(f"{path}: table 'results' lacks columns {sorted(missing)} (not a results store)")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a results store ({exc})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot open ({exc.strerror or exc})") from None
    return con


def regressions(prev: dict | None, row: dict, margin: float = MARGIN, margin_db: float = MARGIN_DB) -> list[str]:
    """Flags for ``row`` against the previous row of its series (empty when none or no regression)."""
    if prev is None:
        return []
    why = []
    if prev.get("artifact_sha256") != row.get("artifact_sha256"):
        why.append("artifact changed")
    if prev.get("tool_versions") != row.get("tool_versions"):
        why.append("tool versions changed")
    cause = f" ({', '.join(why)})" if why else " (same artifact and tools)"
    label = f"{row['model']} {row['target']} {row['precision']} {row['size']} on {row['device']}"
    flags = []
    if row.get("median_ms") is not None and prev.get("median_ms"):
        ratio = row["median_ms"] / prev["median_ms"]
        if ratio > 1 + margin:
            flags.append(f"{label}, {row['threads']} thread(s): median {row['median_ms']:.2f} ms vs "
                         f"{prev['median_ms']:.2f} ms on {prev['date']} (+{(ratio - 1) * 100:.0f} % > "
                         f"{margin * 100:.0f} %){cause}")
    if row.get("psnr_db") is not None and prev.get("psnr_db") is not None:
        if row["psnr_db"] < prev["psnr_db"] - margin_db:
            flags.append(f"{label}: parity {row['psnr_db']:.2f} dB vs {prev['psnr_db']:.2f} dB on {prev['date']} "
                         f"(lower by more than {margin_db:g} dB){cause}")
    return flags


def add(path: str | Path, row: dict, margin: float = MARGIN, margin_db: float = MARGIN_DB) -> dict:
    """Insert ``row`` (keys of COLUMNS; dicts as JSON) with its regression flags; returns it with ``id``."""
    row = {k: v for k, v in row.items() if k in COLUMNS and k != "id"}
    row.setdefault("date", _now())
    row["threads"] = int(row.get("threads") or 0)
    for k in ("tool_versions", "extra"):
        if isinstance(row.get(k), (dict, list)):
            row[k] = json.dumps(row[k], sort_keys=True)
    with closing(connect(path)) as con, con:
        where = " AND ".join(f"{k} IS ?" for k in SERIES)
        prev = con.execute(f"SELECT * FROM results WHERE {where} ORDER BY id DESC LIMIT 1",
                           [row.get(k) for k in SERIES]).fetchone()
        flags = regressions(dict(prev) if prev else None, row, margin, margin_db)
        row["regressions"] = json.dumps(flags)
        keys = list(row)
        cur = con.execute(f"INSERT INTO results ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                          [row[k] for k in keys])
        row["id"] = cur.lastrowid
    row["regressions"] = flags
    return row


def rows(path: str | Path, kind: str | None = None) -> list[dict]:
    """Every row (oldest first), JSON columns decoded."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no results store (run `cli.py bench` or `parity check --device` first)")
    with closing(connect(path)) as con:
        q = "SELECT * FROM results" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        out = [dict(r) for r in con.execute(q, [kind] if kind else [])]
    for r in out:
        for k in ("tool_versions", "extra", "regressions"):
            if r.get(k):
                try:
                    r[k] = json.loads(r[k])
                except json.JSONDecodeError:
                    pass
    return out


def add_parity(path: str | Path, res: dict, margin_db: float = MARGIN_DB) -> dict:
    """A ``parity check`` result as a row (kind ``parity``; PSNR = the worst output's)."""
    a = res["artifact"]
    h, w = a["size"]
    return add(path, {"kind": "parity", "device": res["device"], "model": a["model"], "variant": a["variant"],
                      "target": a["target"], "precision": a["precision"], "size": f"{h}x{w}", "threads": 0,
                      "tool_versions": (res.get("run") or {}).get("tool_versions") or {},
                      "artifact_sha256": a.get("artifact_sha256"), "runtime": (res.get("run") or {}).get("runtime"),
                      "source": res["outputs"], "psnr_db": res["worst_psnr_db"], "verdict": res["verdict"],
                      "artifact_bytes": a.get("artifact_bytes"),
                      "extra": {"faults": res["faults"], "verdicts": res["verdicts"], "task": res.get("task")}},
               margin_db=margin_db)

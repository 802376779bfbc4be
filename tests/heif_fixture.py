"""Real HEIC files with a depth item, for the reader tests (pillow-heif cannot write depth items).

The primary image and the depth image are HEVC-encoded by pillow-heif (libheif/x265); this
helper takes their coded data and properties out of the files pillow-heif wrote and assembles a
new HEIF container (ISO/IEC 23008-12) around them: item 1 the primary, item 2 the depth image
(``auxC`` urn:mpeg:hevc:2015:auxid:2, ``auxl`` reference to item 1), optionally item 3 an XMP
``mime`` item describing item 2 (``cdsc``), as Apple's portrait HEICs carry it.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from runtime_py.captures.heif_boxes import boxes, item_data

DEPTH_URN = b"urn:mpeg:hevc:2015:auxid:2"


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def _child(data, start, end, kind):
    return next(((s, e) for k, s, e in boxes(data, start, end) if k == kind), None)


def coded_item(heic: bytes) -> tuple[bytes, list[bytes]]:
    """(coded data of the primary item, its property boxes as bytes) from a file pillow-heif wrote."""
    ms, me = _child(heic, 0, len(heic), b"meta")
    ms += 4
    ipr = _child(heic, ms, me, b"iprp")
    ipco = _child(heic, *ipr, b"ipco")
    props = [heic[s - 8:e] for _, s, e in boxes(heic, *ipco)]
    s, e = _child(heic, *ipr, b"ipma")
    flags = int.from_bytes(heic[s + 1:s + 4], "big")
    count, pos = struct.unpack(">I", heic[s + 4:s + 8])[0], s + 8
    pitm = _child(heic, ms, me, b"pitm")
    primary = struct.unpack(">H", heic[pitm[0] + 4:pitm[0] + 6])[0]
    mine = []
    for _ in range(count):
        item, n = struct.unpack(">HB", heic[pos:pos + 3])
        pos += 3
        for _ in range(n):
            if flags & 1:
                index, pos = struct.unpack(">H", heic[pos:pos + 2])[0] & 0x7FFF, pos + 2
            else:
                index, pos = heic[pos] & 0x7F, pos + 1
            if item == primary:
                mine.append(props[index - 1])
    return item_data(heic, primary), mine


def hevc(image: np.ndarray, mode: str) -> bytes:
    import pillow_heif

    h, w = image.shape[:2]
    buf = io.BytesIO()
    pillow_heif.from_bytes(mode, (w, h), np.ascontiguousarray(image).tobytes()).save(buf, format="HEIF", quality=95)
    return buf.getvalue()


def heic_with_depth(rgb: np.ndarray, depth_codes: np.ndarray | None, *, xmp: bytes | None = None,
                    depth_type: bytes = b"hvc1", depth_payload: bytes | None = None) -> bytes:
    """A HEIC: ``rgb`` (uint8 HxWx3) as the primary, ``depth_codes`` (uint8 hxw) as an HEVC depth
    item, or ``depth_type``/``depth_payload`` for a depth item of another kind (e.g. ``unci``
    with raw bytes, which the decoder may not support); ``xmp`` describes the depth item."""
    p_data, p_props = coded_item(hevc(rgb, "RGB"))
    if depth_codes is not None:
        d_data, d_props = coded_item(hevc(depth_codes, "L"))  # monochrome HEVC, as depth items are
    else:
        h, w = rgb.shape[:2]
        d_data = depth_payload or bytes(w * h)
        d_props = [full_box(b"ispe", struct.pack(">II", w, h))]
    props = p_props + d_props + [full_box(b"auxC", DEPTH_URN + b"\0")]
    n_p, n_d = len(p_props), len(d_props)
    items = [(1, b"hvc1", b"", p_data), (2, depth_type, b"", d_data)]
    if xmp is not None:
        items.append((3, b"mime", b"application/rdf+xml\0", xmp))
    infe = b"".join(full_box(b"infe", struct.pack(">HH4s", i, 0, t) + b"\0" + extra, version=2)
                    for i, t, extra, _ in items)
    iinf = full_box(b"iinf", struct.pack(">H", len(items)) + infe)
    refs = box(b"auxl", struct.pack(">HHH", 2, 1, 1))
    if xmp is not None:
        refs += box(b"cdsc", struct.pack(">HHH", 3, 1, 2))
    iref = full_box(b"iref", refs)
    assoc = [(1, list(range(1, n_p + 1))), (2, list(range(n_p + 1, n_p + n_d + 2)))]
    ipma = full_box(b"ipma", struct.pack(">I", len(assoc)) + b"".join(
        struct.pack(">HB", i, len(ix)) + bytes(0x80 | k for k in ix) for i, ix in assoc))
    iprp = box(b"iprp", box(b"ipco", b"".join(props)) + ipma)
    hdlr = full_box(b"hdlr", struct.pack(">I4s12x", 0, b"pict") + b"\0")
    pitm = full_box(b"pitm", struct.pack(">H", 1))
    ftyp = box(b"ftyp", b"heic" + struct.pack(">I", 0) + b"mif1heic")

    def meta(offsets):
        entries = b"".join(struct.pack(">HHHII", i, 0, 1, off, len(d)) for (i, _, _, d), off in zip(items, offsets))
        iloc = full_box(b"iloc", bytes([0x44, 0x00]) + struct.pack(">H", len(items)) + entries)
        return full_box(b"meta", hdlr + pitm + iloc + iinf + iref + iprp)

    start = len(ftyp) + len(meta([0] * len(items))) + 8  # mdat payload
    offsets, pos = [], start
    for *_, d in items:
        offsets.append(pos)
        pos += len(d)
    return ftyp + meta(offsets) + box(b"mdat", b"".join(d for *_, d in items))

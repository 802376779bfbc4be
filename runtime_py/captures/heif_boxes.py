"""The item table of a HEIF file (ISO/IEC 23008-12 on ISOBMFF boxes), read without decoding:
which items exist, their types and auxiliary types. ``read_heic`` uses it to say that a depth
item is there even when the decoder does not deliver it (an item type libheif cannot decode)."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

DEPTH_AUX_TYPES = ("urn:mpeg:hevc:2015:auxid:2", "urn:mpeg:mpegB:cicp:systems:auxiliary:depth")
CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0, b"iinf": None, b"iref": 4}  # header bytes before children


@dataclass
class Item:
    id: int
    type: str
    aux_type: str | None = None
    references: dict = field(default_factory=dict)  # reference type -> [item ids]

    @property
    def is_depth(self) -> bool:
        return self.aux_type in DEPTH_AUX_TYPES


def boxes(data: bytes, start: int = 0, end: int | None = None):
    """(type, payload start, box end) of consecutive boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes):
    return next(((s, e) for k, s, e in boxes(data, start, end) if k == kind), None)


def heif_items(data: bytes) -> dict[int, Item]:
    """Items of the file's top-level ``meta`` box by id (empty when there is none or it is
    malformed: this is a report, never a reason to refuse a file the decoder opened)."""
    try:
        return _items(data)
    except (struct.error, IndexError, UnicodeDecodeError):
        return {}


def _items(data: bytes) -> dict[int, Item]:
    meta = _child(data, 0, len(data), b"meta")
    if meta is None:
        return {}
    ms, me = meta[0] + 4, meta[1]  # FullBox: version + flags
    items: dict[int, Item] = {}
    iinf = _child(data, ms, me, b"iinf")
    if iinf:
        s, e = iinf
        version = data[s]
        first = s + 4 + (2 if version == 0 else 4)
        for kind, ps, pe in boxes(data, first, e):
            if kind != b"infe" or data[ps] < 2:
                continue
            v = data[ps]
            if v == 2:
                item_id, off = struct.unpack(">H", data[ps + 4:ps + 6])[0], ps + 6
            else:
                item_id, off = struct.unpack(">I", data[ps + 4:ps + 8])[0], ps + 8
            items[item_id] = Item(item_id, data[off + 2:off + 6].decode("latin-1"))
    iprp = _child(data, ms, me, b"iprp")
    if iprp:
        ipco = _child(data, iprp[0], iprp[1], b"ipco")
        props = [(k, s, e) for k, s, e in boxes(data, *ipco)] if ipco else []
        for kind, s, e in boxes(data, *iprp):
            if kind != b"ipma":
                continue
            version, flags = data[s], int.from_bytes(data[s + 1:s + 4], "big")
            count, pos = struct.unpack(">I", data[s + 4:s + 8])[0], s + 8
            for _ in range(count):
                if version < 1:
                    item_id, pos = struct.unpack(">H", data[pos:pos + 2])[0], pos + 2
                else:
                    item_id, pos = struct.unpack(">I", data[pos:pos + 4])[0], pos + 4
                n, pos = data[pos], pos + 1
                for _ in range(n):
                    if flags & 1:
                        index, pos = struct.unpack(">H", data[pos:pos + 2])[0] & 0x7FFF, pos + 2
                    else:
                        index, pos = data[pos] & 0x7F, pos + 1
                    if 0 < index <= len(props) and props[index - 1][0] == b"auxC" and item_id in items:
                        _, ps, pe = props[index - 1]
                        items[item_id].aux_type = data[ps + 4:pe].split(b"\0")[0].decode("utf-8")
    iref = _child(data, ms, me, b"iref")
    if iref:
        wide = data[iref[0]] == 1
        for kind, s, e in boxes(data, iref[0] + 4, iref[1]):
            fmt, step = (">I", 4) if wide else (">H", 2)
            src = struct.unpack(fmt, data[s:s + step])[0]
            n = struct.unpack(">H", data[s + step:s + step + 2])[0]
            to = [struct.unpack(fmt, data[s + step + 2 + i * step:s + step + 2 + (i + 1) * step])[0] for i in range(n)]
            if src in items:
                items[src].references.setdefault(kind.decode("latin-1"), []).extend(to)
    return items


def depth_items(data: bytes) -> list[Item]:
    """Items whose auxiliary type is depth (``auxC`` urn:mpeg:hevc:2015:auxid:2 or the MPEG-B depth urn)."""
    return [item for item in heif_items(data).values() if item.is_depth]


def item_locations(data: bytes) -> dict[int, list[tuple[int, int]]]:
    """(file offset, length) extents of each item from ``iloc`` (construction method 0, file
    offsets; 1, offsets into ``idat``). Empty when absent or malformed."""
    try:
        return _locations(data)
    except (struct.error, IndexError):
        return {}


def _uint(data: bytes, pos: int, size: int) -> tuple[int, int]:
    return (int.from_bytes(data[pos:pos + size], "big") if size else 0), pos + size


def _locations(data: bytes) -> dict[int, list[tuple[int, int]]]:
    meta = _child(data, 0, len(data), b"meta")
    if meta is None:
        return {}
    ms, me = meta[0] + 4, meta[1]
    iloc, idat = _child(data, ms, me, b"iloc"), _child(data, ms, me, b"idat")
    if iloc is None:
        return {}
    s = iloc[0]
    version = data[s]
    off_size, len_size = data[s + 4] >> 4, data[s + 4] & 15
    base_size, index_size = data[s + 5] >> 4, (data[s + 5] & 15) if version in (1, 2) else 0
    count, pos = _uint(data, s + 6, 2 if version < 2 else 4)
    out: dict[int, list[tuple[int, int]]] = {}
    for _ in range(count):
        item_id, pos = _uint(data, pos, 2 if version < 2 else 4)
        method = 0
        if version in (1, 2):
            method, pos = _uint(data, pos, 2)
            method &= 15
        _, pos = _uint(data, pos, 2)  # data_reference_index
        base, pos = _uint(data, pos, base_size)
        n, pos = _uint(data, pos, 2)
        extents = []
        for _ in range(n):
            _, pos = _uint(data, pos, index_size)
            offset, pos = _uint(data, pos, off_size)
            length, pos = _uint(data, pos, len_size)
            start = base + offset + (idat[0] if method == 1 and idat else 0)
            extents.append((start, length))
        out[item_id] = extents
    return out


def item_data(data: bytes, item_id: int) -> bytes | None:
    """An item's bytes (its extents joined), or None when ``iloc`` does not place it in the file."""
    extents = item_locations(data).get(item_id)
    if not extents or any(s + n > len(data) for s, n in extents):
        return None
    return b"".join(data[s:s + (n or len(data) - s)] for s, n in extents)


def xmp_of(data: bytes, item_id: int) -> bytes | None:
    """The XMP packet (a ``mime`` item whose ``cdsc`` reference points at ``item_id``), if any."""
    items = heif_items(data)
    for item in items.values():
        if item.type == "mime" and item_id in item.references.get("cdsc", []):
            blob = item_data(data, item.id)
            if blob and b"xmpmeta" in blob:
                return blob
    return None

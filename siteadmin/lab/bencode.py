"""Minimal bencoding (BEP 3) for .torrent files and tracker answers."""

from __future__ import annotations

from typing import Any


def encode(value: Any) -> bytes:
    """Bencode ints, bytes, str, lists and dicts (keys sorted as the spec requires)."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(encode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    kind = data[pos : pos + 1]
    if kind == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if kind == b"l":
        pos += 1
        items = []
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if kind == b"d":
        pos += 1
        table = {}
        while data[pos : pos + 1] != b"e":
            key, pos = _decode(data, pos)
            table[key], pos = _decode(data, pos)
        return table, pos + 1
    if kind.isdigit():
        colon = data.index(b":", pos)
        length = int(data[pos:colon])
        return data[colon + 1 : colon + 1 + length], colon + 1 + length
    raise ValueError(f"bad bencoding at byte {pos}")


def decode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings stay bytes.

    Raises:
        ValueError: on malformed or trailing data.
    """
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not bencoded data: {exc}") from None
    if end != len(data):
        raise ValueError("trailing data after bencoded value")
    return value

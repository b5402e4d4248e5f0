"""Reading score responses in tests."""

from __future__ import annotations


def component(body: dict, cid: str) -> dict:
    return next(c for g in body["groups"] for c in g["components"] if c["id"] == cid)


def group(body: dict, code: str) -> dict:
    return next(g for g in body["groups"] if g["code"] == code)


def close(a, b, tolerance: float = 0.01) -> bool:
    """Within the portal's published precision (2 decimals)."""
    return abs(float(a) - float(b)) <= tolerance + 1e-9


def chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]

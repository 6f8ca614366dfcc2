"""Redis bytes per scope of a key prefix, whatever the layout: MEMORY USAGE of the keys of
up to ``sample`` learners (their scopes' strings and histories, and their stats hashes
where the layout has them) over their number of scopes. Used by bench/stream.py and
bench/backfill.py, for this tree and an earlier one alike."""

from __future__ import annotations

from typing import Any


def bytes_per_scope(client: Any, prefix: str, sample: int = 2000) -> float:
    head = prefix.encode()
    scopes: dict[bytes, list[bytes]] = {}  # a learner's hash tag -> their scope keys
    for key in client.scan_iter(match=f"{prefix}:{{u*", count=10_000):
        if key.endswith(b":history"):
            continue
        tag = key[len(head) + 1 :].split(b":", 1)[0]
        if tag not in scopes and len(scopes) >= sample:
            continue
        scopes.setdefault(tag, []).append(key)
    total = 0
    for tag, keys in scopes.items():
        total += client.memory_usage(head + b":stats:" + tag, samples=0) or 0
        for key in keys:
            total += client.memory_usage(key, samples=0) or 0
            total += client.memory_usage(key + b":history", samples=0) or 0
    count = sum(map(len, scopes.values()))
    return total / count if count else 0.0

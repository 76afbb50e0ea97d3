"""Messages cut to fit a table cell, a log line or a column: at a word boundary, with an ellipsis.

A reason cut in the middle of a word reads as another word (`the account does not exi`), and
an operator acts on what they read. Written here by hand, not with `textwrap.shorten`: that one
gives back nothing but the placeholder when the first word alone is too long (a URL, a path).
"""

from __future__ import annotations

__all__ = ["clip", "ELLIPSIS"]

ELLIPSIS = "…"


def clip(text: str | None, limit: int) -> str:
    """`text` on one line and at most `limit` characters: whole words, then `…` when cut. Only a
    single word longer than half the room is cut inside, and the ellipsis shows it."""
    flat = " ".join((text or "").split())
    if len(flat) <= limit:
        return flat
    room = flat[:max(limit - len(ELLIPSIS), 1)]
    space = room.rfind(" ")
    if space >= len(room) // 2:
        room = room[:space]
    return room.rstrip(" ,;:-(") + ELLIPSIS

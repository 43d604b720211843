"""Wording shared by the console messages of every layer above the model."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """'1 image', '3 images', '2 label PNGs', '1 problem'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

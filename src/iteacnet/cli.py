"""Command-line interface (thin: parses, then calls data, training and evaluation)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("iteacnet: CLI under construction")

"""Node: lionagi's everyday element, with ``content`` and an optional ``embedding``."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import field_validator

from lionstore.domain.element import Element

__all__ = ["Node"]


class Node(Element):
    """An element carrying arbitrary ``content`` and an optional numeric ``embedding``.

    ``embedding`` accepts a list of numbers or a JSON string of one; each value is
    stored as a float. Anything else is a ValueError (a pydantic ValidationError).
    """

    content: Any = None
    embedding: list[float] | None = None

    @field_validator("embedding", mode="before")
    @classmethod
    def _parse_embedding(cls, value: Any) -> list[float] | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("Invalid embedding string: not JSON") from None
            if not isinstance(value, list):
                raise ValueError("Invalid embedding string: not a JSON list")
        if not isinstance(value, (list, tuple)):
            raise ValueError(
                f"Invalid embedding type {type(value).__name__}: "
                "expected a list of numbers or a JSON string of one"
            )
        out: list[float] = []
        for x in value:
            if isinstance(x, bool) or not isinstance(x, (int, float, str)):
                raise ValueError(f"Invalid embedding value {x!r}: not a number")
            try:
                f = float(x)
            except ValueError:
                raise ValueError(f"Invalid embedding value {x!r}: not a number") from None
            if not math.isfinite(f):
                raise ValueError(f"Invalid embedding value {x!r}: not finite")
            out.append(f)
        return out

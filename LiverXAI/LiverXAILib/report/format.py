"""Formatting helpers of the HTML report: escaping, numbers, tables, badges.

Every value may be missing or of the wrong type: a ``None`` or anything unusable shows as
"n/a", and every string is escaped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NA = "n/a"
CLASS_DISPLAY = {"liver": "Liver", "tumor": "Tumour"}


def esc(value: Any) -> str:
    """Escaped text of any value; None → n/a."""
    return NA if value is None else html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    shown = number(value)
    if shown is None:
        return esc(value) if isinstance(value, str) and value else NA
    return f"{shown:,.{digits}f}{unit}"


def percent(value: Any, digits: int = 0) -> str:
    shown = number(value)
    return NA if shown is None else f"{100 * shown:.{digits}f}&nbsp;%"


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def at(values: Sequence[Any], index: int) -> Any:
    return values[index] if index < len(values) else None


def words(key: str) -> str:
    """camelCase or snake_case key → 'Words like this'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(key)).replace("_", " ").strip()
    return spaced[:1].upper() + spaced[1:].lower() if spaced else NA


def class_name(value: Any) -> str:
    return CLASS_DISPLAY.get(value, esc(value)) if isinstance(value, str) else esc(value)


def table(head: Iterable[str], rows: Iterable[str], css: str = "") -> str:
    header = "".join(head)
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def th(text: str, numeric: bool = False) -> str:
    return f'<th class="num">{text}</th>' if numeric else f"<th>{text}</th>"


def td(text: str, numeric: bool = False) -> str:
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def fails(sanity: Any) -> bool:
    return isinstance(sanity, str) and sanity.strip().upper().startswith("FAILS")


def sanity_badge(sanity: Any) -> str:
    """FAILS (red) or OK (green, only for a text starting with 'pass') and the sanity text."""
    if fails(sanity):
        detail = re.sub(r"^\s*FAILS[\s:,-]*", "", str(sanity), flags=re.IGNORECASE)
        return f'<span class="badge bad">FAILS</span> {esc(detail)}'
    if isinstance(sanity, str) and sanity.strip().lower().startswith("pass"):
        return f'<span class="badge ok">OK</span> {esc(sanity)}'
    return esc(sanity) if sanity else NA


def method_labels(quality: Mapping[str, Any]) -> dict[str, str]:
    methods = mapping(quality.get("methods"))
    return {str(key): str(mapping(info).get("label") or key) for key, info in methods.items()}

"""Requirement lines (``monai>=1.3``): parsed, read from a requirements file, and compared with
an installed version, with ``packaging`` where Python has it (Slicer's own ``pip_ensure``, in
Slicer 5.11 and later, is built on it) and a small fallback for release numbers otherwise.
Used by ``dependencies``; nothing here imports torch or Slicer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

try:  # packaging is in Slicer's Python (Slicer's pip_ensure uses it); fall back if absent.
    from packaging.markers import InvalidMarker, Marker
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as _PackagingRequirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    _USE_PACKAGING = True
except ImportError:  # pragma: no cover - exercised by forcing _USE_PACKAGING off in the tests
    _USE_PACKAGING = False

REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"


_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$")
_CLAUSE = re.compile(r"\s*(===|~=|==|!=|<=|>=|<|>)\s*([^\s,]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One requirement line: ``name``, version ``specifier`` (``">=1.3"``, or ``""``), marker."""

    text: str
    name: str
    specifier: str = ""
    marker: str | None = None

    def applies(self) -> bool:
        """Whether the environment marker (``; sys_platform == 'win32'``) holds here."""
        if self.marker is None:
            return True
        if _USE_PACKAGING:
            return Marker(self.marker).evaluate()
        return True  # without packaging a marker cannot be evaluated: assume it applies

    def accepts(self, version: str) -> bool:
        """Whether an installed ``version`` satisfies the specifier (pre-releases count)."""
        if not self.specifier:
            return True
        if _USE_PACKAGING:
            try:
                return SpecifierSet(self.specifier).contains(Version(version), prereleases=True)
            except InvalidVersion:
                pass
        return _simple_accepts(self.specifier, version)

    def __str__(self) -> str:
        return self.text


def parse_requirement(text: str) -> Requirement:
    """``"monai>=1.3"`` -> :class:`Requirement`; ``ValueError`` if it is not a requirement."""
    text = text.strip()
    if _USE_PACKAGING:
        try:
            parsed = _PackagingRequirement(text)
        except (InvalidRequirement, InvalidMarker) as error:
            raise ValueError(f"not a requirement: {text!r} ({error})") from None
        marker = str(parsed.marker) if parsed.marker is not None else None
        return Requirement(text, parsed.name, str(parsed.specifier), marker)
    requirement, _, marker = text.partition(";")
    match = _NAME.match(requirement)
    specifier = match.group(3).strip().strip("()") if match else ""
    clauses = [c for c in specifier.split(",") if c.strip()] if specifier else []
    if not match or not all(_CLAUSE.match(c) for c in clauses):
        raise ValueError(f"not a requirement: {text!r}")
    normalized = ",".join(re.sub(r"\s+", "", c) for c in clauses)
    return Requirement(text, match.group(1), normalized, marker.strip() or None)


def read_requirements(path: str | os.PathLike = REQUIREMENTS_FILE) -> list[Requirement]:
    """The requirements of a requirements file, as pip reads them: comments (``#`` at the start
    of a line, or after a space), blank lines and option lines (``-c``, ``--index-url``) skipped."""
    requirements = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirements.append(parse_requirement(line))
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
    return requirements


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def _simple_accepts(specifier: str, version: str) -> bool:
    """Release-number comparison for when packaging is unavailable or a version is not
    PEP 440 (pre-release, post-release and local labels are ignored)."""
    installed = _release(version)
    for clause in specifier.split(","):
        match = _CLAUSE.match(clause)
        if not match:
            return False
        operator, wanted = match.groups()
        if operator in ("==", "!=") and wanted.endswith(".*"):
            prefix = _release(wanted[:-2])
            equal = installed[: len(prefix)] == prefix
            ok = equal if operator == "==" else not equal
        elif operator == "~=":
            bound = _release(wanted)
            prefix = bound[:-1]
            ok = _compare(installed, bound) >= 0 and installed[: len(prefix)] == prefix
        else:
            order = _compare(installed, _release(wanted))
            ok = {
                "==": order == 0,
                "===": version.strip() == wanted,
                "!=": order != 0,
                ">=": order >= 0,
                "<=": order <= 0,
                ">": order > 0,
                "<": order < 0,
            }[operator]
        if not ok:
            return False
    return True


def _valid_version(version: str) -> bool:
    """Whether pip accepts ``version`` in a ``name==version`` pin (PEP 440)."""
    if _USE_PACKAGING:
        try:
            Version(version)
            return True
        except InvalidVersion:
            return False
    return re.fullmatch(r"\d+(\.\d+)*(\+[A-Za-z0-9.]+)?", version) is not None


def packaging_requirements(requirements: list[str]) -> list:
    """The requirements as ``packaging`` objects where packaging is available (Slicer's
    ``pip_ensure`` of the 5.11 previews takes no strings), else as they are."""
    return [_PackagingRequirement(r) for r in requirements] if _USE_PACKAGING else requirements

"""Argparse types and option parsers of ``train``, ``crossval`` and ``evaluate``.

Nothing here imports torch: ``--help`` must answer at once. Every value is checked by the
same ``option_problem`` as the Training module's options and the trainer's config.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from ..training.options import option_problem, parse_augmentations


def checked(option: str, convert: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then refuse what ``option_problem`` refuses."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        problem = option_problem(option, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = option
    return parse


def choices(values: tuple) -> str:
    """The choices as a metavar: ``{a,b,c}``."""
    return "{" + ",".join(str(value) for value in values) + "}"


def floats(text: str) -> tuple[float, ...]:
    """Numbers separated by commas."""
    return tuple(float(v) for v in text.split(","))


def augmentations(text: str) -> tuple[str, ...]:
    """An argparse type: the augmentations of ``--augment`` (``none`` for none)."""
    try:
        return parse_augmentations(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: give at least {minimum}")
        return value

    return parse


def folds(text: str) -> list[str] | None:
    """The patients of ``--folds``, in order without repeats; None for all."""
    if text.strip().lower() in ("", "all"):
        return None
    return list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


def architecture_options(pairs: list[str]) -> dict:
    """The ``--arch-option KEY=VALUE`` pairs as keyword arguments (JSON values, else text)."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise InputError(f"--arch-option {pair!r}: use KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options

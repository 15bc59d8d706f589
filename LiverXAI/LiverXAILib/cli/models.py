"""``python -m LiverXAILib models``: list, download and import catalog models from a shell.

The same catalog functions as the module's model list, Download and Import model… buttons,
for headless machines and offline sites.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_models_parser(commands: Any) -> None:
    """Add the ``models`` command (``list``, ``download NAME``, ``import FILE``)."""
    models = commands.add_parser(
        "models",
        help="list, download or import models of the catalog",
        description="Bundled models, downloadable ones (verified by SHA-256, cached) and your "
        "own (~/.liverxai/models or $LIVERXAI_MODELS_DIR).",
    )
    actions = models.add_subparsers(dest="models_action", required=True)
    actions.add_parser(
        "list",
        help="every model: name, source, available, SHA-256 (and why your own catalog cannot "
        "be read, if it cannot)",
    )
    download = actions.add_parser("download", help="download a listed model and verify it")
    download.add_argument("name")
    imported = actions.add_parser("import", help="add a model file you were given")
    imported.add_argument("file", type=Path)
    imported.add_argument("--name", default=None, help="model name (default: from the file)")


def _progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def format_catalog(entries: list[dict[str, Any]]) -> str:
    """One line per model: name, source, whether its file is here, architecture, SHA-256."""
    rows = [("name", "source", "available", "architecture", "sha256")]
    rows += [
        (
            e["name"],
            e["source"],
            "yes" if e["available"] else "no",
            e.get("architecture", ""),
            e["sha256"],
        )
        for e in entries
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run_models(args: argparse.Namespace) -> None:
    """Carry out ``models list | download | import``."""
    from ..models.catalog import read_catalog, user_catalog_problem
    from ..models.download import download_model, import_model

    if args.models_action == "list":
        print(format_catalog(read_catalog(warn=False)))
        problem = user_catalog_problem()
        if problem is not None:
            print(f"warning: {problem}", file=sys.stderr)
    elif args.models_action == "download":
        path = download_model(args.name, progress=_progress)
        print(f"{args.name}: {path} (SHA-256 verified)")
    elif args.models_action == "import":
        entry = import_model(args.file, name=args.name)
        print(f"{entry['name']}: {entry['path']} (SHA-256 {entry['sha256']})")

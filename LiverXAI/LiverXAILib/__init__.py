"""LiverXAI core library: segment liver and liver tumours in CT and explain the result.

Importable without Slicer; ``python -m LiverXAILib`` runs it from a shell. The subpackages name
the parts: ``models``, ``segment``, ``explain``, ``io``, ``report``, ``slicer`` (the only one
that touches Slicer, MRML or VTK), ``batch``, ``training``, ``evaluation`` and ``cli``.

The public surface below is imported on first use, so ``import LiverXAILib`` stays instant
(and works on an older Slicer, which only needs to be told that it is too old).
"""

__version__ = "0.1.0"

PUBLIC = {
    "SegmentAndExplainOptions": "options",
    "LiverXAILogic": "slicer.logic",
    "SegmentAndExplainResult": "slicer.results",
    "create_headless_application": "slicer.headless",
    "run_pipeline": "segment.pipeline",
    "PipelineResult": "segment.pipeline",
    "process_files": "batch.runner",
    "load_checkpoint": "models.checkpoints",
    "TrainConfig": "training.trainer",
    "train": "training.trainer",
    "evaluate_models": "evaluation.evaluate",
}
__all__ = ["__version__", *PUBLIC]


def __getattr__(name):
    """Import a public name from its subpackage on first use."""
    if name not in PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *PUBLIC])

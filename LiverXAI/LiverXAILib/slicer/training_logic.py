"""The Training module's logic: training and evaluation runs for a scene, and their curves.

:class:`LiverXAITrainingLogic` starts the trainer or the evaluation as a
:class:`~LiverXAILib.training.process.ChildProcess`, passes its events on and updates the loss
and Dice curves (``training_plots``) as epoch events arrive. Nothing here imports Qt, and
slicer only when no scene is given, so the whole logic runs in tests on the slicer-core wheel.

Before a run starts, the packages the trainer needs (torch, MONAI ...) are checked
(``dependencies.check``): a missing one is refused with its name rather than a child process
that dies with "No module named torch". The Training module installs them first, after asking
(``dependency_flow``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..training.options import TrainingOptions, build_evaluate_command, build_train_command
from ..training.process import STOP_FILE_NAME, ChildProcess, wait_for_event
from ..training.progress import as_float, as_int
from .dependencies import DependencyError, DependencyPlan, check

TRAIN_LOG_NAME = "train.log"
EVALUATE_LOG_NAME = "evaluate.log"


def slicer_python() -> str:
    """Slicer's Python interpreter (PythonSlicer), which has torch and LiverXAILib's needs;
    outside Slicer, this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    beside = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(beside) if beside.is_file() else sys.executable


class LiverXAITrainingLogic:
    """Training and evaluation runs for a scene; every button of the module calls into it.

    ``scene`` defaults to ``slicer.mrmlScene``; ``python`` is the interpreter for the child
    (in Slicer: PythonSlicer). One run at a time: a training or an evaluation.
    ``packageCheck`` returns the ``dependencies.check()`` plan of the child's packages.
    """

    def __init__(
        self,
        scene: Any = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
        stop_grace_seconds: float = 120.0,
        packageCheck: Callable[[], DependencyPlan] = check,
    ) -> None:
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        from .training_plots import TrainingPlots

        self.scene = scene
        self.python = python or sys.executable
        self.env = env
        self.stop_grace_seconds = stop_grace_seconds
        self.packageCheck = packageCheck
        self.plots = TrainingPlots(scene)
        self.training: ChildProcess | None = None
        self.evaluation: ChildProcess | None = None
        self.trainingOptions: TrainingOptions | None = None
        self.evaluationOutput: Path | None = None
        self._previousHistory: list[dict[str, Any]] = []

    # State ----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a run has not delivered its exit event through ``poll()``."""
        return any(run is not None and not run.finished for run in (self.training, self.evaluation))

    @property
    def trainingRunning(self) -> bool:
        return self.training is not None and not self.training.finished

    @property
    def evaluationRunning(self) -> bool:
        return self.evaluation is not None and not self.evaluation.finished

    @property
    def currentRun(self) -> ChildProcess | None:
        """The running process, else the one that finished last."""
        runs = [run for run in (self.training, self.evaluation) if run is not None]
        active = [run for run in runs if not run.finished]
        if active:
            return active[0]
        return max(runs, key=lambda run: run.started_at) if runs else None

    @property
    def history(self) -> list[dict[str, Any]]:
        """Epoch records shown in the curves: earlier ones (on resume), then this run's."""
        current = self.training.history if self.training is not None else []
        byEpoch = {record.get("epoch"): record for record in self._previousHistory + current}
        # a resumed epoch replaces its earlier record
        return sorted(byEpoch.values(), key=lambda record: as_int(record.get("epoch"), 0))

    @staticmethod
    def bestCheckpoint(outputFolder: str | Path) -> Path | None:
        """``OUT/best.pt`` if training has written it."""
        path = Path(outputFolder) / "best.pt"
        return path if str(outputFolder).strip() and path.is_file() else None

    # Training ---------------------------------------------------------------------------------
    def startTraining(self, options: TrainingOptions) -> ChildProcess:
        """Validate ``options`` and start the trainer; returns the running child process.

        A bad option raises ``ValueError`` before anything starts, with the message the
        ``train`` command gives for it (both use ``training_options.option_problem``).
        """
        self._refuseWhileBusy()
        options.validate()
        self._requirePackages("Training")
        out = Path(options.out)
        out.mkdir(parents=True, exist_ok=True)
        stopFile = out / STOP_FILE_NAME
        stopFile.unlink(missing_ok=True)  # a STOP left by an earlier run would end this one at once
        self._previousHistory = read_history_csv(out / "history.csv") if options.resume else []
        self.plots.update(self._previousHistory)
        self.trainingOptions = options
        self.training = self._startChild(
            build_train_command(options, self.python), "train", stopFile, out / TRAIN_LOG_NAME
        )
        return self.training

    def stopTraining(self, wait: bool = False, timeout: float = 60.0) -> int | None:
        """Ask the trainer to stop after its current step; with ``wait``, wait for its exit."""
        return self._stopChild(self.training, wait, timeout)

    # Evaluation ---------------------------------------------------------------------------------
    def startEvaluation(
        self,
        models: str | Path | Sequence[str | Path],
        data: str | Path,
        out: str | Path,
        split: str | Path | None = None,
        part: str | None = "test",
        device: str = "auto",
    ) -> ChildProcess:
        """Start ``evaluate`` for ``models`` on ``data``; the tables land in ``out``."""
        self._refuseWhileBusy()
        if not str(data).strip() or not Path(data).exists():
            raise ValueError(f"Evaluation data not found: {data}")
        if split is not None and not Path(split).is_file():
            raise ValueError(f"Split file not found: {split}")
        self._requirePackages("The evaluation")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.evaluationOutput = out
        self.evaluation = self._startChild(
            build_evaluate_command(models, data, out, split, part, device, self.python),
            "evaluate",
            None,
            out / EVALUATE_LOG_NAME,
        )
        return self.evaluation

    def stopEvaluation(self, wait: bool = False, timeout: float = 10.0) -> int | None:
        """End a running evaluation (it has nothing to save)."""
        return self._stopChild(self.evaluation, wait, timeout)

    @staticmethod
    def readMetricsTable(outputFolder: str | Path) -> str:
        """The evaluation's ``metrics.md`` (a markdown table) from ``outputFolder``."""
        path = Path(outputFolder) / "metrics.md"
        if not path.is_file():
            raise FileNotFoundError(
                f"No evaluation results in {outputFolder} (metrics.md missing)."
            )
        return path.read_text(encoding="utf-8")

    @staticmethod
    def readMetricsRows(outputFolder: str | Path) -> list[dict[str, str]]:
        """The rows of the evaluation's ``metrics.csv`` (one per model), as dicts of strings."""
        import csv

        path = Path(outputFolder) / "metrics.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"No evaluation results in {outputFolder} (metrics.csv missing)."
            )
        with open(path, newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))

    # Starting and stopping a child process --------------------------------------------------
    def _requirePackages(self, what: str) -> None:
        plan = self.packageCheck()
        if not plan.satisfied:
            raise DependencyError(
                f"{what} cannot start. {plan.summary()}. The Training module installs them "
                "after asking (Train or Evaluate)."
            )

    def _refuseWhileBusy(self) -> None:
        if self.busy:
            raise RuntimeError("A training or evaluation run is still in progress; stop it first.")

    def _startChild(
        self, command: list[str], label: str, stopFile: Path | None, logPath: Path
    ) -> ChildProcess:
        return ChildProcess(
            command,
            stop_file=stopFile,
            label=label,
            env=self.env,
            log_path=logPath,
            stop_grace_seconds=self.stop_grace_seconds,
        )

    @staticmethod
    def _stopChild(run: ChildProcess | None, wait: bool, timeout: float) -> int | None:
        """Request a stop (returns at once), or with ``wait`` stop and wait for the exit status."""
        if run is None:
            return None
        if wait:
            return run.stop(timeout=timeout)
        run.request_stop()
        return run.returncode

    # Events -------------------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """New events of the running processes (tagged with ``"source"``); updates the curves."""
        events = []
        for run in (self.training, self.evaluation):
            if run is not None and not run.finished:
                events += run.poll()
        if any(e["event"] == "epoch" and e.get("source") == "train" for e in events):
            self.plots.update(self.history)
        return events

    def waitFor(
        self,
        names: Iterable[str],
        timeout: float,
        interval: float = 0.1,
        idle: Callable[[], None] | None = None,
    ) -> dict[str, Any] | None:
        """Poll (updating the curves) until an event of ``names`` arrives or the runs finish."""
        return wait_for_event(
            self.poll, lambda: not self.busy, names, timeout, interval=interval, idle=idle
        )

    def cleanup(self, timeout: float = 10.0) -> None:
        """Stop whatever still runs (clean stop first); called when the module is closed."""
        for run in (self.training, self.evaluation):
            if run is not None and run.running:
                run.stop(timeout=timeout)


def read_history_csv(path: str | Path) -> list[dict[str, Any]]:
    """Epoch records of an earlier run from ``OUT/history.csv`` (numbers parsed; [] if none).

    The trainer writes one row per epoch with the keys of its epoch events, so the records can
    be plotted like the events of the running process.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            record: dict[str, Any] = {"event": "epoch"}
            for key, value in row.items():
                if key is None:
                    continue
                number = as_float(value)
                record[key] = value if number is None else number
            if as_float(record.get("epoch")) is not None:
                record["epoch"] = int(record["epoch"])
                records.append(record)
    return records

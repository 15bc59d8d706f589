"""Run the trainer (or the evaluation) as a child process and read its JSON-line events.

The Training module never trains inside Slicer's own process: it starts
``python -m LiverXAILib train ...`` with Slicer's Python (PythonSlicer), so the user interface
stays responsive and a crash of the trainer cannot take Slicer down. The child prints one JSON
object per line on stdout, each with an ``"event"`` key; a reader thread parses them into a
queue and :meth:`ChildProcess.poll` hands them over without ever blocking.

Stopping is cooperative: :meth:`ChildProcess.request_stop` creates ``OUT/STOP``, the trainer
finishes its current step, prints ``{"event": "stopped"}`` and exits 0 (``OUT/last.pt`` holds
the last finished epoch; ``--resume`` continues). Only when it does not exit in time is it
terminated (SIGTERM, itself a clean stop on POSIX), then killed.

:class:`LiverXAITrainingLogic` ties this to a scene: it updates the loss and Dice curves
(``training_plots``) as epoch events arrive. Nothing here imports Qt, and slicer only when no
scene is given, so the whole logic runs in tests on the slicer-core wheel.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

LIBRARY_PARENT = Path(__file__).resolve().parents[1]  # the folder that contains LiverXAILib

# Used only when the networks cannot be imported (torch missing); the trainer is the authority.
FALLBACK_ARCHITECTURES = ("unet", "vunet", "resunet", "multiresunet", "dcunet", "transunet")
AUGMENTATIONS = ("rotate", "flip", "zoom", "noise", "intensity")
INPUT_SIZES = (128, 256)
SLICE_COUNTS = (1, 3, 5)
LOSSES = ("dicece", "ce")
SCHEDULES = ("none", "step", "cosine")
DEVICES = ("auto", "cuda", "cpu")
EVALUATION_PARTS = ("test", "validation", "train", "all")

STOP_FILE_NAME = "STOP"
TRAIN_LOG_NAME = "train.log"
EVALUATE_LOG_NAME = "evaluate.log"
EXIT_EVENT = "exit"  # added by ChildProcess when the child has exited; not printed by it


def available_architectures() -> list[str]:
    """Architecture names the trainer accepts (the network registry; a fallback without torch)."""
    if importlib.util.find_spec("torch") is not None:
        try:
            from .networks import available_models

            return list(available_models())
        except Exception:  # a broken torch install must not break the module's user interface
            pass
    return list(FALLBACK_ARCHITECTURES)


def format_duration(seconds: float | None) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"`` or ``"42 s"``; empty for unknown."""
    if seconds is None or not seconds == seconds or seconds < 0:  # None or NaN
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# --- commands --------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainingOptions:
    """Everything the ``train`` command takes; field names follow its options."""

    data: str | Path
    out: str | Path
    arch: str = "unet"
    epochs: int = 50
    size: int = 128
    slices: int = 1
    loss: str = "dicece"
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "none"
    patience: int = 15
    augment: Sequence[str] = ("rotate", "zoom", "noise", "intensity")  # empty: no augmentation
    keep_empty: float = 0.2
    device: str = "auto"
    cache: str | Path | None = None
    register: str | None = None  # catalog name for best.pt; None: not registered
    resume: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` with a message for the user if an option cannot work."""
        problems = []
        if not str(self.data).strip():
            problems.append("Choose the training data: a LiTS or MSD folder, or a CSV file.")
        elif not Path(self.data).exists():
            problems.append(f"Training data not found: {self.data}")
        if not str(self.out).strip():
            problems.append("Choose an output folder.")
        elif Path(self.out).exists() and not Path(self.out).is_dir():
            problems.append(f"The output folder is a file: {self.out}")
        if not str(self.arch).strip():
            problems.append("Choose an architecture.")
        for name, value, allowed in (
            ("input size", self.size, INPUT_SIZES),
            ("slices", self.slices, SLICE_COUNTS),
            ("loss", self.loss, LOSSES),
            ("schedule", self.schedule, SCHEDULES),
            ("device", self.device, DEVICES),
        ):
            if value not in allowed:
                problems.append(f"Unknown {name} {value!r}; choose one of {list(allowed)}.")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            problems.append(f"Unknown augmentation {unknown}; choose from {list(AUGMENTATIONS)}.")
        if self.epochs < 1:
            problems.append("Train for at least one epoch.")
        if self.batch_size < 1:
            problems.append("The batch size must be at least 1.")
        if not self.lr > 0:
            problems.append("The learning rate must be positive.")
        if self.patience < 1:
            problems.append("The patience must be at least one epoch.")
        if not 0 <= self.keep_empty <= 1:
            problems.append("The fraction of slices without liver must lie in [0, 1].")
        if self.register is not None:
            problems += _model_name_problems(self.register)
        if self.resume and str(self.out).strip() and not (Path(self.out) / "last.pt").is_file():
            problems.append(f"Nothing to resume: {Path(self.out) / 'last.pt'} does not exist.")
        if problems:
            raise ValueError("\n".join(problems))


MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # what catalog.register_model accepts


def _model_name_problems(name: str) -> list[str]:
    from .catalog import CATALOG, read_catalog

    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        return [
            f"Model name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        ]
    if any(entry["name"] == name for entry in read_catalog(CATALOG)):
        return [f"Model name {name!r} belongs to a bundled model; choose another."]
    return []


def default_model_name(out: str | Path) -> str:
    """A valid catalog name from the output folder's name (``runs/LiTS U-Net`` → ``LiTS-U-Net``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(out).strip()).name).strip("-._")[:64]
    return name or "liverxai-model"


def build_train_command(options: TrainingOptions, python: str = sys.executable) -> list[str]:
    """The ``python -m LiverXAILib train ...`` command line; every option is passed explicitly."""
    augment = [a for a in AUGMENTATIONS if a in set(options.augment)]
    command = [
        python,
        "-m",
        "LiverXAILib",
        "train",
        "--data",
        str(options.data),
        "--arch",
        options.arch,
        "--epochs",
        str(options.epochs),
        "--out",
        str(options.out),
        "--size",
        str(options.size),
        "--slices",
        str(options.slices),
        "--loss",
        options.loss,
        "--batch-size",
        str(options.batch_size),
        "--lr",
        repr(float(options.lr)),
        "--schedule",
        options.schedule,
        "--patience",
        str(options.patience),
        "--augment",
        ",".join(augment) if augment else "none",
        "--keep-empty",
        repr(float(options.keep_empty)),
        "--device",
        options.device,
    ]
    if options.cache is not None and str(options.cache).strip():
        command += ["--cache", str(options.cache)]
    if options.register is not None:
        command += ["--register", options.register]
    if options.resume:
        command.append("--resume")
    return command


def build_evaluate_command(
    models: str | Path | Sequence[str | Path],
    data: str | Path,
    out: str | Path,
    split: str | Path | None = None,
    part: str | None = None,
    device: str = "auto",
    python: str = sys.executable,
) -> list[str]:
    """The ``python -m LiverXAILib evaluate ...`` command line (one ``--model`` per model)."""
    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise ValueError("Choose at least one model to evaluate.")
    if part is not None and part not in EVALUATION_PARTS:
        raise ValueError(f"Unknown part {part!r}; choose one of {list(EVALUATION_PARTS)}.")
    if device not in DEVICES:
        raise ValueError(f"Unknown device {device!r}; choose one of {list(DEVICES)}.")
    command = [python, "-m", "LiverXAILib", "evaluate"]
    for model in models:
        command += ["--model", str(model)]
    command += ["--data", str(data), "--out", str(out)]
    if split is not None:
        command += ["--split", str(split)]
        if part is not None:
            command += ["--part", part]
    command += ["--device", device]
    return command


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with LiverXAILib importable, unbuffered."""
    environment = dict(os.environ if base is None else base)
    paths = [str(LIBRARY_PARENT)]
    paths += [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    environment.setdefault("PYTHONIOENCODING", "utf-8")
    return environment


def parse_event_line(line: str) -> dict[str, Any] | None:
    """The event of one stdout line, or None for a line that is not a JSON event object."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("event"), str):
        return value
    return None


# --- progress --------------------------------------------------------------------------------
@dataclasses.dataclass
class Progress:
    """What a progress bar and a status line show, updated event by event."""

    fraction: float = 0.0
    message: str = "Starting…"
    phase: str = "starting"
    epoch: int | None = None  # last finished epoch, counted from 0
    epochs: int | None = None
    eta_seconds: float | None = None

    def update(self, event: dict[str, Any]) -> None:
        """Fold one event (trainer, evaluation or the runner's exit event) into the state."""
        kind = event.get("event")
        if kind == "start":
            self.phase, self.fraction = "starting", 0.0
            self.epochs = _int(event.get("epochs"), self.epochs)
            self.message = f"Starting {event.get('arch', '')} on {event.get('device', '?')}…"
        elif kind == "split":
            counts = [len(event.get(part) or []) for part in ("train", "validation", "test")]
            self.message = "Cases: {} training, {} validation, {} test.".format(*counts)
        elif kind == "cache":
            self.phase = "data"
            index, total = _int(event.get("index"), 0), max(_int(event.get("total"), 1), 1)
            self.fraction = min((index + 1) / total, 1.0)
            verb = "Read cached" if event.get("cached") else "Preparing"
            self.message = f"{verb} case {event.get('case', '')} ({index + 1}/{total})…"
        elif kind == "data":
            self.phase, self.fraction = "training", 0.0
            self.message = (
                f"{event.get('train_slices', '?')} training and "
                f"{event.get('validation_slices', '?')} validation slices ready."
            )
        elif kind == "step":
            self.phase = "training"
            epoch, epochs = _int(event.get("epoch"), 0), self.epochs or 1
            # "step" is the number of steps done in this epoch (1 … steps)
            step, steps = _int(event.get("step"), 0), max(_int(event.get("steps"), 1), 1)
            step = min(max(step, 0), steps)
            self.fraction = min((epoch + step / steps) / epochs, 1.0)
            self.eta_seconds = _float(event.get("eta_seconds"))
            self.message = (
                f"Epoch {epoch + 1}/{epochs}, step {step}/{steps}, "
                f"loss {_number(event.get('loss'))}" + self._eta(" in this epoch")
            )
        elif kind == "epoch":
            self.phase = "training"
            self.epoch = _int(event.get("epoch"), 0)
            self.epochs = _int(event.get("epochs"), self.epochs) or self.epoch + 1
            self.fraction = min((self.epoch + 1) / self.epochs, 1.0)
            self.eta_seconds = _float(event.get("eta_seconds"))
            best = " (best so far)" if event.get("improved") else ""
            self.message = (
                f"Epoch {self.epoch + 1}/{self.epochs}: loss {_number(event.get('loss'))}, "
                f"validation Dice liver {_number(event.get('val_liver_dice'))}, "
                f"tumour {_number(event.get('val_tumor_dice'))}{best}" + self._eta()
            )
        elif kind == "early_stop":
            self.phase, self.fraction = "finished", 1.0
            self.message = (
                f"Stopped early after epoch {_int(event.get('epoch'), 0) + 1}: no improvement "
                f"(best score {_number(event.get('best_score'))})."
            )
        elif kind == "resume":
            self.message = f"Resuming at epoch {_int(event.get('epoch'), 0) + 1}…"
        elif kind == "stopped":
            self.phase = "stopped"
            self.message = (
                f"Stopped in epoch {_int(event.get('epoch'), 0) + 1}. last.pt keeps the epochs "
                "finished before it; Train with Resume continues."
            )
        elif kind == "case":
            self.phase = "evaluating"
            index, total = _int(event.get("index"), 0), max(_int(event.get("total"), 1), 1)
            self.fraction = min((index + 1) / total, 1.0)
            self.message = f"Evaluating {event.get('case', '')} ({index + 1}/{total})…"
        elif kind == "done":
            self.phase, self.fraction, self.eta_seconds = "finished", 1.0, None
            if "best" in event:
                registered = event.get("registered")
                self.message = f"Done. Best checkpoint: {event.get('best')} " + (
                    f"(score {_number(event.get('best_score'))})."
                    + (f" Listed in Segment & Explain as {registered!r}." if registered else "")
                )
            else:
                self.message = f"Evaluation done: {event.get('metrics_md', '')}"
        elif kind == "error":
            self.phase = "failed"
            self.message = f"Error: {event.get('message', '')}"
        elif kind == EXIT_EVENT:
            code = event.get("returncode")
            if code != 0 and self.phase != "failed":
                self.phase = "failed"
                self.message = f"The process exited with code {code}."
            elif code == 0 and self.phase not in ("finished", "stopped"):
                self.phase = "finished"

    def _eta(self, scope: str = "") -> str:
        if self.eta_seconds is None or not self.eta_seconds >= 0.5:
            return ""
        return f" — {format_duration(self.eta_seconds)} left{scope}"


def _int(value: Any, default: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> str:
    number = _float(value)
    return "—" if number is None or number != number else f"{number:.3f}"


# --- the child process ------------------------------------------------------------------------
class ChildProcess:
    """A child process whose stdout carries JSON-line events; never blocks its caller.

    ``poll()`` returns the events that arrived since the last call, each tagged with
    ``"source"`` (the ``label``), and keeps ``events``, ``history`` (the epoch events) and
    ``progress`` up to date. After the child has exited and all its output is read, ``poll()``
    returns one last event ``{"event": "exit", "returncode": N}``; ``finished`` is then True.
    Lines that are not JSON events are kept in ``output_tail``, stderr in ``stderr_tail``; with
    ``log_path`` both are also appended to that file.
    """

    EXIT_READ_GRACE_SECONDS = 5.0

    def __init__(
        self,
        command: Sequence[str],
        stop_file: str | Path | None = None,
        label: str = "train",
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        stop_grace_seconds: float = 120.0,
        tail_lines: int = 200,
    ) -> None:
        self.command = [str(part) for part in command]
        self.label = label
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self.stop_grace_seconds = stop_grace_seconds
        self.events: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.progress = Progress()
        self.output_tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._stderr: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._log_lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        self._exit_lock = threading.Lock()
        self._exit_queued = False
        self._exited_at: float | None = None
        self.stop_requested_at: float | None = None
        self.terminated = False  # True when the child had to be terminated or killed
        self.finished = False
        self.started_at = time.monotonic()

        options: dict[str, Any] = {}
        if os.name == "nt":  # no console window for the child
            info = subprocess.STARTUPINFO()
            info.dwFlags |= subprocess.STARTF_USESHOWWINDOW
            info.wShowWindow = 0
            options["startupinfo"] = info
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=child_environment(env),
                cwd=None if cwd is None else str(cwd),
                **options,
            )
        except OSError as error:
            self._close_log()
            raise RuntimeError(f"Could not start {self.command[0]}: {error}") from error
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name=f"{label}-stderr", daemon=True
        )
        self._stdout_thread = threading.Thread(
            target=self._read_stdout, name=f"{label}-stdout", daemon=True
        )
        self._stderr_thread.start()
        self._stdout_thread.start()

    # Reading (background threads) --------------------------------------------------------------
    def _write_log(self, prefix: str, line: str) -> None:
        if self._log is not None:
            with self._log_lock:
                if not self._log.closed:
                    self._log.write(prefix + line + "\n")
                    self._log.flush()

    def _read_stderr(self) -> None:
        try:
            for line in self._process.stderr:
                line = line.rstrip("\r\n")
                self._stderr.append(line)
                self._write_log("stderr: ", line)
        except (OSError, ValueError):  # the pipe was closed under us
            pass

    def _read_stdout(self) -> None:
        try:
            for line in self._process.stdout:
                line = line.rstrip("\r\n")
                self._write_log("", line)
                event = parse_event_line(line)
                if event is None:
                    self.output_tail.append(line)
                else:
                    self._queue.put(event)
        except (OSError, ValueError):
            pass
        finally:
            self._process.wait()
            self._stderr_thread.join(timeout=10)
            self._queue_exit_event()

    def _queue_exit_event(self) -> None:
        with self._exit_lock:
            if not self._exit_queued:
                self._exit_queued = True
                self._queue.put({"event": EXIT_EVENT, "returncode": self._process.returncode})

    # State ----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the child process has not exited."""
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited, else None."""
        return self._process.poll()

    @property
    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr."""
        return "\n".join(self._stderr)

    @property
    def stop_requested(self) -> bool:
        return self.stop_requested_at is not None

    def last_event(self, *names: str) -> dict[str, Any] | None:
        """The most recent polled event of one of ``names`` (any event when none is named)."""
        for event in reversed(self.events):
            if not names or event.get("event") in names:
                return event
        return None

    @property
    def error_message(self) -> str | None:
        """Why the child failed, for the user: its error event, else the end of its stderr."""
        code = self.returncode
        error = self.last_event("error")
        if error is not None:
            return str(error.get("message", "unknown error"))
        if code is None or code == 0:
            return None
        if self.stop_requested and self.stop_file is None:
            return None  # ended on request; it has no clean way to stop
        if self.terminated:
            return f"The process was ended after it did not stop in time (exit code {code})."
        lines = [line for line in self._stderr if line.strip()]
        detail = "\n".join(lines[-15:]) if lines else "(nothing on stderr)"
        return f"The process exited with code {code}:\n{detail}"

    # Events ---------------------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """The events that arrived since the last call; returns at once. Escalates a stop."""
        self._escalate_stop()
        if not self.finished and self._process.poll() is not None:
            # A grandchild (e.g. a data-loader worker) may hold stdout open after the child
            # exited; do not wait for it forever.
            self._exited_at = self._exited_at or time.monotonic()
            if time.monotonic() - self._exited_at > self.EXIT_READ_GRACE_SECONDS:
                self._queue_exit_event()
        new = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            event.setdefault("source", self.label)
            self.events.append(event)
            if event["event"] == "epoch":
                self.history.append(event)
            elif event["event"] == EXIT_EVENT:
                self.finished = True
                self._close_log()
            self.progress.update(event)
            if event["event"] == EXIT_EVENT and event.get("returncode") != 0:
                if self.stop_requested and not self.error_message:  # ended on request
                    self.progress.phase, self.progress.message = "stopped", "Stopped on request."
            new.append(event)
        return new

    def wait_for(
        self,
        names: Iterable[str],
        timeout: float,
        interval: float = 0.1,
        idle: Callable[[], None] | None = None,
    ) -> dict[str, Any] | None:
        """Poll until an event of ``names`` arrives (returned), the child exits, or time is up.

        Returns None on timeout or when the child exited without such an event. ``idle`` is
        called between polls (e.g. ``slicer.app.processEvents``).
        """
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while True:
            for event in self.poll():
                if event["event"] in wanted:
                    return event
            if self.finished or time.monotonic() > deadline:
                return None
            if idle is not None:
                idle()
            time.sleep(interval)

    # Stopping -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the child to stop after its current step (creates the STOP file); returns at once.

        Without a stop file the child is terminated. If it is still running
        ``stop_grace_seconds`` later, ``poll()`` terminates it, and kills it after as long again.
        """
        if not self.running:
            return
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        if self.stop_file is None:
            self._terminate()
            return
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.touch()

    def stop(self, timeout: float = 60.0, kill_after: float = 10.0) -> int:
        """Request a clean stop, wait up to ``timeout`` s, only then terminate, then kill.

        Returns the exit status. Safe to call when the child has already exited.
        """
        if self.running:
            self.request_stop()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._terminate()
                try:
                    self._process.wait(kill_after)
                except subprocess.TimeoutExpired:
                    self._kill()
                    self._process.wait()
        self._stdout_thread.join(timeout=self.EXIT_READ_GRACE_SECONDS)
        return self._process.returncode

    def _escalate_stop(self) -> None:
        if self.stop_requested_at is None or not self.running:
            return
        waited = time.monotonic() - self.stop_requested_at
        if waited > 2 * self.stop_grace_seconds:
            self._kill()
        elif waited > self.stop_grace_seconds:
            self._terminate()

    def _terminate(self) -> None:
        if self.running:
            self.terminated = True
            self._process.terminate()

    def _kill(self) -> None:
        if self.running:
            self.terminated = True
            self._process.kill()

    def _close_log(self) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.close()


# --- the module's logic ----------------------------------------------------------------------
class LiverXAITrainingLogic:
    """Training and evaluation runs for a scene; every button of the module calls into it.

    ``scene`` defaults to ``slicer.mrmlScene``; ``python`` is the interpreter for the child
    (in Slicer: PythonSlicer). One run at a time: a training or an evaluation.
    """

    def __init__(
        self,
        scene: Any = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
        stop_grace_seconds: float = 120.0,
    ) -> None:
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        from .training_plots import TrainingPlots

        self.scene = scene
        self.python = python or sys.executable
        self.env = env
        self.stop_grace_seconds = stop_grace_seconds
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
        return sorted(byEpoch.values(), key=lambda record: _int(record.get("epoch"), 0))

    @staticmethod
    def bestCheckpoint(outputFolder: str | Path) -> Path | None:
        """``OUT/best.pt`` if training has written it."""
        path = Path(outputFolder) / "best.pt"
        return path if str(outputFolder).strip() and path.is_file() else None

    # Training ---------------------------------------------------------------------------------
    def startTraining(self, options: TrainingOptions) -> ChildProcess:
        """Validate ``options`` and start the trainer; returns the running child process."""
        if self.busy:
            raise RuntimeError("A training or evaluation run is still in progress; stop it first.")
        options.validate()
        out = Path(options.out)
        out.mkdir(parents=True, exist_ok=True)
        stopFile = out / STOP_FILE_NAME
        stopFile.unlink(missing_ok=True)  # a STOP left by an earlier run would end this one at once
        self._previousHistory = read_history_csv(out / "history.csv") if options.resume else []
        self.plots.update(self._previousHistory)
        self.trainingOptions = options
        self.training = ChildProcess(
            build_train_command(options, self.python),
            stop_file=stopFile,
            label="train",
            env=self.env,
            log_path=out / TRAIN_LOG_NAME,
            stop_grace_seconds=self.stop_grace_seconds,
        )
        return self.training

    def stopTraining(self, wait: bool = False, timeout: float = 60.0) -> int | None:
        """Ask the trainer to stop after its current step; with ``wait``, wait for its exit."""
        if self.training is None:
            return None
        if wait:
            return self.training.stop(timeout=timeout)
        self.training.request_stop()
        return self.training.returncode

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
        if self.busy:
            raise RuntimeError("A training or evaluation run is still in progress; stop it first.")
        if not str(data).strip() or not Path(data).exists():
            raise ValueError(f"Evaluation data not found: {data}")
        if split is not None and not Path(split).is_file():
            raise ValueError(f"Split file not found: {split}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.evaluationOutput = out
        self.evaluation = ChildProcess(
            build_evaluate_command(models, data, out, split, part, device, self.python),
            stop_file=None,
            label="evaluate",
            env=self.env,
            log_path=out / EVALUATE_LOG_NAME,
            stop_grace_seconds=self.stop_grace_seconds,
        )
        return self.evaluation

    def stopEvaluation(self, wait: bool = False, timeout: float = 10.0) -> int | None:
        """End a running evaluation (it has nothing to save)."""
        if self.evaluation is None:
            return None
        if wait:
            return self.evaluation.stop(timeout=timeout)
        self.evaluation.request_stop()
        return self.evaluation.returncode

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
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while True:
            for event in self.poll():
                if event["event"] in wanted:
                    return event
            if not self.busy or time.monotonic() > deadline:
                return None
            if idle is not None:
                idle()
            time.sleep(interval)

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
                number = _float(value)
                record[key] = value if number is None else number
            if _float(record.get("epoch")) is not None:
                record["epoch"] = int(record["epoch"])
                records.append(record)
    return records

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

The command lines come from ``training_options``, the progress text from
``training_progress``; ``training_logic`` ties a run to a scene. Nothing here imports Qt or
slicer.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .progress import EXIT_EVENT, Progress

LIBRARY_PARENT = Path(__file__).resolve().parents[2]  # the folder that contains LiverXAILib

STOP_FILE_NAME = "STOP"


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


def wait_for_event(
    poll: Callable[[], list[dict[str, Any]]],
    ended: Callable[[], bool],
    names: Iterable[str],
    timeout: float,
    interval: float = 0.1,
    idle: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Call ``poll`` until it returns an event of ``names`` (returned), ``ended()`` or time is up.

    Returns None on timeout or when ``ended()`` became true without such an event. ``idle`` is
    called between polls (e.g. ``slicer.app.processEvents``).
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        for event in poll():
            if event["event"] in wanted:
                return event
        if ended() or time.monotonic() > deadline:
            return None
        if idle is not None:
            idle()
        time.sleep(interval)


def _no_console_window() -> dict[str, Any]:
    """``Popen`` options that keep a console window from opening for the child (Windows)."""
    options: dict[str, Any] = {}
    if os.name == "nt":
        info = subprocess.STARTUPINFO()
        info.dwFlags |= subprocess.STARTF_USESHOWWINDOW
        info.wShowWindow = 0
        options["startupinfo"] = info
    return options


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
        self._process = self._start(env, cwd)
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name=f"{label}-stderr", daemon=True
        )
        self._stdout_thread = threading.Thread(
            target=self._read_stdout, name=f"{label}-stdout", daemon=True
        )
        self._stderr_thread.start()
        self._stdout_thread.start()

    def _start(self, env: dict[str, str] | None, cwd: str | Path | None) -> subprocess.Popen[str]:
        """Start the command with pipes for its output; closes the log if it cannot start."""
        try:
            return subprocess.Popen(
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
                **_no_console_window(),
            )
        except OSError as error:
            self._close_log()
            raise RuntimeError(f"Could not start {self.command[0]}: {error}") from error

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
        return wait_for_event(
            self.poll, lambda: self.finished, names, timeout, interval=interval, idle=idle
        )

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

"""The output-folder lock of batch runs, with real processes: a held lock refuses a second run
at once, naming the holder; a killed holder never blocks the next run (flock, and the
exclusive-file fallback used where fcntl is missing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import ROOT
from LiverXAILib.batch import lock as batch_lock
from LiverXAILib.batch.lock import LOCK_FILE, OutputFolderLocked, output_folder_lock, pid_alive
from LiverXAILib.errors import InputError

HOLDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from LiverXAILib.batch import lock as batch_lock
    if sys.argv[3] == "fallback":
        batch_lock.fcntl = None
    with batch_lock.output_folder_lock(sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin (or kills this process)
    """
)


def start_holder(folder, mode="flock"):
    """A process holding the folder's lock until its stdin is closed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ROOT / "LiverXAI"), str(folder), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def kill(process):
    process.send_signal(signal.SIGKILL)  # no clean-up: as a crash or `kill -9` leaves it
    process.wait(timeout=30)


def finished_pid():
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


@pytest.fixture(params=["flock", "fallback"])
def mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(batch_lock, "fcntl", None)
    return request.param


def test_a_second_process_is_refused_at_once_and_a_killed_holder_does_not_block(mode, tmp_path):
    holder = start_holder(tmp_path, mode)
    try:
        with pytest.raises(OutputFolderLocked) as refused, output_folder_lock(tmp_path):
            pass
        message = str(refused.value)
        assert f"Another LiverXAI run (process {holder.pid})" in message
        assert str(tmp_path) in message and "choose another output folder" in message
        assert isinstance(refused.value, InputError)
    finally:
        kill(holder)
    assert (tmp_path / LOCK_FILE).exists()  # the killed holder could not remove it
    with output_folder_lock(tmp_path) as path:  # not stale for flock, taken over for fallback
        assert path.read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_finished_holder_releases_and_removes_the_lock(mode, tmp_path):
    holder = start_holder(tmp_path, mode)
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0
    assert not (tmp_path / LOCK_FILE).exists()
    with output_folder_lock(tmp_path):
        pass


def test_another_run_in_this_process_is_refused(mode, tmp_path):
    errors = []
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(tmp_path)

    def second_run():
        try:
            with output_folder_lock(link):  # the same folder, by another path
                pass
        except OutputFolderLocked as error:
            errors.append(error)

    with output_folder_lock(tmp_path):
        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"process {os.getpid()}, this one" in str(errors[0])
    with output_folder_lock(tmp_path):  # released for the next run
        pass


def test_fallback_takes_over_stale_locks_only(monkeypatch, tmp_path):
    monkeypatch.setattr(batch_lock, "fcntl", None)
    lock = tmp_path / LOCK_FILE
    host = batch_lock.socket.gethostname()
    dead = finished_pid()
    assert not pid_alive(dead) and pid_alive(os.getpid())

    lock.write_text(f"{dead} {host}\n")  # a crashed run on this machine
    with output_folder_lock(tmp_path):
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()

    lock.write_text(f"{dead} another-machine\n")  # cannot be checked from here: kept
    with pytest.raises(OutputFolderLocked, match=f"process {dead} on another-machine"):
        with output_folder_lock(tmp_path):
            pass

    lock.write_text("")  # a run that is creating it right now
    with pytest.raises(OutputFolderLocked, match="process unknown"):
        with output_folder_lock(tmp_path):
            pass
    old = lock.stat().st_mtime - 2 * batch_lock.EMPTY_LOCK_GRACE_S
    os.utime(lock, (old, old))  # ... or one that died creating it
    with output_folder_lock(tmp_path):
        pass
    assert not lock.exists()

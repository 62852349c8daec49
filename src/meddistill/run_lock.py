"""One training process per run folder.

Two trainings writing one folder (the same command started twice, or a grid resumed while
it is still running) would overwrite each other's checkpoints in turn and leave a run that
neither of them trained. The process that trains a folder holds an advisory lock on its
``run.lock`` file; a second one is refused with a one-line error. The operating system
drops the lock when the holder exits, crashed or not, so resuming after a crash needs
nothing from the user. Where ``fcntl`` is missing (Windows) the folder is not locked.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import MeddistillError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "run.lock"


@contextmanager
def hold_run_folder(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` (created if need be) for this process until the block ends.

    Raises:
        MeddistillError: another live process holds it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(run_dir / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MeddistillError(
                f"{run_dir} is being trained by {_holder(lock)}; wait for it to finish, or give this run another name"
            ) from None
        lock.truncate(0)
        lock.write(f"process {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)  # the lock itself goes with the file handle


def run_folder_holder(run_dir: str | Path) -> str | None:
    """Who is training ``run_dir`` now (``"process N on HOST"``), or None."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    with open(path) as lock:
        try:  # a shared lock is refused only while a training holds the folder
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(lock)
    return None


def _holder(lock) -> str:
    lock.seek(0)
    return lock.read().strip() or "another process"

"""Start a child process in its own process group and end the whole group.

Inside Slicer the child is `PythonSlicer`, the CTK launcher, which starts the real Python as its own child and
does not pass signals on: ending only the launcher leaves the runner computing. So the child starts a new
session (POSIX) or process group (Windows), and stopping it signals every process in it.
"""

from __future__ import annotations

import os
import signal
import subprocess


def start(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen in a new process group, without a console window on Windows."""
    if os.name == "nt":
        startupinfo = subprocess.STARTUPINFO()
        startupinfo.dwFlags |= subprocess.STARTF_USESHOWWINDOW
        startupinfo.wShowWindow = subprocess.SW_HIDE
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return subprocess.Popen(command, creationflags=flags, startupinfo=startupinfo, **popen_kwargs)
    return subprocess.Popen(command, start_new_session=True, **popen_kwargs)


def terminate(process: subprocess.Popen) -> None:
    """Ask every process of the group to stop (POSIX SIGTERM: the runner stops between steps).

    Windows has no such request for a console-less group: the tree is killed at once.
    """
    if os.name == "nt":
        kill(process)
    else:
        _signal_group(process, signal.SIGTERM)


def kill(process: subprocess.Popen) -> None:
    """Kill every process of the group at once."""
    if os.name != "nt":
        _signal_group(process, signal.SIGKILL)
        return
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is None:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW, check=False)
        return
    try:
        parent = psutil.Process(process.pid)
        tree = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for each in tree:
        try:
            each.kill()
        except psutil.NoSuchProcess:
            pass


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)  # the child leads its session, so its group id is its pid
    except ProcessLookupError:
        pass  # the whole group has ended

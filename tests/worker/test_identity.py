"""Telling a dead worker on this host from a live one, by the name it left on its audit."""

from __future__ import annotations

import os
import socket
import subprocess

from worker.identity import died_here, worker_name


def test_a_worker_is_dead_when_its_process_is_gone_or_was_an_earlier_incarnation() -> None:
    host = socket.gethostname()
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert died_here(f"{host}:{finished.pid}:0badf00d")  # its PID is free
    assert died_here(f"{host}:{os.getpid()}:0badf00d")  # this PID, an earlier process (a restart)

    assert not died_here(worker_name())  # this very process
    assert not died_here(f"{host}:{os.getppid()}:0badf00d")  # alive
    assert not died_here(f"elsewhere:{finished.pid}:0badf00d")  # another host: ask its heartbeat
    assert not died_here("not a worker name")

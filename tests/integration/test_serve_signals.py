"""`compresso serve` stopped the ways a supervisor, a terminal or the kernel stop it: SIGINT, SIGTERM,
SIGHUP and SIGKILL sent to the serve process alone. No process of the service may outlive it."""

import os
import signal
import time

import pytest

from tests.integration import harness

# serve, its cpu worker and its webhook worker.
SERVICE_PROCESSES = 3


def _wait(predicate, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda signum: signal.Signals(signum).name)
def test_no_process_of_the_service_outlives_serve(tmp_path, signum):
    with harness.embedded_server(tmp_path) as server:
        assert _wait(lambda: len(harness.processes_using(server.data_dir)) >= SERVICE_PROCESSES, 120), (
            harness.processes_using(server.data_dir), server.log.read_text()[-3000:]
        )
        service = harness.processes_using(server.data_dir)
        os.kill(server.process.pid, signum)  # the serve process only, as `kill -TERM <pid>` does
        server.process.wait(60)
        # The workers get a bounded warm shutdown (COMPRESSO's WORKER_STOP_SECONDS); SIGKILL leaves them
        # only the parent-death signal.
        gone = _wait(lambda: not harness.processes_using(server.data_dir), 90)
        left = harness.processes_using(server.data_dir)
        assert gone, f"{len(left)} of {len(service)} processes left: {left}\n{server.log.read_text()[-3000:]}"
        if signum != signal.SIGKILL:
            # It exited itself, after stopping its workers, rather than being ended by the signal.
            assert server.process.returncode >= 0, server.process.returncode

"""The PID file ``aichat reload`` finds the gateway by: held while it runs, never trusted stale."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aichat.cli import main
from aichat.core.config import Settings, StartupError
from aichat.operations.pidfile import NotRunning, pid_file, pid_path, running_pid, signal_reload


def test_the_default_pid_file_is_per_port_in_the_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    assert pid_path(Settings(port=8123)) == tmp_path / "aichat-8123.pid"
    assert pid_path(Settings(pid_file=Path("/run/x.pid"))) == Path("/run/x.pid")


def test_a_second_gateway_with_the_same_pid_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "aichat.pid"
    with pid_file(path):
        pid = running_pid(path)
        refused = f"another aichat \\(pid {pid}\\) runs with"
        with pytest.raises(StartupError, match=refused), pid_file(path):
            pass
        assert running_pid(path) == pid  # the refused one took nothing away
    assert not path.exists()


def test_a_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    # A gateway killed with SIGKILL leaves its file; by now its PID may be another process's.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "aichat.pid"
        path.write_text(f"{bystander.pid}\n")
        with pytest.raises(NotRunning, match="is stale: no gateway holds it"):
            signal_reload(path)
        assert bystander.poll() is None
        with pid_file(path):  # a new gateway takes the stale file over
            assert running_pid(path) != bystander.pid
    finally:
        bystander.send_signal(signal.SIGTERM)
        bystander.wait()


def test_serve_help_tells_how_to_reload(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "SIGHUP reloads the env file and the config file" in text
    assert "'aichat reload' sends it, finding the gateway through its PID file" in text
    assert "--pid-file" in text and "AICHAT_PID_FILE" in text

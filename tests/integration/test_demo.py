"""`tbspark demo` with the tutorial's scenario, for real: Kafka, the embedded platform, Spark, the
simulator, and the verdict. The most important test of the project: if it passes, the tutorial's
pipeline works end to end and says so truthfully. Also: nothing is left running, even after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from tbspark.cli import app
from tbspark.settings import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.spark]
DURATION_S = 12
SCENARIO = REPO_ROOT / "scenarios" / "wind-turbines.yaml"


class Watched:
    """A `tbspark` subprocess whose descendants are recorded while it runs, so the test can prove
    afterwards that none of them is still alive."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
        self.proc = subprocess.Popen([sys.executable, "-m", "tbspark", *args], cwd=REPO_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen: set[int] = set()
        self.lines: list[str] = []
        self._watch = threading.Thread(target=self._poll, daemon=True)
        self._watch.start()

    def _poll(self) -> None:
        while self.proc.poll() is None:
            try:
                self.seen.update(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.3)  # sampling interval of the process tree, not a wait for a service

    def wait_for_line(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for line in self.proc.stdout:  # blocks on the pipe: returns as soon as a line arrives
            self.lines.append(line)
            if text in line:
                return
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n{''.join(self.lines)}"
        raise AssertionError(f"process ended before {text!r}:\n{''.join(self.lines)}")

    def finish(self, timeout_s: float) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout_s)
        self._watch.join()
        return self.proc.returncode, "".join(self.lines) + out, err

    def alive(self) -> list[str]:
        left = []
        for pid in self.seen:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {' '.join(p.cmdline())[:150]}")
            except psutil.NoSuchProcess:
                pass
        return left


def test_demo_runs_the_tutorial_end_to_end_and_the_verdict_holds(tmp_path):
    state = tmp_path / "demo"
    run = Watched("demo", str(SCENARIO), "--duration", f"{DURATION_S}s", "--seed", "7", "--keep",
                  "--json", "--state-dir", str(state))
    code, out, err = run.finish(timeout_s=300)
    try:
        assert out.strip().startswith("{"), f"exit {code}, no report; stderr:\n{err[-4000:]}"
        report = json.loads(out)
        assert code == 0, err[-3000:]
        assert report["holds"] is True and report["problem"] is None
        # three turbines at 10 Hz: every message sent was acknowledged (QoS 1) and reached its window
        assert abs(report["sent"] - 3 * 10 * DURATION_S) <= 0.02 * 3 * 10 * DURATION_S
        assert report["acked"] == report["sent"] and report["errors"] == 0
        gt = json.loads((state / "groundtruth.json").read_text())
        windows = sum(len(w) for w in gt["windows"].values())
        assert set(gt["windows"]) == {"Zone A", "Zone B"}
        assert report["windows_verified"] == windows >= 4
        v = report["verify"]
        assert v["exact"] is True and v["mismatches"] == []
        assert sum(z["messages_found"] for z in v["zones"]) == report["sent"]
        assert report["latency_s"] is not None and report["latency_s"] >= 0
        assert {"stack", "spark", "provision", "simulation", "final_window", "verify"} <= set(report["phases"])
        assert report["state_dir"] == str(state) and report["kept"] is True

        # --keep: the stack still answers, and `tbspark verify` on it gives the same verdict
        services = json.loads((state / "services.json").read_text())
        result = CliRunner().invoke(app, ["verify", str(SCENARIO), "--state-dir", str(state), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["windows_verified"] == windows
        # what is still alive is exactly the kept stack: the Spark JVM went with the demo
        stack_pids = {services["kafka"]["pid"], services["platform"]["pid"]}
        assert {int(a.split()[0]) for a in run.alive()} <= stack_pids, run.alive()
    finally:
        down = CliRunner().invoke(app, ["stack", "down", "--state-dir", str(state)])
    assert down.exit_code == 0, down.output
    assert run.alive() == []


def test_ctrl_c_tears_everything_down(tmp_path):
    state = tmp_path / "demo-interrupted"
    run = Watched("demo", str(SCENARIO), "--duration", "60s", "--state-dir", str(state))
    # Interrupted once Kafka and the platform are up while the Spark JVM is still starting in
    # parallel: three kinds of process to clean up, one of them half-started.
    run.wait_for_line("stack:", timeout_s=180)
    os.kill(run.proc.pid, signal.SIGINT)
    code, out, err = run.finish(timeout_s=120)
    assert code == 130, out + err
    assert "Interrupted" in err
    assert run.alive() == [], run.alive()
    assert not (state / "services.json").exists()


def test_state_dir_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "provision.json").write_text("{}")
    result = CliRunner().invoke(app, ["demo", "--state-dir", str(tmp_path / "old"), "--duration", "5s"])
    assert result.exit_code == 2
    assert "is not empty" in result.output and "--state-dir" in result.output


def test_bad_duration_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--duration", "soon", "--state-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "--duration 'soon'" in result.output
    assert not (tmp_path / "d").exists()

"""Every command shown in README.md and docs/*.md runs (with short durations).

Each ```bash block runs in a fresh working directory that has the repo's scenarios/ beside it, with
the venv's bin first on PATH (what `source .venv/bin/activate` does). A block that provisions,
simulates, aggregates or verifies without starting a stack itself gets one on free ports around it.
Lines that cannot run here are listed in SKIPPED_PREFIXES with the reason; `make demo` / `make test`
are checked with `make -n` (running them here would recurse into this very suite).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Lines we do not run, and why.
SKIPPED_PREFIXES = {
    "docker ": "needs a Docker engine; docker-compose.yml is checked by tests/unit/test_compose.py",
    "source ": "the test puts the venv first on PATH instead",
    'eval "$(TB_SOURCE=': "needs a ThingsBoard server built from source; the realtb tests run it",
    "tools/real-thingsboard.sh": "needs a ThingsBoard server built from source; the realtb tests run it",
    "spark-submit ": "--packages downloads the connector from Maven Central; the next line runs the same "
                     "entry point with the jar cache",
}
# Blocks that talk to a real ThingsBoard (they export TB_URL) cannot run here.
REAL_TB_MARKER = "export TB_URL="
SHORTER = [(re.compile(r"--duration \d+s"), "--duration 10s --seed 7")]
NEEDS_STACK = ("tbspark provision", "tbspark simulate", "tbspark aggregate", "tbspark verify",
               "python -m tbspark.aggregate.main")


@dataclass
class Block:
    doc: Path
    line: int
    commands: list[str]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def bash_blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```bash":
                start = i + 1
                body = []
                i += 1
                while i < len(lines) and lines[i].strip() != "```":
                    body.append(lines[i])
                    i += 1
                commands = [c for c in (_strip_comment(b) for b in body) if c]
                blocks.append(Block(doc, start, commands))
            i += 1
    return blocks


def _strip_comment(line: str) -> str:
    """The command without its trailing `# comment` (blank for a comment line)."""
    return re.sub(r"(^|\s+)#\s.*$", "", line).strip()


BLOCKS = bash_blocks()


def test_docs_have_commands() -> None:
    assert any("tbspark verify" in c for b in BLOCKS for c in b.commands), "README lost its tour"
    assert any(c.startswith("make demo") for b in BLOCKS for c in b.commands)
    assert any(c.startswith("make test") for b in BLOCKS for c in b.commands)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    for key in ("TB_URL", "TB_USERNAME", "TB_PASSWORD", "TB_MQTT_HOST", "TB_MQTT_PORT", "KAFKA_BOOTSTRAP",
                "TBSPARK_STATE_DIR"):
        env.pop(key, None)
    return env


def _run(cmd: str, cwd: Path, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    for pattern, repl in SHORTER:
        cmd = pattern.sub(repl, cmd)
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_documented_command_runs(block: Block, tmp_path: Path) -> None:
    if any(REAL_TB_MARKER in c for c in block.commands):
        pytest.skip("talks to a real ThingsBoard (TB_URL); the same verbs run against the embedded platform above")
    env = _env()
    (tmp_path / "scenarios").symlink_to(REPO / "scenarios")
    runnable = []
    for cmd in block.commands:
        reason = next((why for prefix, why in SKIPPED_PREFIXES.items() if cmd.startswith(prefix)), None)
        if reason is None:
            runnable.append(cmd)
    if not runnable:
        pytest.skip("; ".join(sorted({why for p, why in SKIPPED_PREFIXES.items()
                                      if any(c.startswith(p) for c in block.commands)})))
    wraps_stack = any(c.startswith(NEEDS_STACK) for c in runnable) and not any("stack up" in c for c in runnable)
    if wraps_stack:
        up = _run("tbspark stack up --kafka-port 0 --http-port 0 --mqtt-port 0", tmp_path, env)
        assert up.returncode == 0, up.stderr
    background: list[subprocess.Popen] = []
    try:
        for cmd in runnable:
            if cmd.startswith("make "):
                target = cmd.split()[1]
                res = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True)
                assert res.returncode == 0, f"{block.id}: make has no target {target!r}: {res.stderr}"
                continue
            if cmd.endswith("&"):
                background.append(subprocess.Popen(cmd[:-1], shell=True, cwd=tmp_path, env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
                continue
            res = _run(cmd, tmp_path, env)
            assert res.returncode == 0, f"{block.id}: `{cmd}` exited {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
            if cmd.startswith("tbspark verify"):
                assert "holds" in res.stdout.lower() or "✓" in res.stdout, res.stdout[-2000:]
            if " -o " in cmd:
                target = cmd.split(" -o ")[1].split()[0]
                if target == "-":  # stdout: the command's output is the document
                    redirected = cmd.split(">")[1].split()[0] if ">" in cmd else None
                    assert redirected is None or (tmp_path / redirected).stat().st_size > 0
                    assert not (tmp_path / "-").exists(), f"{block.id}: `-o -` wrote a file named -"
                else:
                    out = tmp_path / target
                    assert out.exists() and out.stat().st_size > 0
    finally:
        for proc in background:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        if wraps_stack or any("stack up" in c for c in runnable):
            _run("tbspark stack down", tmp_path, env)
    status = _run("tbspark stack status --json", tmp_path, env)
    assert '"alive": true' not in status.stdout, f"{block.id} left a service running: {status.stdout}"

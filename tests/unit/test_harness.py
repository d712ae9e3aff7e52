"""The harness tests and benchmarks share (tbspark.testing): one wait-until that fails naming what it
waited for, one CPU meter; and the boundary that keeps it shared — no test reaches into bench/ or
edits sys.path, and every bench/*.py is a benchmark a user can run."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tbspark.testing.cpu import CpuMeter, cpu_seconds
from tbspark.testing.wait import WaitTimeout, wait_until

REPO = Path(__file__).resolve().parents[2]


def _imports_and_path_edits(path: Path) -> list[str]:
    """What in ``path`` imports bench (or a module of it, by name or by file path) or inserts
    into / appends to sys.path."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "bench"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "bench":
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("insert", "append", "extend") \
                and ast.unparse(node.func.value) == "sys.path":
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and _LOADERS.intersection(ast.unparse(node.func).split(".")) \
                and "bench" in ast.unparse(node):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")  # a bench file loaded by path
    return found


# What loads a module by name or file path, besides the import statement.
_LOADERS = {"spec_from_file_location", "run_path", "run_module", "import_module", "SourceFileLoader", "__import__"}


def test_no_test_imports_bench_or_edits_sys_path():
    offenders = {str(p.relative_to(REPO)): hits for p in sorted((REPO / "tests").rglob("*.py"))
                 if (hits := _imports_and_path_edits(p))}
    assert not offenders, f"tests must import the shared harness (tbspark.testing), not bench/: {offenders}"


def test_the_check_itself_sees_every_kind(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys, importlib.util\nsys.path.insert(0, '.')\nfrom bench.e2e import CpuMeter\nimport bench.x\n"
                   "spec = importlib.util.spec_from_file_location('b', REPO / 'bench' / 'e2e.py')\n")
    assert len(_imports_and_path_edits(bad)) == 4
    good = tmp_path / "good.py"
    good.write_text("from tbspark.testing.wait import wait_until\nscript = REPO / 'bench' / 'e2e.py'\n")
    assert _imports_and_path_edits(good) == []


def test_every_bench_script_is_an_entry_point_without_path_hacks():
    """`make bench` runs each script in bench/: none is a helper module, none edits sys.path or
    imports another bench script (shared parts live in tbspark.testing)."""
    scripts = sorted((REPO / "bench").glob("*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert 'if __name__ == "__main__":' in text, f"{script.name} is not a runnable benchmark"
        assert not _imports_and_path_edits(script), (script.name, _imports_and_path_edits(script))


def test_make_bench_runs_every_benchmark_and_nothing_else():
    """`make -n` prints the recipe with the list expanded: every bench/*.py but realtb.py (it needs
    a real ThingsBoard, so it runs only when TB_URL names one)."""
    make = subprocess.run(["make", "-n", "bench"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert make.returncode == 0, make.stderr
    loop = next(ln for ln in make.stdout.splitlines() if "for script in" in ln)
    listed = loop.split("for script in", 1)[1].split(";", 1)[0].split()
    assert sorted(listed) == sorted(f"bench/{p.name}" for p in (REPO / "bench").glob("*.py") if p.name != "realtb.py")
    assert any("TB_URL" in ln and "bench/realtb.py" in ln for ln in make.stdout.splitlines())


def test_wait_until_returns_the_value_as_soon_as_the_condition_holds():
    holds_at = time.monotonic() + 0.3
    t0 = time.monotonic()
    got = wait_until(lambda: time.monotonic() >= holds_at and "ready", 10, "the flag")
    waited = time.monotonic() - t0
    assert got == "ready"
    assert 0.3 <= waited < 1.0  # not the 10 s timeout, and not before it held


def test_wait_until_times_out_naming_what_it_waited_for():
    calls = []
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.3 s waiting for the broker to answer"):
        wait_until(lambda: calls.append(1), 0.3, "the broker to answer")
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert len(calls) > 2  # it polled, and looked once more at the deadline


def test_wait_until_lets_the_condition_fail_fast():
    def died():
        raise RuntimeError("the job exited (1)")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="the job exited"):
        wait_until(died, 30, "the job")
    assert time.monotonic() - t0 < 1.0


def test_cpu_of_a_busy_child_is_counted_with_children_and_gone_is_nan():
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ninput()"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}]); input()"],
                              stdin=subprocess.PIPE, text=True)
    try:
        meter = CpuMeter(parent.pid)
        meter.start()
        # the grandchild has burnt its 0.4 s once it is reading stdin (sleeping); until then, wait
        wait_until(lambda: cpu_seconds(parent.pid, children=True) - cpu_seconds(parent.pid) >= 0.35,
                   30, "the busy child to spend 0.4 s of CPU")
        assert cpu_seconds(parent.pid) < 0.35  # the parent alone only waited
        assert meter.total() >= 0.25  # the meter saw it (less what it burnt before start())
    finally:
        parent.stdin.close()  # end of input: the grandchild, then the parent, exit
        parent.wait(30)
    assert cpu_seconds(parent.pid) != cpu_seconds(parent.pid)  # NaN: a gone process is no measurement


def test_cpu_meter_over_several_roots_counts_each():
    """A component that is several processes (a Kafka cluster's brokers, a Spark driver with the
    standalone cluster's master and workers) is metered as one: each root's CPU counts."""
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        one, both = CpuMeter(procs[0].pid), CpuMeter(*(p.pid for p in procs))
        one.start()
        both.start()
        wait_until(lambda: all(cpu_seconds(p.pid) >= 0.3 for p in procs), 30, "both to spend 0.3 s of CPU")
        assert both.total() >= one.total() + 0.2  # the second root's CPU is in the sum
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(30)

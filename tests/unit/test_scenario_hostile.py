"""Hostile and broken scenario files: each gets one error line ``file:line: what — hint`` and exit
code 2 from `tbspark scenario check`, in bounded time and memory (measured with getrusage on the
CLI process: < 1 CPU-second and < 100 MB peak), never a traceback or a hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tbspark.errors import ScenarioError
from tbspark.scenario import parse_scenario

GOOD = """\
name: t
devices:
  - name: a
    zone: Z
    telemetry:
      windSpeed: {kind: uniform_int, min: 1, max: 2, rate_hz: 1}
"""

# Runs the CLI as its only child, so RUSAGE_CHILDREN is the CLI's alone.
_MEASURE = """
import json, resource, subprocess, sys
res = subprocess.run([sys.executable, "-m", "tbspark", "scenario", "check", sys.argv[1]],
                     capture_output=True, text=True, timeout=60)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": res.returncode, "stderr": res.stderr, "stdout": res.stdout,
                  "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024}))
"""


def check_cli(path: Path) -> dict:
    """`tbspark scenario check path`: exit code, output, CPU seconds and peak memory of the CLI."""
    try:
        out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True,
                             text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tbspark scenario check {path.name}` did not answer within 60 s")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]")
    return "name: t\n" + "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[bytes, str]] = {
    # name: (file content, the one error line after "Error: <file>")
    "alias bomb, 9 levels": (_bomb(9).encode(),
                             ":7: more than 150,000 values once its aliases are expanded — "
                             "use fewer aliases (&anchor / *alias) or a smaller file"),
    "alias bomb, 7 levels": (_bomb(7).encode(),
                             ":7: more than 150,000 values once its aliases are expanded — "
                             "use fewer aliases (&anchor / *alias) or a smaller file"),
    "recursive alias": (b"name: t\nx: &a [1, *a]\n",
                        ":2: alias *a refers to a node that contains it — "
                        "define the anchor (&name) before its aliases"),
    "template width": (GOOD.replace("name: a", 'name: "{i:>999999999}"\n    count: 2').encode(),
                       ":3 devices[0].name: {i:>999999999}: width 999,999,999 is above 64"),
    "zone pattern width": (GOOD.replace("zone: Z", 'zones: {count: 2, name: "{j:>999999999}"}').encode(),
                           ":4 devices[0].zones.name: {j:>999999999}: width 999,999,999 is above 64"),
    "nested placeholder": (GOOD.replace("name: a", 'name: "{i:>{i}}"\n    count: 2').encode(),
                           ":3 devices[0].name: {i:>{i}} is not an integer format such as {i:04d}"),
    "5,000-level block nesting": (("name: t\nx:\n" + "- " * 5000 + "v\n").encode(),
                                  ":3: nested deeper than 32 levels — "
                                  "a scenario nests a few levels; flatten the structure"),
    "5,000-level flow nesting": (("name: t\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n").encode(),
                                 ":2: nested deeper than 32 levels — "
                                 "a scenario nests a few levels; flatten the structure"),
    "5,000-digit integer": (("name: t\nsimulation: {seed: " + "9" * 5000 + "}\n").encode(),
                            ":2: an integer of 5,000 characters — integers may have at most 30 digits"),
    "invalid UTF-8": (b"name: t\ndescription: caf\xe9\n",
                      ":2: byte 0xe9 at offset 24 is not UTF-8 — save the file as UTF-8"),
    "python tag": (b"name: !!python/object/apply:os.system [echo owned]\n",
                   ":1: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed — "
                   "scenarios are plain YAML: mappings, lists, strings, numbers and booleans"),
    "NUL byte": (b"name: t\n\x00\n",
                 ":2: character #x0000 is not allowed in YAML (control characters are not allowed) — "
                 "fix the YAML syntax at that line"),
    "two documents": (b"name: t\n---\nname: u\n",
                      ":2: expected a single document in the stream: but found another document — "
                      "a scenario file holds one YAML document; define each anchor before its aliases"),
    "a list as a key": (b"name: t\n? [a]\n: 1\n",
                        ":2: found unhashable key — "
                        "scenarios are plain YAML: mappings, lists, strings, numbers and booleans"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_gets_one_line_and_exit_2_in_bounded_time_and_memory(name: str, tmp_path: Path) -> None:
    content, line = HOSTILE[name]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    got = check_cli(path)
    assert got["rc"] == 2, got
    assert got["stderr"].splitlines() == [f"Error: {path}{line}"]
    assert got["cpu_s"] < 1.0, f"{got['cpu_s']:.2f} CPU-s"
    assert got["maxrss_mb"] < 100, f"{got['maxrss_mb']:.0f} MB"


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("w") as fh:
        fh.write(GOOD + "description: >\n")
        for _ in range(25_000):  # ~1 MB of plain text
            fh.write("  " + "lorem ipsum " * 3 + "\n")
    got = check_cli(path)
    assert got["rc"] == 2
    size = path.stat().st_size
    assert got["stderr"].splitlines() == [
        f"Error: {path}:1: the file has {size:,} bytes, more than a scenario may have (256 KiB) — "
        "generate large fleets with count and a name pattern"]
    assert got["cpu_s"] < 1.0 and got["maxrss_mb"] < 100, got


@pytest.mark.parametrize("shape", ["attributes", "zones", "errors"])
def test_the_densest_file_under_the_limit_stays_within_bounds(shape: str, tmp_path: Path) -> None:
    """The worst a file within the size limit can do without aliases: ~250 KiB of keys, of zone names,
    or of invalid device groups (errors are capped at 50 lines)."""
    limit = 250 * 1024
    if shape == "attributes":
        text = GOOD + "    attributes:\n" + _fill(lambda n: f"      k{n}: {n}\n", limit - len(GOOD))
    elif shape == "zones":
        text = GOOD.replace("zone: Z", "zones: [" + _fill(lambda n: f"z{n},", limit - len(GOOD)) + "z]")
    else:
        group = "  - {name: a, zone: Z, telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 0}}}\n"
        text = "name: t\ndevices:\n" + group * (limit // len(group))
    path = tmp_path / "dense.yaml"
    path.write_text(text)
    assert path.stat().st_size < 256 * 1024
    got = check_cli(path)
    if shape == "errors":
        lines = got["stderr"].splitlines()
        assert got["rc"] == 2 and len(lines) == 51, lines[:3]
        assert lines[-1].endswith("more problems")
    else:
        assert got["rc"] == 0, got["stderr"]
    assert got["cpu_s"] < 1.0, f"{got['cpu_s']:.2f} CPU-s"
    assert got["maxrss_mb"] < 100, f"{got['maxrss_mb']:.0f} MB"


def _fill(item, size: int) -> str:
    out, n, total = [], 0, 0
    while total < size:
        out.append(item(n))
        total += len(out[-1])
        n += 1
    return "".join(out)


def test_a_million_devices_in_two_groups_check_within_bounds(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("name: t\ndevices:\n" + "".join(
        f"  - {{name: 'G{g} {{i:07d}}', count: 500000, zones: {{count: 1000}}, "
        "telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}\n" for g in (1, 2)))
    got = check_cli(path)
    assert got["rc"] == 0, got["stderr"]
    assert "1,000,000 in 2 group(s)" in got["stdout"]
    assert got["maxrss_mb"] < 100, f"{got['maxrss_mb']:.0f} MB"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "x.yaml")
    return info.value.issues


@pytest.mark.parametrize("zone, what", [
    ("'   '", "zone name '   ' is blank"),
    ('"Zone\\u0007A"', "zone name 'Zone\\x07A' has control characters"),
    ("'" + "z" * 256 + "'", "zone name 'zzzzzzzzzzzzzzzzzzzz'… is longer than 255 characters (ThingsBoard's limit)"),
    ("'" + "\U0001F32C" * 128 + "'",  # 128 code points, 256 UTF-16 units (Java's String.length)
     "zone name '" + "\U0001F32C" * 20 + "'… is longer than 255 characters (ThingsBoard's limit)"),
])
def test_zone_names_the_job_would_dead_letter_are_refused_up_front(zone: str, what: str) -> None:
    assert errors_of(GOOD.replace("zone: Z", f"zone: {zone}")) == [f"x.yaml:4 devices[0].zone: {what}"]


def test_generated_device_names_must_fit_thingsboards_limit() -> None:
    text = GOOD.replace("name: a", "name: '" + "d" * 250 + " {i}'\n    count: 100000")
    (issue,) = errors_of(text)
    assert issue.startswith("x.yaml:3 devices[0]: device name 'dddddddddddddddddddd'… is longer than 255")


def test_not_a_number_and_infinity_are_refused() -> None:
    assert errors_of(GOOD.replace("rate_hz: 1", "rate_hz: .nan")) == [
        "x.yaml:6 devices[0].telemetry.windSpeed.rate_hz: input should be a finite number"]
    assert errors_of(GOOD + "simulation: {duration_s: .inf}\n") == [
        "x.yaml:7 simulation.duration_s: input should be a finite number"]


def test_value_range_default_and_strict_parsing() -> None:
    sc = parse_scenario(GOOD)
    assert (sc.aggregation.value_range.min, sc.aggregation.value_range.max) == (-1e9, 1e9)
    sc = parse_scenario(GOOD + "aggregation: {value_range: {min: 0, max: 120}}\n")
    assert (sc.aggregation.value_range.min, sc.aggregation.value_range.max) == (0, 120)
    assert errors_of(GOOD + "aggregation: {value_range: {min: 5, max: 1}}\n") == [
        "x.yaml:7 aggregation.value_range: min (5) must be <= max (1)"]
    assert errors_of(GOOD + "aggregation: {value_range: {low: 5}}\n") == [
        "x.yaml:7 aggregation.value_range.low: unknown key"]


def test_too_many_devices_in_all() -> None:
    group = "  - {name: 'G%d {i}', count: 1000000, zone: Z, telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}\n"
    text = "name: t\ndevices:\n" + group % 1 + group % 2
    assert errors_of(text) == ["x.yaml:1 (top level): 2,000,000 devices in all; a scenario may have 1,000,000"]


def test_names_across_groups_still_must_differ() -> None:
    group = "  - {name: '%s', count: %d, zone: Z, telemetry: {windSpeed: {kind: constant, value: 1, rate_hz: 1}}}\n"
    text = "name: t\ndevices:\n" + group % ("T {i}", 1000) + group % ("T 5{i}", 3)
    assert errors_of(text) == ["x.yaml:1 (top level): device name 'T 51' appears twice"]

"""A wheel that runs anywhere: it carries the scenarios and the JVM pom, and an installed tbspark
(no source checkout around it) caches jars in the user's cache directory, not in site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tbspark import settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_carries_scenarios_and_pom(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                          "-q", "-w", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("tbspark-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for scenario in (REPO / "scenarios").glob("*.yaml"):
        assert f"tbspark/scenarios/{scenario.name}" in names
    assert "tbspark/jvm/pom.xml" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_package_caches_jars_in_the_user_cache(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "tbspark").mkdir(parents=True)
    monkeypatch.setattr(settings, "REPO_ROOT", site)  # no pyproject.toml beside the package
    assert settings.jar_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "cache")}) == \
        (tmp_path / "cache" / "tbspark" / "jars").resolve()
    assert settings.jar_cache_dir({"HOME": "/nowhere", "TBSPARK_JAR_CACHE": str(tmp_path / "j")}) == \
        (tmp_path / "j").resolve()


def test_checkout_keeps_its_jar_cache():
    assert settings.jar_cache_dir({}) == REPO / ".cache" / "jars"


def test_packaged_scenario_is_found_inside_the_package():
    from tbspark.scenario import load_scenario, packaged_scenario

    path = packaged_scenario("wind-turbines")
    assert load_scenario(path).name == "wind-turbines"

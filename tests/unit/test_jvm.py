"""Finding Java and Maven, and resolving jars only when the pom changed (no JVM is started here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tbspark.errors import JvmMissingError, StackError
from tbspark.stack import jvm


def _fake_exe(folder: Path, name: str, script: str = "exit 0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_java_home_wins_over_path(tmp_path):
    home_java = _fake_exe(tmp_path / "jdk" / "bin", "java")
    _fake_exe(tmp_path / "bin", "java")
    env = {"JAVA_HOME": str(tmp_path / "jdk"), "PATH": str(tmp_path / "bin")}
    assert jvm.find_java(env) == home_java


def test_java_found_on_path_when_java_home_unset(tmp_path):
    path_java = _fake_exe(tmp_path / "bin", "java")
    assert jvm.find_java({"PATH": str(tmp_path / "bin")}) == path_java


def test_missing_java_names_the_package_to_install(tmp_path):
    with pytest.raises(JvmMissingError) as err:
        jvm.find_java({"PATH": str(tmp_path)})
    assert str(err.value) == ("java not found (not on PATH) — install a Java 17+ runtime "
                              "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


def test_broken_java_home_is_named(tmp_path):
    with pytest.raises(JvmMissingError) as err:
        jvm.find_java({"JAVA_HOME": str(tmp_path / "nojdk"), "PATH": str(tmp_path)})
    assert str(err.value).startswith(f"java not found (JAVA_HOME={tmp_path / 'nojdk'} has no bin/java, and none on PATH)")


def test_stale_cache_without_maven_says_to_install_maven(tmp_path):
    _fake_exe(tmp_path / "bin", "java")
    env = {"PATH": str(tmp_path / "bin")}
    with pytest.raises(JvmMissingError) as err:
        jvm.resolve_jars("kafka", cache_dir=tmp_path / "cache", environ=env)
    assert str(err.value) == ("mvn (Apache Maven) not found on PATH — install Maven (e.g. apt-get install maven), "
                              "or run `make jars` where Maven is installed")


def test_current_cache_is_used_without_running_maven(tmp_path):
    folder = tmp_path / "cache" / "kafka"
    folder.mkdir(parents=True)
    (folder / "b.jar").write_bytes(b"")
    (folder / "a.jar").write_bytes(b"")
    (folder / jvm.STAMP_NAME).write_text(jvm.pom_sha256() + "\n")
    # No mvn and no java on this PATH: any attempt to resolve would raise.
    jars = jvm.resolve_jars("kafka", cache_dir=tmp_path / "cache", environ={"PATH": str(tmp_path)})
    assert jars == [folder / "a.jar", folder / "b.jar"]


def test_cache_from_another_pom_is_resolved_again_and_replaced_whole(tmp_path):
    folder = tmp_path / "cache" / "spark"
    folder.mkdir(parents=True)
    (folder / "old-1.0.jar").write_bytes(b"")
    (folder / jvm.STAMP_NAME).write_text("0" * 64)
    _fake_exe(tmp_path / "bin", "java")
    # A stand-in Maven that writes one jar where it is told to (-DoutputDirectory=...).
    _fake_exe(tmp_path / "bin", "mvn", 'for a in "$@"; do case "$a" in -DoutputDirectory=*) '
              ': > "${a#-DoutputDirectory=}/new-2.0.jar";; esac; done')
    jars = jvm.resolve_jars("spark", cache_dir=tmp_path / "cache", environ={"PATH": str(tmp_path / "bin")})
    assert [j.name for j in jars] == ["new-2.0.jar"]
    assert jvm.jars_are_current("spark", tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")) == ["spark"]


def test_maven_failure_shows_its_output(tmp_path):
    _fake_exe(tmp_path / "bin", "java")
    _fake_exe(tmp_path / "bin", "mvn", 'echo "[ERROR] Could not resolve dependencies for project"; exit 1')
    with pytest.raises(StackError) as err:
        jvm.resolve_jars("kafka", cache_dir=tmp_path / "cache", environ={"PATH": str(tmp_path / "bin")})
    assert "Maven could not resolve the kafka jars (exit 1):\n[ERROR] Could not resolve dependencies" in str(err.value)
    assert not (tmp_path / "cache" / "kafka").exists()  # no half-filled cache left behind


def test_connector_must_match_installed_pyspark(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "spark"
    folder.mkdir(parents=True)
    (folder / "spark-sql-kafka-0-10_2.13-3.5.1.jar").write_bytes(b"")
    (folder / jvm.STAMP_NAME).write_text(jvm.pom_sha256())
    with pytest.raises(StackError) as err:
        jvm.spark_connector_jars(tmp_path / "cache")
    assert "(spark-sql-kafka-0-10_2.13-3.5.1.jar) does not match pyspark" in str(err.value)


def test_pom_ships_with_the_package_and_pins_the_pyspark_version():
    from importlib import metadata

    pom = jvm.pom_path().read_text()
    assert f"<spark.version>{metadata.version('pyspark')}</spark.version>" in pom
    assert "<artifactId>kafka_2.13</artifactId>" in pom


def test_real_jar_cache_has_the_broker_and_the_connector():
    cp = jvm.kafka_classpath().split(os.pathsep)
    assert any(Path(p).name.startswith("kafka_2.13-") for p in cp)
    assert any(p.name.startswith("spark-sql-kafka-0-10_2.13-") for p in jvm.spark_connector_jars())


def _cache_with_stamp(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "cache" / kind
    folder.mkdir(parents=True)
    (folder / jvm.STAMP_NAME).write_text(jvm.pom_sha256())
    return tmp_path / "cache"


def test_class_archive_is_recorded_first_then_mapped(tmp_path, monkeypatch):
    cache = _cache_with_stamp(tmp_path, "kafka")
    monkeypatch.setenv("TBSPARK_JAR_CACHE", str(cache))
    java = _fake_exe(tmp_path / "bin", "java")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    pending = tmp_path / "state" / "classes.jsa.tmp"
    pending.parent.mkdir()
    assert jvm.cds_options("kafka", java, pending) == [f"-XX:ArchiveClassesAtExit={pending}"]
    pending.write_bytes(b"archive")  # what the JVM writes as it exits
    assert jvm.adopt_cds_archive("kafka", pending, clean_exit=True)
    archive = jvm.cds_archive("kafka", java)
    assert archive.parent == cache / "kafka" and archive.read_bytes() == b"archive"
    assert jvm.cds_options("kafka", java, pending) == [f"-XX:SharedArchiveFile={archive}"]


def test_archive_of_a_killed_jvm_is_dropped(tmp_path, monkeypatch):
    cache = _cache_with_stamp(tmp_path, "kafka")
    monkeypatch.setenv("TBSPARK_JAR_CACHE", str(cache))
    java = _fake_exe(tmp_path / "bin", "java")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    pending = tmp_path / "classes.jsa.tmp"
    pending.write_bytes(b"half an arch")
    assert not jvm.adopt_cds_archive("kafka", pending, clean_exit=False)
    assert not pending.exists() and not jvm.cds_archive("kafka", java).exists()

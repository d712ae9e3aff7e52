"""The JVM side of the stack: find Java and Maven, and resolve the jars listed in tbspark/jvm/pom.xml
(the Kafka broker, Spark's Kafka connector) into the jar cache, once per version of the pom."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path

from tbspark import settings
from tbspark.errors import JvmMissingError, StackError

KINDS = ("kafka", "spark")
STAMP_NAME = ".tbspark-pom-sha256"
JAVA_INSTALL_HINT = "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
MAVEN_INSTALL_HINT = "install Maven (e.g. apt-get install maven), or run `make jars` where Maven is installed"


def find_java(environ: dict[str, str] | None = None) -> Path:
    """The java executable: $JAVA_HOME/bin/java if JAVA_HOME is set, else the one on PATH."""
    java_home = settings.java_home(environ)
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("java", path=settings.search_path(environ))
    if found:
        return Path(found)
    where = f"JAVA_HOME={java_home} has no bin/java, and none on PATH" if java_home else "not on PATH"
    raise JvmMissingError(f"java not found ({where})", JAVA_INSTALL_HINT)


def find_mvn(environ: dict[str, str] | None = None) -> Path:
    """The mvn executable: $MAVEN_HOME/bin/mvn if set, else the one on PATH."""
    maven_home = settings.maven_home(environ)
    if maven_home and os.access(Path(maven_home) / "bin" / "mvn", os.X_OK):
        return Path(maven_home) / "bin" / "mvn"
    found = shutil.which("mvn", path=settings.search_path(environ))
    if found:
        return Path(found)
    raise JvmMissingError("mvn (Apache Maven) not found on PATH", MAVEN_INSTALL_HINT)


def pom_path() -> Path:
    """The Maven project, shipped as package data so an installed tbspark can resolve its jars."""
    return Path(str(resources.files("tbspark") / "jvm" / "pom.xml"))


def pom_sha256() -> str:
    return hashlib.sha256(pom_path().read_bytes()).hexdigest()


def jar_dir(kind: str, cache_dir: Path | None = None) -> Path:
    _check_kind(kind)
    return (cache_dir or settings.jar_cache_dir()) / kind


def jars_are_current(kind: str, cache_dir: Path | None = None) -> bool:
    """True when <cache>/<kind> was filled from this very pom (its stamp holds the pom's hash)."""
    stamp = jar_dir(kind, cache_dir) / STAMP_NAME
    try:
        return stamp.read_text().strip() == pom_sha256()
    except OSError:
        return False


def resolve_jars(kind: str, cache_dir: Path | None = None, environ: dict[str, str] | None = None) -> list[Path]:
    """The jars of one profile of the pom ("kafka" or "spark"), running Maven only when the cache is
    missing or was filled from another version of the pom. The new folder is built aside and renamed
    into place, so a reader never sees half a copy; a lock keeps two resolvers from racing."""
    target = jar_dir(kind, cache_dir)
    if not jars_are_current(kind, cache_dir):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{kind}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not jars_are_current(kind, cache_dir):  # another process may have done it meanwhile
                _copy_dependencies(kind, target, environ)
    jars = sorted(target.glob("*.jar"))
    if not jars:
        raise StackError(f"no jars in {target} after resolving the {kind} profile",
                         f"delete {target} and run `make jars`")
    return jars


def _copy_dependencies(kind: str, target: Path, environ: dict[str, str] | None) -> None:
    mvn = find_mvn(environ)
    find_java(environ)  # Maven needs a JDK too; say so before Maven's own less helpful message
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}.", dir=target.parent))
    cmd = [str(mvn), "-q", "-B", "-f", str(pom_path()), "-P", kind,
           "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=environ)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise StackError(f"Maven could not resolve the {kind} jars (exit {done.returncode}):\n{tail}",
                             "check network access to Maven Central (or ~/.m2 settings) and run `make jars`")
        (staging / STAMP_NAME).write_text(pom_sha256() + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every user of the repo
        old = None
        if target.exists():
            old = target.with_name(f".{kind}.old.{os.getpid()}")
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def cds_archive(kind: str, java: Path, cache_dir: Path | None = None) -> Path:
    """Where the JVM's class-data-sharing archive for one jar folder lives: inside that folder (so a
    re-resolve drops it with the jars), one per Java installation (an archive is tied to its JDK)."""
    java_id = hashlib.sha256(str(Path(java).resolve()).encode()).hexdigest()[:12]
    return jar_dir(kind, cache_dir) / f".classes-{java_id}.jsa"


def cds_options(kind: str, java: Path, pending: Path) -> list[str]:
    """JVM flags for class-data sharing of one jar folder's classes: on a busy 2-core machine it halves
    the broker's start-up. The first JVM records the archive to ``pending`` as it exits (published by
    adopt_cds_archive); later ones map it. A stale or foreign archive is harmless: the JVM (default
    -Xshare:auto) then just starts without it."""
    archive = cds_archive(kind, java)
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}"]
    pending.unlink(missing_ok=True)
    return [f"-XX:ArchiveClassesAtExit={pending}"]


def adopt_cds_archive(kind: str, pending: Path, clean_exit: bool, environ: dict[str, str] | None = None) -> bool:
    """Publish the archive a JVM wrote while exiting, by an atomic rename; a killed JVM may have left
    half a file, which is dropped. Returns True when an archive was published."""
    try:
        if not pending.exists():
            return False
        if clean_exit and pending.stat().st_size > 0:
            os.replace(pending, cds_archive(kind, find_java(environ)))
            return True
        pending.unlink()
    except (OSError, JvmMissingError):
        pending.unlink(missing_ok=True)
    return False


def kafka_classpath(cache_dir: Path | None = None) -> str:
    """The broker's classpath (kafka_2.13, its dependencies and log4j2), resolved if needed."""
    return os.pathsep.join(str(p) for p in resolve_jars("kafka", cache_dir))


def spark_connector_jars(cache_dir: Path | None = None) -> list[Path]:
    """Spark's Kafka connector and its dependencies, for ``spark.jars``. The connector must be built
    for the installed pyspark's version, or Spark fails late with a NoSuchMethodError."""
    jars = resolve_jars("spark", cache_dir)
    want = metadata.version("pyspark")
    connector = [p for p in jars if p.name.startswith("spark-sql-kafka-0-10_")]
    if not connector or not connector[0].name.endswith(f"-{want}.jar"):
        have = connector[0].name if connector else "none"
        raise StackError(f"Spark's Kafka connector in the jar cache ({have}) does not match pyspark {want}",
                         "set spark.version in tbspark/jvm/pom.xml to the pinned pyspark version, then `make jars`")
    return jars


def main(argv: list[str] | None = None) -> int:
    """`python -m tbspark.stack.jvm [kind ...]`: resolve the jars (used by `make jars`)."""
    from tbspark.errors import TbsparkError

    kinds = (argv if argv is not None else sys.argv[1:]) or list(KINDS)
    try:
        for kind in kinds:
            fresh = jars_are_current(kind)
            jars = resolve_jars(kind)
            note = "up to date" if fresh else "resolved with Maven"
            print(f"{kind}: {len(jars)} jars in {jar_dir(kind)} ({note})")
    except TbsparkError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown jar kind {kind!r}; expected one of {KINDS}")


if __name__ == "__main__":
    sys.exit(main())

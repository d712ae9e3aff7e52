"""The Spark JVM's own output goes to a log file, never the terminal.

Two kinds of noise reach a terminal when PySpark starts its JVM: log4j lines (banners, WARN Utils
"Your hostname … resolves to a loopback address", NativeCodeLoader…) and what the JVM itself writes
to its stderr before any logging exists ("WARNING: Using incubator modules: jdk.incubator.vector").
The first is configured away with a log4j2 file named by ``-Dlog4j2.configurationFile`` on the
driver's command line (no process-wide SPARK_CONF_DIR); the second only by the JVM's stderr
itself, so the JVM is started with file descriptor 2 pointing at the log file: the child keeps it,
this process gets its own stderr back as soon as the JVM is up.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

LOG4J2_NAME = "log4j2-tbspark.properties"
_FD_LOCK = threading.Lock()  # two sessions starting at once must not swap stderr under each other


def log4j2_config(log: Path) -> Path:
    """Write the log4j2 configuration that sends everything at WARN and above to ``log``; return it."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    conf = log.parent / LOG4J2_NAME
    conf.write_text(
        "rootLogger.level = warn\n"
        "rootLogger.appenderRef.file.ref = file\n"
        "appender.file.type = File\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {log}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n\n")
    return conf


def java_options(log: Path) -> list[str]:
    """Driver JVM flags that point log4j2 at ``log`` (see ``log4j2_config``)."""
    return [f"-Dlog4j2.configurationFile=file:{log4j2_config(log)}"]


@contextlib.contextmanager
def jvm_stderr_to(log: Path | None) -> Iterator[None]:
    """While the block runs (PySpark launching its JVM), file descriptor 2 is ``log`` (appended):
    the JVM inherits it for its whole life. Does nothing when ``log`` is None."""
    if log is None:
        yield
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with _FD_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.dup2(fd, 2)
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)

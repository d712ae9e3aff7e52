"""One exception tree for all of tbspark.

Errors from libraries (requests, paho, confluent-kafka, py4j, sqlite3) are translated
at the boundary with ``raise ... from exc``; the CLI turns any ``TbsparkError`` into one
red line ``Error: <what> — <what to do>`` and an exit code (``exit_code``).

The CLI's exit codes (documented in ``tbspark --help`` and the README):

    0  success; for verify and demo: the verdict holds
    1  verify / demo ran and the verdict does NOT hold (never an error)
    2  usage or scenario error: bad flags, arguments, environment values, scenario, state directory
    3  cannot reach a service, or a service failed

    TbsparkError                      exit 3
    ├── UsageError                    exit 2  bad flags / arguments / environment values
    ├── ScenarioError                 exit 2  a YAML scenario that does not parse or validate
    ├── StateError                    exit 2  the state directory is missing something or is stale
    ├── StackError                            local services (Kafka broker, platform process)
    │   ├── JvmMissingError                   java or mvn not installed
    │   ├── PortInUseError                    a port we were asked to bind is taken
    │   └── ServiceStartError                 a service did not become ready (log tail attached)
    ├── ThingsBoardError                      talking to ThingsBoard (real or embedded)
    │   ├── TbUnavailableError                connection refused / timed out after retries
    │   └── TbApiError                        an HTTP error answer (status, errorCode, message)
    │       ├── TbAuthError                   401 / 403
    │       └── TbNotFoundError               404
    ├── MqttError                             MQTT connect refused, session lost
    ├── KafkaError                            broker unreachable, topic problems
    ├── AggregationError                      the Spark job
    └── VerificationError                     verify could not judge (nothing to read, no record)
"""

from __future__ import annotations


EXIT_OK = 0           # success / the verdict holds
EXIT_DOES_NOT_HOLD = 1  # verify and demo only
EXIT_USAGE = 2        # bad usage, environment value, scenario or state directory
EXIT_UNAVAILABLE = 3  # cannot reach a service, or a service failed

EXIT_CODES_HELP = ("Exit codes: 0 success (verify/demo: the verdict holds); 1 the verdict does not hold; "
                   "2 usage, scenario or state-directory error; 3 cannot reach a service, or one failed.")


class TbsparkError(Exception):
    """Base of every error tbspark raises on purpose.

    ``hint`` is what the user can do about it; the CLI prints ``<message> — <hint>``.
    """

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class UsageError(TbsparkError):
    exit_code = EXIT_USAGE


class ScenarioError(TbsparkError):
    """A scenario file that cannot be used. ``issues`` holds one line per problem,
    each ``<file>:<line> <key.path>: <what is wrong>``."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, issues: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.issues = list(issues or [])

    def __str__(self) -> str:
        if self.issues:
            return "\n".join(self.issues)
        return super().__str__()


class StateError(TbsparkError):
    exit_code = EXIT_USAGE


class StackError(TbsparkError):
    pass


class JvmMissingError(StackError):
    pass


class PortInUseError(StackError):
    def __init__(self, port: int, flag: str, host: str = "127.0.0.1"):
        super().__init__(
            f"port {port} on {host} is already in use",
            f"stop what holds it, or pass {flag} 0 to pick a free port",
        )
        self.port = port
        self.flag = flag


class ServiceStartError(StackError):
    def __init__(self, message: str, hint: str | None = None, log_tail: str = ""):
        super().__init__(message, hint)
        self.log_tail = log_tail

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n{self.log_tail}" if self.log_tail else base


class ThingsBoardError(TbsparkError):
    pass


class TbUnavailableError(ThingsBoardError):
    pass


class TbApiError(ThingsBoardError):
    def __init__(self, status: int, message: str, error_code: int | None = None,
                 method: str = "", path: str = "", hint: str | None = None):
        where = f"{method} {path} " if method else ""
        super().__init__(f"{where}→ {status}: {message}", hint)
        self.status = status
        self.api_message = message
        self.error_code = error_code
        self.method = method
        self.path = path


class TbAuthError(TbApiError):
    pass


class TbNotFoundError(TbApiError):
    pass


class MqttError(TbsparkError):
    pass


class KafkaError(TbsparkError):
    pass


class AggregationError(TbsparkError):
    pass


class VerificationError(TbsparkError):
    pass

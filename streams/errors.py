"""The service's exceptions: one root, a subclass per area, a stable reason code on bad input.

Every exception class of :mod:`streams` is defined here. Three stand outside the root on
purpose, because nothing may handle them as the service's own failures:
:class:`SchemaViolation` (a ``ValueError``: a value the code built breaks its published schema),
:class:`ApiError` (an HTTP answer of ``mmc web``, not a failure) and :class:`FailpointError`
(a stand-in for a bug in the fault-injection runs).
"""

from __future__ import annotations


class MmcStreamError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigurationError(MmcStreamError):
    """A setting is missing or inconsistent; fix the ``MMC_*`` environment and restart."""


class StackError(MmcStreamError):
    """The embedded broker or Redis could not start; see the message for the binary and port."""


class DependencyUnavailable(MmcStreamError):
    """Kafka or Redis did not answer within ``MMC_STARTUP_TIMEOUT_SECONDS`` at start-up.

    The message names the service, its address (never a password) and the last cause seen.
    Check that the server runs and is reachable from here at that address
    (``MMC_KAFKA_BOOTSTRAP`` / ``MMC_REDIS_URL``, firewalls, TLS and credentials), or give
    it longer to come up with a larger ``MMC_STARTUP_TIMEOUT_SECONDS``; then start again.
    """

    def __init__(self, service: str, address: str, cause: str, waited: float, attempts: int, setting: str) -> None:
        super().__init__(
            f"{service} at {address} did not answer within {waited:.1f} s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}): {cause}; "
            f"check that it runs and that {setting} points at it, or raise MMC_STARTUP_TIMEOUT_SECONDS"
        )
        self.service = service
        self.address = address
        self.cause = cause
        self.waited = waited
        self.attempts = attempts
        self.setting = setting


class InvalidMessage(MmcStreamError):
    """An input message the service refuses; it goes to the dead-letter topic under ``reason``.

    ``reason`` is a stable code (``not_json``, ``round_closed`` …) carried in the
    ``mmc.error.reason`` header; ``message`` is for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class StateLost(MmcStreamError):
    """Redis lost the state under a running worker (flushed, restarted without persistence, or
    rebuilt by another process). The worker stops consuming and restarts itself in place: its
    start-up recovery rebuilds the state from the input topics. Nothing to do by hand."""


class RoundStateInvalid(MmcStreamError):
    """A round's record in Redis cannot be read: a field is missing or holds something the service
    never writes (not a number, a negative offset, a universe that is not a list of ids).

    The state was damaged or written by another program. Records that need the round are refused
    ``internal_error`` until it is repaired: stop the workers and rebuild the state from the input
    topics (``mmc rebuild --wipe``).
    """

    def __init__(self, round_number: int, problem: str) -> None:
        super().__init__(f"round {round_number}'s stored record is invalid: {problem}")
        self.round = round_number
        self.problem = problem


class EventFileError(MmcStreamError):
    """A line of an event file is not an event; regenerate the file with ``mmc simulate``."""


class ReplayError(MmcStreamError):
    """Events could not be sent: check ``MMC_KAFKA_BOOTSTRAP`` and the topics (``mmc topics``)."""


class UnknownModel(MmcStreamError):
    """The model has no scored round in this deployment's state; check the id and MMC_STATE_NAMESPACE."""


class WorkerDied(MmcStreamError):
    """A demo worker exited; its log (named in the message) says why."""


class SchemaViolation(ValueError):
    """A value does not match its topic's published schema (``path``: where, ``keyword``: which rule)."""

    def __init__(self, name: str, path: str, keyword: str, message: str) -> None:
        super().__init__(f"{name}: {path or '(root)'}: {message}")
        self.path = path
        self.keyword = keyword


class ApiError(Exception):
    """An HTTP error with a stable code, rendered as JSON by :func:`streams.web.app.errors_as_json`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class FailpointError(RuntimeError):
    """Raised at a failpoint armed with ``:raise`` (a stand-in for a bug)."""

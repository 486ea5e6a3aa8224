"""The service's exceptions: one root, a subclass per area, a stable reason code on bad input."""

from __future__ import annotations


class MmcStreamError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigurationError(MmcStreamError):
    """A setting is missing or inconsistent; fix the ``MMC_*`` environment and restart."""


class StackError(MmcStreamError):
    """The embedded broker or Redis could not start; see the message for the binary and port."""


class InvalidMessage(MmcStreamError):
    """An input message the service refuses; it goes to the dead-letter topic under ``reason``.

    ``reason`` is a stable code (``not_json``, ``round_closed`` …) carried in the
    ``mmc.error.reason`` header; ``message`` is for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

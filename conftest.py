"""Test-wide setup: keep structlog's output out of doctests and test reports."""

from __future__ import annotations

import structlog


# safeserve logs its decisions through structlog and leaves the configuration to the
# application. In the suite, events are rendered to nothing; tests that check events use
# structlog.testing.capture_logs().
def quiet_structlog() -> None:
    """Render every event to nothing (tests that check events use capture_logs)."""
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


quiet_structlog()

"""Isolation every test needs: each CLI command runs in its own process in real use, so logging that
one test's command set up (a stderr handler, INFO level) must not leak into the next test's output."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_kdsam_logger() -> Iterator[None]:
    logger = logging.getLogger("kdsam")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)

"""Where ultrachat keeps files between runs: ``$ULTRACHAT_CACHE`` (default ``~/.cache/ultrachat``).

    <cache root>/models/       the embedded model, converted once
    <cache root>/responses.sqlite  the response cache (``cache = true`` in a recipe)
    <cache root>/batches.sqlite    the journal of provider batch jobs
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ULTRACHAT_CACHE"


def cache_root() -> Path:
    """The cache folder: ``$ULTRACHAT_CACHE``, else ``~/.cache/ultrachat``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "ultrachat"))


def response_cache_path() -> Path:
    """Where ``cache = true`` in a recipe keeps responses: ``<cache root>/responses.sqlite``."""
    return cache_root() / "responses.sqlite"


def batch_journal_path() -> Path:
    """The journal of submitted provider batches: ``<cache root>/batches.sqlite``."""
    return cache_root() / "batches.sqlite"

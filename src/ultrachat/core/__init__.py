"""The foundation layer: what every package needs, importing nothing of ultrachat above it.

* :mod:`.records`: the dialogue record type and its chat-message form;
* :mod:`.corpus`: the one JSONL reader, crash-safe appends, a command's output folder;
* :mod:`.hashing`: every stable hash, and the compact hash index built on it;
* :mod:`.progress`: progress displays and the stderr console;
* :mod:`.callcache`: the one resumable call cache, and a bounded gather;
* :mod:`.config`: TOML config loading with one-line errors;
* :mod:`.paths`: the cache folder (``$ULTRACHAT_CACHE``);
* :mod:`.text`, :mod:`.turns`: list and text parsing, heuristics about dialogue turns;
* :mod:`.errors`: :class:`~.errors.UserError`, the base of every error a user can fix.

``lint-imports`` (``make lint``) checks that nothing here imports another ultrachat package.
"""

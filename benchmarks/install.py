"""Cold install, side by side: what `make demo` costs a fresh machine before it generates.

Each variant installs the core (`make install`: the package, the embedded model) into a
fresh clone with empty pip and uv caches, one after the other in the same run:

- *base*: the commit before the lock (``BASE``), pip resolving the old pins;
- *pip + lock*: this tree with ``INSTALLER=pip`` (pip installing from ``requirements.lock``);
- *uv + lock*: this tree as `make` runs it (uv installing from ``requirements.lock``).

    python -m benchmarks install
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = os.environ.get("ULTRACHAT_BENCH_INSTALL_BASE", "8a2e804")  # the last commit without the lock


def _clone(dest: Path, commit: str | None) -> None:
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    if commit:
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", commit], check=True)


def _install(tree: Path, caches: Path, installer: str | None) -> float:
    env = {**os.environ, "PIP_CACHE_DIR": str(caches / "pip"), "UV_CACHE_DIR": str(caches / "uv")}
    cmd = ["make", "install"] + ([f"INSTALLER={installer}"] if installer else [])
    started = time.monotonic()
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def run() -> str:
    variants = [("base (pip, old pins)", BASE, None), ("pip + lock", None, "pip"), ("uv + lock", None, None)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ultrachat-bench-install-") as tmp:
        for i, (label, commit, installer) in enumerate(variants):
            tree = Path(tmp) / f"tree{i}"
            _clone(tree, commit)
            load = os.getloadavg()[0]
            rows.append((label, _install(tree, Path(tmp) / f"caches{i}", installer), load))
    base_s = rows[0][1]
    lines = ["## Cold install (`make install`, empty pip/uv caches)\n",
             "Command: `python -m benchmarks install`. Each variant installs the core (package + embedded "
             "model) into a fresh clone with empty caches, one after the other in one run.\n",
             "| variant | seconds | vs base | load average at start |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {s:.0f} | {base_s / s:.1f}x | {load:.1f} |" for label, s, load in rows]
    return "\n".join(lines) + "\n"

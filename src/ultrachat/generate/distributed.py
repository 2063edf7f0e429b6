"""Scale a run out over a Ray cluster: ``ultrachat generate world --ray ADDRESS``.

The driver plans exactly as a local run does (same output folder, lock, fingerprint and
plan cache), then shards the opening lines still to do over Ray tasks. Each task builds
the recipe's dialogue engine on its node and streams finished dialogues back in batches;
the driver alone appends them to ``dialogues.jsonl`` with the local run's crash-safe group
commit. The exactly-once guarantee is therefore the local one: a dialogue is done once its
line is on disk; a killed driver or worker loses only the dialogues in flight, which the
rerun regenerates, and no id is ever written twice.

Every call of one dialogue is made by one worker, so an engine replica on that worker
(vLLM on its GPU) keeps the dialogue's growing prefix in its cache. ``concurrency`` in the
recipe applies per worker. Addresses: ``local`` starts a private Ray instance on this
machine; ``auto`` joins the cluster this node belongs to; ``HOST:PORT`` or
``ray://HOST:10001`` names one.

Example::

    summary = generate_ray("world", load_recipe("recipe.toml"), address="local", workers=4)
"""

from __future__ import annotations

import asyncio
import json
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import aio
from ..backends import BackendPool, Usage
from ..core.hashing import HashIndex, uint64
from ..core.progress import RunProgress
from ..recipe import Recipe
from .accounting import Ledger, LedgerLine, MeteredBackend
from .budget import TokenBudget
from .engine import DialogueEngine, EngineStats
from .sector import Opening
from .store import RunStore

if TYPE_CHECKING:
    from .runner import Openings


# A worker gone (process killed, node lost, out of memory), as opposed to an error the task
# itself raised (RayTaskError): only the first kind is retried, by resubmitting the shard.
MAX_BARREN_RESTARTS = 3


def _worker_lost() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rx

    return (rx.WorkerCrashedError, rx.NodeDiedError, rx.LocalRayletDiedError, rx.ObjectLostError,
            rx.OwnerDiedError, rx.OutOfMemoryError)



def shard_of(dialogue_id: str, shards: int) -> int:
    """Stable shard of an id: the same on every machine and rerun."""
    return uint64(dialogue_id, "sha256") % shards


class _Sink:
    """Stands in for the run store inside a worker: batches go to the streaming generator."""

    def __init__(self, out: queue.Queue[tuple[str, Any]]) -> None:
        self.out = out

    def save_dialogues(self, batch: list[dict[str, Any]]) -> None:
        self.out.put(("batch", batch))


class _ShardOpenings:
    """A shard's openings as JSON lines (one bytes object, how the driver ships them),
    decoded one at a time as the worker's queue takes them."""

    def __init__(self, lines: bytes, count: int) -> None:
        self.lines, self.count = lines, count

    def __iter__(self) -> Iterator[Opening]:
        return (Opening(**json.loads(line)) for line in self.lines.splitlines() if line)

    def __len__(self) -> int:
        return self.count


def run_shard(recipe_data: dict[str, Any], sector_name: str, lines: bytes, count: int) -> Iterator[Any]:
    """A Ray task: generate the ``count`` openings in ``lines`` (JSON lines) and yield lists
    of finished dialogue records, then a final ``{"ledger": ...}`` with this worker's calls,
    tokens and cost per stage."""
    from .runner import _run_dialogues, build_engine, build_sector

    recipe = Recipe.model_validate(recipe_data)
    out: queue.Queue[tuple[str, Any]] = queue.Queue()
    ledger = Ledger()

    async def work() -> None:
        pool = BackendPool(recipe.cache_path())
        engine = build_engine(build_sector(sector_name, recipe), recipe, pool, ledger, EngineStats())
        try:
            await pool.start()
            await _run_dialogues(engine, _ShardOpenings(lines, count), _Sink(out),  # type: ignore[arg-type]
                                 RunProgress(enabled=False), TokenBudget(0), recipe.concurrency)
        finally:
            await pool.close()

    def thread() -> None:
        try:
            aio.run(work())
            out.put(("done", None))
        except BaseException as exc:  # re-raised in the task, so Ray reports it to the driver
            out.put(("error", exc))

    # The event loop runs in a thread so this generator can hand batches to Ray as they come.
    threading.Thread(target=thread, name="ultrachat-shard", daemon=True).start()
    while True:
        kind, payload = out.get()
        if kind == "batch":
            yield payload
        elif kind == "error":
            raise payload
        else:
            yield {"ledger": {f"{stage}\x1f{model}": line.__dict__ for (stage, model), line in ledger.lines.items()}}
            return


class RayDialogues:
    """A ``dialogue_runner`` for :func:`ultrachat.generate.runner.generate_async` that shards
    the dialogues over Ray workers (``workers``: default one per CPU of the cluster)."""

    def __init__(self, address: str, recipe: Recipe, sector_name: str, workers: int | None = None,
                 num_gpus: float = 0.0) -> None:
        self.address = address
        self.recipe = recipe
        self.sector_name = sector_name
        self.workers = workers
        self.num_gpus = num_gpus
        self.restarts = 0  # shards resubmitted after their worker died

    def _init(self) -> int:
        try:
            import ray
        except ImportError:
            raise ValueError("--ray needs Ray: pip install 'ultrachat[cluster]'") from None
        if not ray.is_initialized():
            if self.address == "local":
                # "local" always starts a private instance, never the one a `ray start` left behind
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        return self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _shards(self, todo: Openings, n: int, folder: Path) -> list[tuple[Path, int]]:
        """``todo`` split by :func:`shard_of` into ``n`` files of JSON lines in ``folder``,
        so the driver holds one shard at a time and can resubmit what a dead worker left."""
        files = [open(folder / f"{i}.jsonl", "wb") for i in range(n)]  # noqa: SIM115 - closed below
        counts = [0] * n
        try:
            for op in todo:
                i = shard_of(op.id, n)
                files[i].write(json.dumps(op.to_json(), ensure_ascii=False).encode() + b"\n")
                counts[i] += 1
        finally:
            for fh in files:
                fh.close()
        return [(folder / f"{i}.jsonl", counts[i]) for i in range(n) if counts[i]]

    async def __call__(self, engine: DialogueEngine, todo: Openings, store: RunStore, bars: RunProgress,
                       budget: TokenBudget, concurrency: int) -> bool:
        from .group_commit import GroupCommit

        if not len(todo):
            return False
        import ray

        n = min(self._init(), len(todo))
        task = ray.remote(run_shard).options(num_cpus=1, num_gpus=self.num_gpus, max_retries=0)
        shards = _Shards(task, self.recipe.model_dump(mode="json"), self.sector_name, engine,
                         GroupCommit(store.save_dialogues), bars, budget)
        with tempfile.TemporaryDirectory(prefix="ultrachat-shards-") as tmp:
            files = self._shards(todo, n, Path(tmp))
            try:
                results = await asyncio.gather(*(shards.consume(i, p) for i, (p, _) in enumerate(files)),
                                               return_exceptions=True)
            finally:
                await shards.commit.flush()
        self.restarts += shards.restarts
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and not shards.stopped:
            raise _unwrap(errors[0])
        return shards.stopped


class _Shards:
    """The driver's side of one ``--ray`` run: submits each shard, writes what its worker
    streams back, and resubmits a shard whose worker died, without the dialogues it finished."""

    def __init__(self, task: Any, data: dict[str, Any], sector_name: str, engine: DialogueEngine, commit: Any,
                 bars: RunProgress, budget: TokenBudget) -> None:
        self.task, self.data, self.sector_name = task, data, sector_name
        self.engine, self.commit, self.bars, self.budget = engine, commit, bars, budget
        backend = engine.assistant.backend
        self.ledger = backend.ledger if isinstance(backend, MeteredBackend) else None
        self.received = HashIndex()  # ids written by this run: a resubmitted shard skips them
        self.streams: dict[int, Any] = {}
        self.stopped = False  # the token budget ran out
        self.restarts = 0
        self.worker_lost = _worker_lost()

    async def consume(self, shard: int, path: Path) -> None:
        failures = 0  # consecutive worker deaths without a finished dialogue
        while True:
            lines = b"".join(ln for ln in path.read_bytes().splitlines(keepends=True)
                             if json.loads(ln)["id"] not in self.received)
            if not lines:
                return
            before = len(self.received)
            try:
                await self._stream(shard, lines)
                return
            except self.worker_lost as exc:
                if self.stopped:
                    return
                failures = 0 if len(self.received) > before else failures + 1
                self.restarts += 1
                if failures >= MAX_BARREN_RESTARTS:
                    raise RuntimeError(
                        f"--ray: the worker of shard {shard} died {failures} times in a row without finishing "
                        f"a dialogue (last: {type(exc).__name__}); rerun the same command to continue") from None
                left = lines.count(b"\n") - (len(self.received) - before)
                self.bars.log(f"a Ray worker died ({type(exc).__name__}); shard {shard} resubmitted "
                              f"with its {left} unfinished dialogues")

    async def _stream(self, shard: int, lines: bytes) -> None:
        import ray

        self.streams[shard] = stream = self.task.remote(self.data, self.sector_name, lines, lines.count(b"\n"))
        async for ref in stream:
            item = await ref
            if isinstance(item, dict):
                self._merge_ledger(item["ledger"])
                continue
            for record in item:
                await self._write(record)
            if self.budget.exhausted and not self.stopped:
                self.stopped = True
                for s in self.streams.values():  # dialogues in flight are lost, like a kill: a rerun redoes them
                    ray.cancel(s, force=True)

    async def _write(self, record: dict[str, Any]) -> None:
        if not self.received.add(record["id"]):
            return  # never written twice, whatever a worker sends
        self.engine.stats.record(record)
        tokens = sum(v["prompt"] + v["completion"] for v in record["meta"]["tokens"].values())
        self.budget.add(Usage(tokens, 0))
        await self.commit.add(record)
        self.bars.advance("dialogues", 1, tokens)

    def _merge_ledger(self, lines: dict[str, dict[str, Any]]) -> None:
        if self.ledger is None:
            return
        for key, fields in lines.items():
            stage, model = key.split("\x1f")
            self.ledger.lines.setdefault((stage, model), LedgerLine()).merge(LedgerLine(**fields))


def _unwrap(exc: BaseException) -> BaseException:
    """A worker's own exception (say a BackendError) instead of Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def generate_ray(sector_name: str, recipe: Recipe, address: str = "local", workers: int | None = None,
                 progress: bool = True, console: Any = None) -> Any:
    """Plan locally, generate the dialogues on a Ray cluster; returns the run summary."""
    from .runner import generate_async

    gpus = 1.0 if "vllm" in {recipe.models.user.backend, recipe.models.assistant.backend} else 0.0
    runner = RayDialogues(address, recipe, sector_name, workers, num_gpus=gpus)  # a vLLM engine per GPU worker
    return aio.run(generate_async(sector_name, recipe, progress, console, dialogue_runner=runner))

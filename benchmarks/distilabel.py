"""Side by side with distilabel and curator on the same mock-server workload of multi-round dialogues.

400 dialogues of 3 rounds (5 sequential calls each: assistant, user simulator, assistant,
user simulator, assistant) against our mock OpenAI-compatible server at 200 ms latency,
256 requests in flight, with and without +/-100 ms latency jitter. *ultrachat* is
``generate_async`` through the engine, run store, writer and aiohttp backend (the
orchestration benchmark's bench sector: fixed opening lines, no planning calls).
*distilabel* is a distilabel 1.5.3 pipeline of five ``ChatGeneration`` steps (one per
turn, ``input_batch_size`` 256) with ``OpenAILLM`` pointed at the same server, a small step
after each appending the turn to the conversation. *curator* is bespokelabs-curator 0.1.31
written the way its docs do multi-turn data: one ``curator.LLM`` call per turn over the
whole dataset (``prompt`` builds the turn's messages from the row, ``parse`` appends the
reply), so every turn is a barrier, with its ``openai`` backend pointed at the same server
(``max_concurrent_requests`` 256, rate limits set far above the load, its response cache
off). Each tool is installed in its own throwaway virtualenv (``/tmp/ultrachat-bench-venv``,
``/tmp/ultrachat-bench-curator``, created on first use; never the project's) and runs there
as a subprocess. Curator counts tokens with tiktoken, which downloads its ``cl100k_base``
table on first use; offline, ``TIKTOKEN_CACHE_DIR`` points tiktoken at the copy litellm (a
curator dependency) ships in ``litellm/litellm_core_utils/tokenizers`` (tiktoken checks the
file's SHA-256, so it is the genuine table). Wall time includes each tool's start-up;
dialogues/s is 400 / wall time.

    python -m benchmarks distilabel
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIALOGUES = 400
IN_FLIGHT = 256
LATENCY_MS = 200
JITTER_MS = (0, 100)
VENV = Path(os.environ.get("ULTRACHAT_BENCH_VENV", "/tmp/ultrachat-bench-venv"))
PACKAGES = ["distilabel==1.5.3", "openai==3.57.0", "requests==2.32.5"]  # requests: an undeclared import
CURATOR_VENV = Path(os.environ.get("ULTRACHAT_BENCH_CURATOR_VENV", "/tmp/ultrachat-bench-curator"))
CURATOR_PACKAGES = ["bespokelabs-curator==0.1.31", "litellm==1.83.7", "openai==2.30.0", "tiktoken==0.12.0",
                    "datasets==3.6.0"]
# tiktoken's cache file name for cl100k_base: sha1 of the table's download address.
CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
COMMAND = "python -m benchmarks distilabel"

# Runs inside the throwaway venv: argv = base_url, dialogues, in_flight. Prints JSON.
DISTILABEL_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, StepInput, step
from distilabel.steps.tasks import ChatGeneration

url, n, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


@step(inputs=["messages", "generation"], outputs=["messages", "sim_messages"])
def AppendTurn(inputs: StepInput):
    for row in inputs:
        role = "assistant" if len(row["messages"]) % 2 == 1 else "user"
        row["messages"] = row["messages"] + [{"role": role, "content": row["generation"] or ""}]
        # The user simulator sees the transcript as one task-framed user message.
        transcript = "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])
        row["sim_messages"] = [{"role": "user", "content": "Write the next message this user would send.\n"
                                + transcript}]
    yield inputs


with Pipeline(name="ultrachat-bench") as pipeline:
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: why do the tides follow the moon?"}]}
            for i in range(n)]
    previous = LoadDataFromDicts(data=rows, batch_size=n)
    for turn in range(5):
        llm = OpenAILLM(model="mock", base_url=url, api_key="sk-bench",
                        generation_kwargs={"max_new_tokens": 256, "temperature": 0.7})
        gen = ChatGeneration(name=f"turn_{turn}", llm=llm, input_batch_size=in_flight,
                             input_mappings={} if turn % 2 == 0 else {"messages": "sim_messages"})
        append = AppendTurn(name=f"append_{turn}", input_batch_size=n)
        previous >> gen >> append
        previous = append

distiset = pipeline.run(use_cache=False)
done = sum(len(split) for cfg in distiset.values() for split in cfg.values())
print(json.dumps({"seconds": time.perf_counter() - t0, "dialogues": done}))
'''


# Runs inside curator's throwaway venv: argv = base_url, dialogues, in_flight. Prints JSON.
CURATOR_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
from bespokelabs import curator
from datasets import Dataset

url, n, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


class Turn(curator.LLM):
    """One turn of every dialogue: the assistant answers, or the user simulator asks."""

    def __init__(self, user_turn, **kwargs):
        self.user_turn = user_turn
        super().__init__(**kwargs)

    def prompt(self, row):
        if not self.user_turn:
            return row["messages"]
        # The user simulator sees the transcript as one task-framed user message.
        transcript = "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])
        return [{"role": "user", "content": "Write the next message this user would send.\n" + transcript}]

    def parse(self, row, response):
        role = "user" if self.user_turn else "assistant"
        return {"id": row["id"], "messages": row["messages"] + [{"role": role, "content": response}]}


rows = Dataset.from_list([{"id": i, "messages": [{"role": "user",
                                                  "content": f"Question {i}: why do the tides follow the moon?"}]}
                          for i in range(n)])
params = {"base_url": url, "max_concurrent_requests": in_flight, "max_requests_per_minute": 10_000_000,
          "max_tokens_per_minute": 10_000_000_000, "require_all_responses": True}
for turn in range(5):  # a barrier per turn: turn k+1 starts once every dialogue has turn k
    llm = Turn(turn % 2 == 1, model_name="gpt-4o-mini", backend="openai", backend_params=params,
               generation_params={"max_tokens": 256, "temperature": 0.7})
    rows = llm(rows).dataset
done = sum(len(m) == 6 for m in rows["messages"])
print(json.dumps({"seconds": time.perf_counter() - t0, "dialogues": done}))
'''


def _ensure(venv: Path, module: str, packages: list[str]) -> Path:
    """Create a throwaway venv with ``packages`` once; returns its python."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import {module}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True, timeout=1800)
    return python


def ensure_venv() -> Path:
    """The throwaway venv with distilabel; returns its python."""
    return _ensure(VENV, "distilabel", PACKAGES)


def ensure_curator_venv() -> tuple[Path, Path]:
    """The throwaway venv with curator; returns its python and the folder holding litellm's
    bundled tiktoken tables (``TIKTOKEN_CACHE_DIR``, so curator runs offline)."""
    python = _ensure(CURATOR_VENV, "bespokelabs.curator", CURATOR_PACKAGES)
    where = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('litellm').origin)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    tables = Path(where).parent / "litellm_core_utils" / "tokenizers"
    if not (tables / CL100K_CACHE_NAME).exists():
        raise RuntimeError(f"{tables}: litellm no longer ships tiktoken's cl100k_base table; curator would "
                           "download it at run time")
    return python, tables


def run_ultrachat(url: str, out: str) -> float:
    from benchmarks.orchestration import run_ours
    from ultrachat import aio

    t0 = time.perf_counter()
    aio.run(run_ours(url, IN_FLIGHT, out))  # on uvloop, as the CLI runs
    return time.perf_counter() - t0


def _run_script(name: str, python: Path, script: str, url: str, workdir: str, env: dict[str, str]) -> float:
    """Run a contender's script in its venv; returns its own wall time (start-up included)."""
    proc = subprocess.run([str(python), "-c", script, url, str(DIALOGUES), str(IN_FLIGHT)],
                          capture_output=True, text=True, env={**os.environ, **env}, cwd=workdir, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} run failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["dialogues"] != DIALOGUES:
        raise RuntimeError(f"{name} produced {result['dialogues']} complete dialogues, not {DIALOGUES}")
    return float(result["seconds"])


def run_distilabel(python: Path, url: str, workdir: str) -> float:
    env = {"DISTILABEL_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
           "DISTILABEL_CACHE_DIR": os.path.join(workdir, "distilabel-cache")}
    return _run_script("distilabel", python, DISTILABEL_SCRIPT, url, workdir, env)


def run_curator(python: Path, tables: Path, url: str, workdir: str) -> float:
    env = {"OPENAI_API_KEY": "sk-bench", "TIKTOKEN_CACHE_DIR": str(tables), "CURATOR_DISABLE_CACHE": "1",
           "CURATOR_CACHE_DIR": os.path.join(workdir, "curator-cache"), "TELEMETRY_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": os.path.join(workdir, "hf")}
    return _run_script("curator", python, CURATOR_SCRIPT, url, workdir, env)


def request_span(server: object) -> float:
    """Seconds from the first to the last request the mock server answered since its reset:
    the generation itself, without either tool's start-up."""
    log = server.stats()["log"]  # type: ignore[attr-defined]
    return float(log[-1][0] - log[0][0]) if log else 0.0


def run() -> str:
    from ultrachat.testing import MockServer

    python = ensure_venv()
    curator_python, tables = ensure_curator_venv()
    contenders = [("ultrachat", lambda url, tmp: run_ultrachat(url, os.path.join(tmp, "ours"))),
                  ("distilabel 1.5.3", lambda url, tmp: run_distilabel(python, url, tmp)),
                  ("curator 0.1.31", lambda url, tmp: run_curator(curator_python, tables, url, tmp))]
    rows: list[tuple[int, str, float, float]] = []  # jitter, contender, wall s, requests span s
    for jitter in JITTER_MS:
        with MockServer("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(jitter)) as server, \
                tempfile.TemporaryDirectory() as tmp:
            for name, contend in contenders:
                server.control(reset=True)
                wall = contend(server.url, tmp)
                rows.append((jitter, name, wall, request_span(server)))
    load = os.getloadavg()
    lines = [
        "## Side by side: ultrachat vs distilabel and curator (400 dialogues x 3 rounds, 256 in flight)",
        "",
        f"Command: `{COMMAND}`. Same mock server (200 ms latency, jitter as shown), same 5-call dialogues, "
        "one run each, back to back; wall time includes start-up. distilabel 1.5.3 runs in a throwaway "
        f"virtualenv ({VENV}) as five ChatGeneration steps (a batch barrier per turn); curator 0.1.31 in "
        f"another ({CURATOR_VENV}) as one `curator.LLM` call per turn over the dataset (a barrier per turn), "
        "offline through litellm's bundled tiktoken table. "
        f"Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min), "
        f"{os.cpu_count()} CPUs.",
        "",
        "*wall* includes each tool's start-up (distilabel starts a process per step); *requests* is the span "
        "from the first to the last request the server answered, i.e. the generation alone. *ours vs* is "
        "their time over ours (higher is better for ultrachat).",
        "",
        "| jitter | contender | wall s | dialogues/s (wall) | requests span s | dialogues/s (span) | "
        "ours vs (wall) | ours vs (span) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for jitter in JITTER_MS:
        mine = [r for r in rows if r[0] == jitter]
        _, _, ours_wall, ours_span = mine[0]
        for _, name, wall, span in mine:
            vs = ("", "") if name == "ultrachat" else (f"{wall / ours_wall:.2f}x", f"{span / ours_span:.2f}x")
            lines.append(f"| +/-{jitter} ms | {name} | {wall:.1f} | {DIALOGUES / wall:.1f} | {span:.1f} | "
                         f"{DIALOGUES / span:.1f} | {vs[0]} | {vs[1]} |")
    lines += ["", "Target: at least 2x distilabel and 1.5x curator, with and without jitter."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())

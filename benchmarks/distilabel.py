"""Side by side with distilabel on the same mock-server workload of multi-round dialogues.

400 dialogues of 3 rounds (5 sequential calls each: assistant, user simulator, assistant,
user simulator, assistant) against our mock OpenAI-compatible server at 200 ms latency,
256 requests in flight, with and without +/-100 ms latency jitter. *ultrachat* is
``generate_async`` through the engine, run store, writer and aiohttp backend (the
orchestration benchmark's bench sector: fixed opening lines, no planning calls).
*distilabel* is a distilabel 1.5.3 pipeline of five ``ChatGeneration`` steps (one per
turn, ``input_batch_size`` 256) with ``OpenAILLM`` pointed at the same server, a small step
after each appending the turn to the conversation. Distilabel is installed in a throwaway
virtualenv (``/tmp/ultrachat-bench-venv``, created on first use; never the project's) and
runs there as a subprocess. Wall time includes each tool's start-up; dialogues/s is
400 / wall time.

    python -m benchmarks distilabel
"""

from __future__ import annotations

import asyncio
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


def ensure_venv() -> Path:
    """Create the throwaway venv with distilabel once; returns its python."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import distilabel"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True, timeout=1800)
    return python


def run_ultrachat(url: str, out: str) -> float:
    from benchmarks.orchestration import run_ours

    t0 = time.perf_counter()
    asyncio.run(run_ours(url, IN_FLIGHT, out))
    return time.perf_counter() - t0


def run_distilabel(python: Path, url: str, workdir: str) -> float:
    env = {**os.environ, "DISTILABEL_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
           "DISTILABEL_CACHE_DIR": os.path.join(workdir, "distilabel-cache")}
    proc = subprocess.run([str(python), "-c", DISTILABEL_SCRIPT, url, str(DIALOGUES), str(IN_FLIGHT)],
                          capture_output=True, text=True, env=env, cwd=workdir, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"distilabel run failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["dialogues"] != DIALOGUES:
        raise RuntimeError(f"distilabel produced {result['dialogues']} rows, not {DIALOGUES}")
    return float(result["seconds"])


def request_span(server: object) -> float:
    """Seconds from the first to the last request the mock server answered since its reset:
    the generation itself, without either tool's start-up."""
    log = server.stats()["log"]  # type: ignore[attr-defined]
    return float(log[-1][0] - log[0][0]) if log else 0.0


def run() -> str:
    from ultrachat.testing import MockServer

    python = ensure_venv()
    rows = []
    for jitter in JITTER_MS:
        with MockServer("--latency-ms", str(LATENCY_MS), "--jitter-ms", str(jitter)) as server, \
                tempfile.TemporaryDirectory() as tmp:
            server.control(reset=True)
            ours = run_ultrachat(server.url, os.path.join(tmp, "ours"))
            ours_span = request_span(server)
            server.control(reset=True)
            theirs = run_distilabel(python, server.url, tmp)
            theirs_span = request_span(server)
        rows.append((jitter, ours, ours_span, theirs, theirs_span))
    lines = [
        "## Side by side: ultrachat vs distilabel (400 dialogues x 3 rounds, 256 in flight)",
        "",
        f"Command: `{COMMAND}`. Same mock server (200 ms latency, jitter as shown), same 5-call dialogues, "
        "one run each, back to back; wall time includes start-up. distilabel 1.5.3 runs in a throwaway "
        f"virtualenv ({VENV}) as five ChatGeneration steps (a batch barrier per turn).",
        "",
        "*wall* includes each tool's start-up (distilabel starts a process per step); *requests* is the span "
        "from the first to the last request the server answered, i.e. the generation alone.",
        "",
        "| jitter | contender | wall s | dialogues/s (wall) | requests span s | dialogues/s (span) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for jitter, ours, ours_span, theirs, theirs_span in rows:
        for name, wall, span in (("ultrachat", ours, ours_span), ("distilabel 1.5.3", theirs, theirs_span)):
            lines.append(f"| +/-{jitter} ms | {name} | {wall:.1f} | {DIALOGUES / wall:.1f} | {span:.1f} | "
                         f"{DIALOGUES / span:.1f} |")
        lines.append(f"| +/-{jitter} ms | ratio | | {theirs / ours:.2f}x | | {theirs_span / ours_span:.2f}x |")
    lines += ["", "Target: at least 2x distilabel with and without jitter. Curator 0.1.31 installs but cannot run "
              "offline (it downloads tiktoken's cl100k_base encoding at run time), so it is not measured here."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())

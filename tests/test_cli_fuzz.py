"""Property tests of the one error boundary: random flag values, random recipe fields and
damaged state files thrown at every command, in process through typer's test runner.

The property: a command either works or stops with exit 1 (a runtime error: one line
``error: ...`` naming the file, flag or field) or 2 (a bad command line: typer's usage box,
or one ``error:`` line naming the flag); never an exception, never "internal error" (the
boundary's name for a bug). Budget: about 60 s on a loaded 2-core machine (the example
counts below; ``FUZZ_EXAMPLES=N`` scales them, e.g. 10x for a longer hunt). Hypothesis
prints the failing example and its seed (``--hypothesis-seed``) to replay it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ultrachat.cli import app

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FAKE = '[models.user]\nbackend = "fake"\nmodel = "fake"\n[models.assistant]\nbackend = "fake"\nmodel = "fake"\n'

# Commands that serve or run forever (explore serves unless --index-only, added below) or
# whose defaults load large models for minutes (demo) are left out; the rest is every command.
SKIP = {("mock-server",), ("demo",)}
# Flags that reach other machines (a Ray cluster, a URL) are never randomised.
NEVER = {"--ray", "--ray-workers", "--base-url", "--judge-base-url", "--embeddings-url", "--reward-model"}
# Flags forced so that a run stays small and offline (the fake backend, no embedding model).
FORCED = {
    "generate": ["--no-progress", "--max-total-tokens", "3000"],
    "answer": ["--backend", "fake", "--no-progress", "--limit", "2"],
    "best-of-n": ["--backend", "fake", "--judge-backend", "fake", "--no-progress", "--limit", "2"],
    "eval": ["--judge-backend", "fake", "--no-progress"],
    "stats": ["--embedder", "none", "--tokenizer", "whitespace"],
    "split-long": ["--tokenizer", "whitespace"],
    "explore": ["--index-only"],
    "plan": ["--sample", "2"],
}


def _commands() -> list[tuple[tuple[str, ...], object]]:
    import typer.main

    found: list[tuple[tuple[str, ...], object]] = []

    def walk(cmd: object, prefix: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, (*prefix, name))
        elif prefix not in SKIP:
            found.append((prefix, cmd))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random values are also relative paths (an index, a journal named "0"): files they
    create land in a scratch folder, never in the repository."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Damaged and odd inputs: each a file or folder a user could pass by mistake."""
    root = tmp_path_factory.mktemp("pool")
    files = {
        "empty.jsonl": b"", "blank.jsonl": b"\n \n", "bytes.jsonl": b'{"id": "a", "data": ["caf\xe9", "x"]}\n',
        "json.jsonl": b'{"id": "a", "data": [}\n', "schema.jsonl": b'{"id": [1], "data": ["q", "r"]}\n',
        "list.json": b"[1, 2", "torn.parquet": b"PAR1\x00\x00", "bad.toml": b"seed = = 1\n",
        "table.toml": b"dialogue = 3\n", "bytes.toml": b"seed = \xff\n", "bad.csv": b"name,type\n,\n",
        "bracket[x].jsonl": b'{"id": "[/x]", "data": ["[bold]q", "r"]}\n',
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "fake.toml").write_text(FAKE, encoding="utf-8")
    (root / "folder").mkdir()
    (root / "folder" / "config.json").write_text("{not json")
    return {name: root / name for name in [*files, "fake.toml", "folder", "missing.jsonl"]}


def _value(draw: st.DrawFn, pool: dict[str, Path], small: bool) -> str:
    ints = st.integers(-3, 6) if small else st.integers(-(10**12), 10**12)
    return draw(st.one_of(
        ints.map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from([str(p) for p in pool.values()]),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
        st.sampled_from(["", "[/x]", "[bold]", "-1", "0", "nan", "local", "fake", "openai", "zero3", "a,b,c"]),
    ))


@st.composite
def invocation(draw: st.DrawFn, pool: dict[str, Path], out: Path, command: tuple[tuple[str, ...], object]
               ) -> tuple[tuple[str, ...], list[str]]:
    path, cmd = command
    small = path[0] in ("generate", "plan", "answer", "best-of-n", "eval", "train")
    args = [*path, *FORCED.get(path[0], [])]
    if path[0] in ("generate", "plan"):  # the fake backend (random recipes: test_random_recipe_fields)
        args += ["--recipe", str(pool["fake.toml"])] if path[0] == "generate" else [str(pool["fake.toml"])]
    for param in cmd.params:  # type: ignore[attr-defined]
        if param.param_type_name == "argument":
            if path[0] != "plan" and (param.required or draw(st.booleans())):
                args.append(draw(st.sampled_from([str(p) for p in pool.values()])) if draw(st.integers(0, 3))
                            else _value(draw, pool, small))
            continue
        name = param.opts[0]
        if name in NEVER or name in args or (not draw(st.integers(0, 2)) and not param.required):
            continue
        if name in ("--out", "-o"):
            args += [name, str(out / draw(st.sampled_from(["o", "o.jsonl", "o.json"])))]
        elif getattr(param, "is_flag", False):
            args.append(name if not param.secondary_opts or draw(st.booleans()) else param.secondary_opts[0])
        else:
            args += [name, _value(draw, pool, small)]
    return path, args


def check(result: object, args: list[str]) -> None:
    """The boundary's promise for one invocation."""
    exc = result.exception  # type: ignore[attr-defined]
    assert exc is None or isinstance(exc, SystemExit), f"{args}: escaped {exc!r}"
    code = result.exit_code  # type: ignore[attr-defined]
    if code == 0:
        return
    err = result.stderr  # type: ignore[attr-defined]
    assert code in (1, 2), (args, code, err)
    assert "Traceback" not in result.output and "internal error" not in err, (args, err)  # type: ignore[attr-defined]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    if code == 1 or not ("Usage:" in err or "Error" in err):
        assert len(lines) == 1 and len(lines[0]) < 600, (args, err)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
@settings(FUZZ, max_examples=int(5 * SCALE))
@given(data=st.data())
def test_random_flags_at_every_command(data: st.DataObject, pool: dict[str, Path], tmp_path_factory,
                                       command: tuple[tuple[str, ...], object]) -> None:
    out = tmp_path_factory.mktemp("out")
    _, args = data.draw(invocation(pool, out, command))
    result = CliRunner().invoke(app, args, input="", env={"ULTRACHAT_CACHE": str(out / "cache"), "COLUMNS": "200"})
    check(result, args)


RECIPE_FIELDS = {
    "seed": st.integers(-5, 5), "dialogues": st.integers(-2, 3), "language": st.sampled_from(["en", "zh", "xx", ""]),
    "concurrency": st.integers(-1, 4), "dialogue": st.one_of(st.integers(0, 3), st.just("x")),
    "dialogue.min_rounds": st.integers(-1, 4), "dialogue.max_rounds": st.integers(-1, 4),
    "dialogue.user_prompts": st.sampled_from(["task", "persona", "other"]),
    "dialogue.max_regenerations": st.integers(-1, 3), "world.topics": st.lists(st.text(max_size=8), max_size=3),
    "world.subtopics_per_request": st.integers(-1, 60), "world": st.just(1),
    "models.user.temperature": st.floats(-1, 3), "models.user.max_tokens": st.integers(-5, 50),
    "models.assistant.backend": st.sampled_from(["fake", "nope"]), "models": st.just("x"),
    "prompts_dir": st.sampled_from(["/nonexistent", ""]), "unknown_field": st.integers(0, 1),
    "world.topics_file": st.sampled_from(["/nonexistent.txt"]),
}


def _toml(fields: dict[str, object]) -> str:
    """A fake-backend recipe with ``fields`` set (dotted keys are tables; a later key wins)."""
    doc: dict[str, object] = {"models": {role: {"backend": "fake", "model": "fake"} for role in ("user", "assistant")}}
    for dotted, value in fields.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]  # type: ignore[assignment]
        node[leaf] = value

    def emit(table: dict[str, object], name: str) -> str:
        text = f"[{name}]\n" if name else ""
        text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items() if not isinstance(v, dict))
        return text + "".join(emit(v, f"{name}.{k}" if name else k) for k, v in table.items() if isinstance(v, dict))

    return emit(doc, "")


@settings(FUZZ, max_examples=int(40 * SCALE))
@given(fields=st.dictionaries(st.sampled_from(sorted(RECIPE_FIELDS)), st.none(), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: RECIPE_FIELDS[k] for k in keys})),
       sector=st.sampled_from(["world", "writing", "entities"]), dry=st.booleans())
def test_random_recipe_fields(fields: dict[str, object], sector: str, dry: bool, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("recipe")
    recipe = root / "r.toml"
    text = _toml(fields)
    recipe.write_text(text, encoding="utf-8")
    args = ["generate", sector, "-r", str(recipe), "--out", str(root / "o"), "--no-progress",
            "--max-total-tokens", "3000", *(["--dry-run"] if dry else [])]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    check(result, [*args, text])
    if result.exit_code == 1:
        assert "r.toml" in result.stderr or "prompts_dir" in result.stderr or "nonexistent" in result.stderr, \
            (text, result.stderr)


STATE = ["run.json", "report.json", "plan/calls.jsonl", "plan/openings.jsonl", "plan/emissions.jsonl",
         "dialogues.jsonl"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("state")
    recipe = root / "r.toml"
    recipe.write_text(FAKE, encoding="utf-8")
    res = CliRunner().invoke(app, ["generate", "world", "-r", str(recipe), "--dialogues", "3", "--out",
                                   str(root / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    return recipe, root / "run"


def _damage(data: bytes, how: str, cut: int, junk: bytes) -> bytes:
    cut = cut % (len(data) + 1)
    return {"empty": b"", "truncate": data[:cut], "junk": data[:cut] + junk + data[cut:],
            "replace": junk, "bytes": data[:cut] + b"\xff\xfe" + data[cut:]}[how]


@settings(FUZZ, max_examples=int(30 * SCALE))
@given(name=st.sampled_from(STATE), how=st.sampled_from(["empty", "truncate", "junk", "replace", "bytes"]),
       cut=st.integers(0, 10**6), junk=st.sampled_from([b"{", b"[]", b'{"key": 1}\n', b"\n\n", b'"x"\n', b"null\n",
                                                          b'{"id": 5, "data": []}\n']),
       more=st.integers(0, 2))
def test_damaged_state_files(finished_run: tuple[Path, Path], tmp_path_factory, name: str, how: str, cut: int,
                             junk: bytes, more: int) -> None:
    """A damaged file of a generate folder: the rerun works, or names the file."""
    recipe, run = finished_run
    out = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(run, out)
    target = out / name
    target.write_bytes(_damage(target.read_bytes(), how, cut, junk))
    args = ["generate", "world", "-r", str(recipe), "--dialogues", str(3 + more), "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    check(result, [*args, name, how])
    if result.exit_code:
        assert Path(name).name in result.stderr, (name, how, result.stderr)

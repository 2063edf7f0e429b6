"""filter, dedup and decontaminate on small corpora: rules, reports, outputs, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ultrachat.core.corpus import InvalidLine
from ultrachat.data.decontaminate import BUILTIN, decontaminate
from ultrachat.data.dedup import DedupConfig, dedup_corpus, planted_recall
from ultrachat.data.dedup_eval import jaccard
from ultrachat.data.filter import FilterConfig, filter_corpus, load_filter_config, truecase
from ultrachat.testing.synthetic_corpus import write_corpus


def write(path: Path, items: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items), encoding="utf-8")
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


GOOD = "What are the main causes of coastal erosion along sandy beaches?"
ANSWER = "Waves, currents and storms move sand offshore; rising sea levels make it worse."


def test_filter_rules_repairs_and_report(tmp_path: Path) -> None:
    src = write(tmp_path / "in.jsonl", [
        {"id": "ok", "data": [GOOD, ANSWER, "And how do dunes help?", "Dunes store sand and absorb wave energy."]},
        {"id": "ai", "data": [GOOD, "As an AI language model, I cannot visit beaches."]},
        {"id": "feel", "data": [GOOD, ANSWER, "Do you like beaches?", "I don't have opinions about beaches."]},
        {"id": "empty", "data": [GOOD, "  "]},
        {"id": "polite", "data": [GOOD, ANSWER, "Thank you so much!", "You're welcome!"]},
        {"id": "case", "data": ["hello. how are you? i need help with sand.", "Sure. what do you need?"]},
        {"id": "dangling", "data": [GOOD, ANSWER, "One more question?"]},
        {"id": "thanks-first", "data": ["Thanks!", "You're welcome."]},
    ])
    report = filter_corpus(src, tmp_path / "out", FilterConfig(), progress=False)
    kept = {d["id"]: d for d in lines(tmp_path / "out" / "kept.jsonl")}
    rejected = {d["id"]: d["reject"] for d in lines(tmp_path / "out" / "rejected.jsonl")}
    assert set(kept) == {"ok", "polite", "case", "dangling"}
    assert rejected["ai"]["rule"] == "disclaimer" and "As an AI language model" in rejected["ai"]["reason"]
    assert rejected["feel"]["rule"] == "disclaimer"
    assert rejected["empty"]["rule"] == "empty_turns"
    assert rejected["thanks-first"]["rule"] == "polite_turns"
    assert kept["polite"]["data"] == [GOOD, ANSWER] and kept["polite"]["meta"]["filter"]["repairs"] == ["polite_turns"]
    assert kept["case"]["data"] == ["Hello. How are you? I need help with sand.", "Sure. What do you need?"]
    assert kept["dangling"]["data"] == [GOOD, ANSWER]
    assert "meta" not in kept["ok"]  # untouched dialogues are written unchanged
    assert report["rules"]["disclaimer"]["rejected"] == 2 and report["rules"]["truecase"]["repaired"] == 1
    assert report["total"] == 8 and report["kept"] == 4
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rules"] == report["rules"]


def test_filter_repairs_keep_reasoning_with_its_turn(tmp_path: Path) -> None:
    dunes = "Dunes store sand and absorb wave energy."
    src = write(tmp_path / "in.jsonl", [{
        "id": "r", "data": [GOOD, ANSWER, "Thank you so much!", "You're welcome!", "And how do dunes help?", dunes,
                            "What about reefs?", "Reefs break the"],
        "meta": {"truncated_turns": [7], "reasoning": [{"turn": i, "text": f"thought {i}"} for i in (1, 3, 5, 7)]}}])
    filter_corpus(src, tmp_path / "out", FilterConfig(), progress=False)
    [kept] = lines(tmp_path / "out" / "kept.jsonl")
    # The cut round and the thank-you round are gone; the dunes answer moved from turn 5 to 3.
    assert kept["data"] == [GOOD, ANSWER, "And how do dunes help?", dunes]
    assert kept["meta"]["reasoning"] == [{"turn": 1, "text": "thought 1"}, {"turn": 3, "text": "thought 5"}]


def test_filter_config_from_recipe_table(tmp_path: Path) -> None:
    cfg_file = tmp_path / "recipe.toml"
    cfg_file.write_text('seed = 3\n[filter]\nmin_rounds = 2\nmax_turn_chars = 100\ntruecase = "off"\n')
    cfg = load_filter_config(cfg_file, {"max_rounds": 3})
    assert (cfg.min_rounds, cfg.max_rounds, cfg.max_turn_chars, cfg.truecase) == (2, 3, 100, "off")
    src = write(tmp_path / "in.jsonl", [{"id": "1", "data": [GOOD, ANSWER]},
                                       {"id": "2", "data": [GOOD, ANSWER + " " + ANSWER, GOOD, ANSWER]},
                                       {"id": "3", "data": [GOOD, ANSWER, "why?", "Because."]}])
    report = filter_corpus(src, tmp_path / "o", cfg, progress=False)
    reasons = {d["id"]: d["reject"]["rule"] for d in lines(tmp_path / "o" / "rejected.jsonl")}
    assert reasons == {"1": "rounds", "2": "length"} and report["kept"] == 1
    cfg_file.write_text("[filter]\nmin_rounds = -1\n")
    with pytest.raises(ValueError, match=r"recipe.toml: field 'filter.min_rounds'"):
        load_filter_config(cfg_file)


def test_truecase_leaves_code_urls_and_abbreviations() -> None:
    abbr = FilterConfig().patterns["abbreviations"]
    assert truecase("use `x = 1. y` here. then e.g. this", abbr) == "Use `x = 1. y` here. Then e.g. this"
    assert truecase("see https://a.io/x. ok and iPhone. iPad", abbr) == "See https://a.io/x. ok and iPhone. iPad"
    assert truecase("```\nfor i in x:\n    pass\n```", abbr) == "```\nfor i in x:\n    pass\n```"


def test_malformed_line_stops_with_location_or_goes_to_rejects(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    src = write(tmp_path / "in.jsonl", [{"id": "1", "data": [GOOD, ANSWER]}, "{not json", {"id": "3", "data": []},
                                       {"id": "4", "data": [GOOD, ANSWER]}])
    with pytest.raises(InvalidLine, match=r"in.jsonl:2: invalid JSON"):
        filter_corpus(src, tmp_path / "a", FilterConfig(), progress=False)
    assert not (tmp_path / "a" / "kept.jsonl").exists()  # a failed run publishes nothing
    report = filter_corpus(src, tmp_path / "b", FilterConfig(), skip_invalid=True, progress=False)
    invalid = lines(tmp_path / "b" / "invalid.jsonl")
    assert [(r["line"], r["raw"]) for r in invalid] == [(2, "{not json"), (3, '{"id": "3", "data": []}')]
    assert "non-empty list" in invalid[1]["reason"] and report["kept"] == 2 and report["invalid"] == 2
    run = subprocess.run([*ultrachat_exe, "dedup", str(src), "--out", str(tmp_path / "c"), "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "in.jsonl:2: invalid JSON" in run.stderr and "Traceback" not in run.stderr


def test_outputs_never_overwrite_the_input(tmp_path: Path) -> None:
    src = write(tmp_path / "kept.jsonl", [{"id": "1", "data": [GOOD, ANSWER]}])
    before = src.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite an input"):
        filter_corpus(src, tmp_path, FilterConfig(), progress=False)
    assert src.read_bytes() == before


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "synth.jsonl"
    write_corpus(path, 600, near_rate=0.12, exact_rate=0.04, seed=3)
    return path


@pytest.mark.parametrize("engine", ["rensa", "datasketch"])
def test_dedup_finds_planted_copies(planted: Path, tmp_path: Path, engine: str) -> None:
    truth = {"exact": 0, "near": 0}
    for d in lines(planted):
        if p := d["meta"].get("planted"):
            truth[p["kind"]] += 1
    report = dedup_corpus(planted, tmp_path, DedupConfig(engine=engine), progress=False)
    found = planted_recall(tmp_path / "removed.jsonl")
    assert found["exact"] == truth["exact"] and found["false_positives"] == 0
    # the default banding (24 x 5) flags a pair of Jaccard J with probability 1 - (1 - J**5)**24: the number of
    # copies found matches that S-curve over the copies' true 5-gram Jaccard with their source
    by_id = {d["id"]: d for d in lines(planted)}
    sims = [jaccard(d, by_id[d["meta"]["planted"]["of"]]) for d in by_id.values()
            if (d["meta"].get("planted") or {}).get("kind") == "near"]
    p = [1 - (1 - j**5) ** 24 for j in sims]
    expected, sd = sum(p), sum(q * (1 - q) for q in p) ** 0.5
    assert abs(found["near"] - expected) <= 3 * sd + 2, (found, expected, sd)
    kept_ids = [d["id"] for d in lines(tmp_path / "kept.jsonl")]
    assert report["kept"] == len(kept_ids) and report["total"] == 600
    clusters = lines(tmp_path / "clusters.jsonl")
    assert sum(len(c["removed"]) for c in clusters) == report["removed"]
    assert all(c["kept"] in set(kept_ids) for c in clusters)
    # The first occurrence is kept: every removed copy points at a source that came before it.
    order = {d["id"]: i for i, d in enumerate(lines(planted))}
    assert all(order[r["duplicate"]["of"]] < order[r["id"]] for r in lines(tmp_path / "removed.jsonl"))


def test_dedup_banding_choice_matters(planted: Path, tmp_path: Path) -> None:
    """A banding tuned for Jaccard 0.8 misses most 5-10%-edited copies that 32x4 catches."""
    assert DedupConfig(num_perm=128, threshold=0.8).banding() == (8, 16)
    assert DedupConfig().banding() == (24, 5)
    strict = dedup_corpus(planted, tmp_path / "s", DedupConfig(num_perm=128, threshold=0.8), progress=False)
    loose = dedup_corpus(planted, tmp_path / "l", DedupConfig(num_perm=128, bands=32), progress=False)
    default = dedup_corpus(planted, tmp_path / "d", DedupConfig(), progress=False)
    assert strict["near"] < loose["near"] / 3
    assert strict["near"] < default["near"] < loose["near"]
    exact = dedup_corpus(planted, tmp_path / "e", DedupConfig(near=False, scope="opening"), progress=False)
    assert exact["near"] == 0 and exact["exact"] >= loose["exact"]
    with pytest.raises(ValueError, match="must divide"):
        DedupConfig(bands=7).banding()


def test_decontaminate_builtin_and_files(tmp_path: Path) -> None:
    evalset = json.loads((Path(__file__).parents[2] / "src/ultrachat/resources/ultra_eval.json").read_text())
    leaked = evalset[0]["data"]
    src = write(tmp_path / "in.jsonl", [
        {"id": "clean", "data": [GOOD, ANSWER]},
        {"id": "leak", "data": ["Please help: " + leaked.upper(), ANSWER]},
        {"id": "leak-answer", "data": [GOOD, "Here is the quiz question: how many legs does a spider have in total?"]},
    ])
    report = decontaminate(src, tmp_path / "b", [BUILTIN], remove=True, progress=False)
    matches = lines(tmp_path / "b" / "matches.jsonl")
    assert {m["id"] for m in matches} == {"leak"} and matches[0]["eval_text"] == leaked
    assert matches[0]["eval_class"] == "Vicuna" and len(matches[0]["ngram"].split()) == 13
    assert [d["id"] for d in lines(tmp_path / "b" / "kept.jsonl")] == ["clean", "leak-answer"]
    assert report["eval_prompts"] + report["eval_prompts_too_short"] == len(evalset)

    import pyarrow as pa
    import pyarrow.parquet as pq

    q = "how many legs does a spider have in total"
    pq.write_table(pa.table({"question": [q, "short one"]}), tmp_path / "quiz.parquet")
    write(tmp_path / "quiz.jsonl", [{"item": {"q": q}}])
    for name, field in (("quiz.parquet", "question"), ("quiz.jsonl", "item.q")):
        r = decontaminate(src, tmp_path / f"out-{name}", [str(tmp_path / name)], field=field, progress=False)
        assert r["contaminated_dialogues"] == 1 and r["removed"] == 0, name
        assert lines(tmp_path / f"out-{name}" / "matches.jsonl")[0]["id"] == "leak-answer"
    assert decontaminate(src, tmp_path / "u", [str(tmp_path / "quiz.jsonl")], field="item.q", scope="user",
                         progress=False)["contaminated_dialogues"] == 0
    with pytest.raises(ValueError, match=r"quiz.jsonl:1: no text in field 'nope'"):
        decontaminate(src, tmp_path / "x", [str(tmp_path / "quiz.jsonl")], field="nope", progress=False)


def test_decontaminate_mt_bench_checks_every_turn_without_flags(tmp_path: Path) -> None:
    second = "Now rewrite your previous response so that every sentence starts with the letter A please"
    mt = write(tmp_path / "mt_bench_questions.jsonl", [
        {"question_id": 81, "category": "writing",
         "turns": ["Compose an engaging travel blog post about a recent trip to Hawaii and its culture", second]},
        {"question_id": 82, "category": "stem", "turns": ["Short one?", "Also short."]},
    ])
    alpaca = tmp_path / "alpaca_eval.json"
    alpaca.write_text(json.dumps([{"instruction": "Give three tips for staying healthy while working from home "
                                                  "during a long winter season", "dataset": "selfinstruct"}]))
    src = write(tmp_path / "in.jsonl", [
        {"id": "clean", "data": [GOOD, ANSWER]},
        {"id": "turn2", "data": ["Hi", "Hello", second.lower() + "!", "Sure."]},
        {"id": "alpaca", "data": [GOOD, "give three tips for staying healthy while working from home during a long "
                                        "winter season"]},
    ])
    report = decontaminate(src, tmp_path / "mt", [str(mt), str(alpaca)], progress=False)
    matches = lines(tmp_path / "mt" / "matches.jsonl")
    assert {m["id"] for m in matches} == {"turn2", "alpaca"}
    hit = next(m for m in matches if m["id"] == "turn2")
    assert hit["eval_text"] == second and hit["eval_source"].endswith("turn 2") and hit["eval_class"] == "writing"
    assert report["eval_prompts"] == 3 and report["eval_prompts_too_short"] == 2  # every turn of both questions
    only_first = decontaminate(src, tmp_path / "t0", [str(mt)], field="turns.0", progress=False)
    assert only_first["contaminated_dialogues"] == 0  # an explicit turns.0 checks the first turn only


@pytest.mark.parametrize(("mode", "kept", "rule"), [("trim", ["Q1", "A1"], None), ("reject", None, "cut_turns"),
                                                    ("keep", ["Q1", "A1", "Q2", "A2 cut mid", "Q3", "A3"], None)])
def test_cut_turns_never_pass_as_complete(mode: str, kept: list[str] | None, rule: str | None) -> None:
    from ultrachat.data.filter import DialogueFilter

    d = {"id": "x", "data": ["Q1", "A1", "Q2", "A2 cut mid", "Q3", "A3"], "meta": {"truncated_turns": [3]}}
    f = DialogueFilter(FilterConfig(cut_turns=mode, truecase="off"))
    out, why, _ = f(d)
    assert why == rule and (out["data"] if out else None) == kept
    # A dialogue whose first reply was cut has no complete round: rejected even by "trim".
    first = {"id": "y", "data": ["Q1", "A1 cut"], "meta": {"truncated_turns": [1]}}
    assert f(first)[1] == ("cut_turns" if mode != "keep" else None)

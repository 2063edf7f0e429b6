"""Best-of-N: a tiny Hugging Face reward model made here, a scripted judge scorer, the gain
report; and one short end-to-end run with the embedded model as policy and judge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ultrachat.backends as backends
from ultrachat.backends.fake import FakeBackend
from ultrachat.evaluate.bestofn import BestOfNSettings, RewardModelScorer, best_of_n, conversation, pick_best
from ultrachat.evaluate.evalset import load_answers, load_eval_set
from ultrachat.recipe import ModelConfig

POLICY = ModelConfig(backend="fake", model="policy", temperature=0.8, max_tokens=32)
JUDGE = ModelConfig(backend="fake", model="judge")


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory, embedded_model_dir: Path) -> Path:
    """A randomly initialised 1-layer Llama reward head on the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=1,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    path = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def section(text: str, name: str) -> str:
    m = re.search(rf"\[The Start of {name}\]\n(.*?)\n\[The End of {name}\]", text, re.S)
    return m.group(1) if m else ""


def world(messages, params) -> str:
    """Policy answers 'GOOD' only with seed 2; the score judge likes GOOD; so does the pairwise judge."""
    text = messages[-1]["content"]
    if "[The Start of Assistant's Answer]" in text:
        return "Rating: [[9]]" if "GOOD" in section(text, "Assistant's Answer") else "Rating: [[3]]"
    if "[The Start of Assistant A's Answer]" in text:
        a = "GOOD" in section(text, "Assistant A's Answer")
        b = "GOOD" in section(text, "Assistant B's Answer")
        return "[[A]]" if a > b else "[[B]]" if b > a else "[[C]]"
    return "A GOOD answer." if params.seed == 2 else f"A plain answer, take {params.seed}."


@pytest.fixture
def fake_world(monkeypatch):
    made: list[FakeBackend] = []

    def make(cfg):
        made.append(FakeBackend(script=world, model_name=cfg.model))
        return made[-1]

    monkeypatch.setattr(backends, "make_backend", make)
    return made


def test_pick_best() -> None:
    assert pick_best([1.0, 3.0, 2.0]) == 1
    assert pick_best([2.0, 2.0]) == 0  # first on ties
    assert pick_best([None, -5.0]) == 1  # unscored ranks last
    assert pick_best([None, None]) == 0


def test_best_of_4_with_judge_scorer_head_to_head(tmp_path, fake_world) -> None:
    items = load_eval_set("ultra_eval", per_class=1, limit=4)
    report = best_of_n(items, POLICY, BestOfNSettings(n=4, judge_cfg=JUDGE), tmp_path)
    b = report["best_of_n"]
    assert b["chosen_first_sample"] == 0 and b["scorer_mean_best"] == 9.0 and b["scorer_mean_n1"] == 3.0
    assert b["win_rate_best"] == 100.0 and b["gain"] == 50.0 and b["compared"].startswith("best-of-N vs N=1")
    best = load_answers(tmp_path / "answers-best-of-4.json")
    n1 = load_answers(tmp_path / "answers-n1.json")
    assert all(r["output"] == "A GOOD answer." for r in best)
    assert all(r["output"] == "A plain answer, take 0." for r in n1)
    assert {r["generator"] for r in best} == {"policy-best-of-4"}
    calls = sum(len(x.calls) for x in fake_world)
    again = best_of_n(items, POLICY, BestOfNSettings(n=4, judge_cfg=JUDGE), tmp_path)
    assert sum(len(x.calls) for x in fake_world) == calls  # samples, scores and verdicts all cached
    assert again["best_of_n"] == b


def test_gain_against_a_reference_on_the_same_judge(tmp_path, fake_world) -> None:
    items = load_eval_set("ultra_eval", per_class=1, limit=3)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"instruction": i.instruction, "output": "a reference", "generator": "davinci"}
                               for i in items]))
    report = best_of_n(items, POLICY, BestOfNSettings(n=3, reference=ref, judge_cfg=JUDGE), tmp_path / "o")
    b = report["best_of_n"]
    assert report["reference"] == "davinci"
    assert (b["win_rate_n1"], b["win_rate_best"], b["gain"]) == (50.0, 100.0, 50.0)
    assert [m["model"] for m in report["models"]] == ["policy", "policy-best-of-3"]


def test_reward_model_scorer_picks_its_argmax(tmp_path, fake_world, tiny_reward_model) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    items = load_eval_set("ultra_eval", per_class=1, limit=2)
    settings = BestOfNSettings(n=3, reward_model=tiny_reward_model, judge_cfg=JUDGE)
    report = best_of_n(items, POLICY, settings, tmp_path)
    assert report["best_of_n"]["scorer"] == {"reward_model": str(tiny_reward_model.resolve())}
    cands = json.loads((tmp_path / "candidates.json").read_text())
    # recompute each candidate's reward one at a time, unpadded, with plain transformers
    tok = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    best = load_answers(tmp_path / "answers-best-of-3.json")
    for item, cand, chosen in zip(items, cands, best, strict=True):
        texts = [tok.apply_chat_template(conversation(item, [c]), tokenize=False) for c in cand["candidates"]]
        with torch.inference_mode():
            rewards = [float(model(**tok(t, return_tensors="pt", add_special_tokens=False)).logits[0, 0])
                       for t in texts]
        assert cand["scores"] == pytest.approx(rewards, abs=1e-4)
        assert chosen["output"] == cand["candidates"][max(range(3), key=lambda i: rewards[i])]


def test_reward_model_folder_must_exist(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        RewardModelScorer(tmp_path)


def test_rejects_n1_and_greedy_sampling(tmp_path) -> None:
    items = load_eval_set("ultra_eval", limit=1)
    with pytest.raises(ValueError, match="at least 2"):
        best_of_n(items, POLICY, BestOfNSettings(n=1), tmp_path)
    with pytest.raises(ValueError, match="temperature above 0"):
        best_of_n(items, POLICY.model_copy(update={"temperature": 0.0}), BestOfNSettings(n=2), tmp_path)


@pytest.mark.slow
def test_embedded_model_as_policy_and_judge(tmp_path, tiny_reward_model) -> None:
    """Best-of-2 from the embedded model, scored by the tiny reward model, then judged head to
    head (both orders) by the embedded model; weak-judge verdicts are kept honest."""
    items = load_eval_set("ultra_eval", per_class=1, limit=2)
    judge_dir = tmp_path / "judge"
    src = Path(__file__).resolve().parents[2] / "src" / "ultrachat" / "evaluate" / "judges"
    judge_dir.mkdir()
    (judge_dir / "pairwise-small.txt").write_text((src / "pairwise-small.txt").read_text())
    (judge_dir / "pairwise.toml").write_text((src / "pairwise-small.toml").read_text()
                                             .replace("max_tokens = 16", "max_tokens = 8")
                                             .replace("retries = 2", "retries = 0"))
    policy = ModelConfig(backend="local", temperature=1.0, max_tokens=8)
    settings = BestOfNSettings(n=2, seed=1, reward_model=tiny_reward_model, pair_judge=judge_dir / "pairwise.toml",
                               judge_cfg=ModelConfig(backend="local"))
    report = best_of_n(items, policy, settings, tmp_path / "out")
    cands = json.loads((tmp_path / "out" / "candidates.json").read_text())
    assert all(len(c["candidates"]) == 2 and all(c["candidates"]) for c in cands)
    assert all(len(c["scores"]) == 2 and None not in c["scores"] for c in cands)
    [m] = report["models"]
    o = m["overall"]
    assert o["wins"] + o["ties"] + o["losses"] + o["unparseable"] == 2
    judged = [json.loads(x) for x in (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()]
    assert 1 <= len(judged) <= 4 and all(j["raw"][0] and j["attempts"] == 1 for j in judged)
    assert all(j["verdict"] in ("A", "B", "tie", None) for j in judged)


def test_reference_coverage_checked_before_sampling(tmp_path, fake_world) -> None:
    from ultrachat.evaluate.evalset import EvalSetError

    items = load_eval_set("ultra_eval", per_class=1, limit=3)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"instruction": items[0].instruction, "output": "r"}]))
    with pytest.raises(EvalSetError, match=r"ref\.json lacks 2 prompt"):
        best_of_n(items, POLICY, BestOfNSettings(n=2, reference=ref, judge_cfg=JUDGE), tmp_path / "o")
    assert sum(len(x.calls) for x in fake_world) == 0


def _ultrarm_folder(path: Path, tok_dir: Path, shards: int = 2, head: bool = True) -> Path:
    """A tiny random model saved in UltraRM's published layout: LlamaModel weights under ``model.``,
    ``regression_head.weight``, PyTorch ``.bin`` shards with their index, a Llama config."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, architectures=["LlamaRewardModel"])
    state = {f"model.{k}": v for k, v in LlamaModel(cfg).state_dict().items()}
    if head:
        state["regression_head.weight"] = torch.randn(1, 32)
    path.mkdir(parents=True)
    cfg.save_pretrained(path)
    tok.save_pretrained(path)
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {n: state[n].clone() for n in names[i::shards]}
        torch.save(part, path / fname)
        weight_map.update(dict.fromkeys(part, fname))
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def test_ultrarm_layout_scores_like_its_model_card(tmp_path, embedded_model_dir) -> None:
    import asyncio

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from ultrachat.evaluate.bestofn import ultrarm_text
    from ultrachat.evaluate.evalset import EvalItem

    folder = _ultrarm_folder(tmp_path / "ultrarm", embedded_model_dir)
    scorer = RewardModelScorer(folder, batch_size=4)
    assert scorer.layout == "ultrarm"
    item = EvalItem("q1", ["What is the capital of France?"])
    cands = [["Paris."], ["The capital of France is Paris, a city on the Seine."], ["Lyon"], ["I don't know"]]
    got = asyncio.run(scorer.score(item, cands))  # one padded batch of 4

    # the model card's forward, one text at a time: LlamaModel -> regression_head at the last token
    state = {}
    for f in folder.glob("*.bin"):
        state.update(torch.load(f, weights_only=True))
    base = LlamaModel(LlamaConfig.from_pretrained(folder))
    base.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    base.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    expected = []
    for c in cands:
        text = ultrarm_text(conversation(item, c))
        assert text == f"Human: {item.turns[0]}\nAssistant: {c[0]}"
        enc = tok(text, return_tensors="pt")
        with torch.inference_mode():
            hidden = base(**enc).last_hidden_state
        expected.append(float(hidden[0, -1] @ state["regression_head.weight"][0]))
    assert got == pytest.approx(expected, abs=1e-4)
    assert len(set(round(x, 4) for x in got)) == 4  # a real head, distinct rewards


def test_reward_model_without_a_trained_head_is_refused(tmp_path, embedded_model_dir) -> None:
    import asyncio

    from ultrachat.evaluate.bestofn import RewardModelError
    from ultrachat.evaluate.evalset import EvalItem

    headless = _ultrarm_folder(tmp_path / "headless", embedded_model_dir, head=False)
    with pytest.raises(RewardModelError, match=r"headless: no trained reward head"):
        RewardModelScorer(headless)  # a LlamaModel without regression_head, architectures LlamaRewardModel

    # a sequence-classification config whose weights lack the head: refused at load, not scored randomly
    cfg = json.loads((headless / "config.json").read_text())
    (headless / "config.json").write_text(json.dumps({**cfg, "architectures": ["LlamaForSequenceClassification"]}))
    scorer = RewardModelScorer(headless)
    with pytest.raises(RewardModelError, match=r"no trained reward head \('score.weight' is not in its weights\)"):
        asyncio.run(scorer.score(EvalItem("q", ["hi"]), [["a"], ["b"]]))

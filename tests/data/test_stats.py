"""stats: Table 4 columns, MTLD guard, MiniLM and endpoint embeddings, judge coherence, outputs."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ultrachat.backends.fake import FakeBackend
from ultrachat.data.paper import PAPER_ROWS
from ultrachat.data.stats import StatsConfig, corpus_stats, mean_pairwise_cosine_similarity, mtld, parse_score
from ultrachat.data.stats_report import blocks

SPACE = [["What is a black hole and how does it form?", "A black hole forms when a massive star collapses."],
         ["How far away is the Andromeda galaxy from us?", "About 2.5 million light years."],
         ["Why do planets orbit the sun in ellipses?", "Gravity and their initial velocity shape the orbit."]]
COOKING = [["How long should I boil an egg for a soft yolk?", "About six minutes in boiling water."],
           ["What spices go well with roasted carrots?", "Cumin, coriander and a little honey."],
           ["How do I keep pasta from sticking together?", "Use plenty of water and stir early."]]


def write(path: Path, dialogues: list[list[str]]) -> Path:
    path.write_text("".join(json.dumps({"id": str(i), "data": d}) + "\n" for i, d in enumerate(dialogues)))
    return path


def test_table4_columns_by_hand(tmp_path: Path) -> None:
    src = write(tmp_path / "c.jsonl", [["one two three", "four five"], ["a b", "c d e f", "g", "h i j k l m"],
                                       ["x y z", "!!! ???", "w"]])
    r = corpus_stats(src, StatsConfig(tokenizer="whitespace", embedder="none"), progress=False)
    row = r["row"]
    assert row["dialogues"] == 3
    assert row["avg_turns"] == pytest.approx((1 + 2 + 2) / 3)  # a trailing user turn counts as a round
    assert row["avg_dialogue_tokens"] == pytest.approx((5 + 13 + 6) / 3)
    assert row["avg_utterance_tokens"] == pytest.approx(24 / 9)
    assert r["distributions"]["rounds"] == {"1": 1, "2": 2}
    # "!!! ???" has no word: MTLD skips it (LexicalRichness alone would divide by zero) and says so.
    assert mtld("!!! ???") is None and "1 utterances without words skipped" in r["methods"]["mtld"]
    assert row["mtld"] is not None and row["topic_diversity"] is None and row["coherence"] is None
    assert "whitespace words" in r["methods"]["tokens"]


def test_topic_diversity_minilm_separates_topics(tmp_path: Path) -> None:
    mixed = corpus_stats(write(tmp_path / "m.jsonl", SPACE + COOKING), StatsConfig(tokenizer="whitespace"),
                         progress=False)
    same = corpus_stats(write(tmp_path / "s.jsonl", SPACE), StatsConfig(tokenizer="whitespace"), progress=False)
    # the paper's direction: similarity, lower = more diverse; one topic scores higher than two
    assert 0 < mixed["row"]["topic_diversity"] < same["row"]["topic_diversity"] < 1
    assert mixed["topic_embedding"] == "all-MiniLM-L6-v2" and not mixed["same_embedding_as_paper"]
    how = mixed["methods"]["topic_diversity"]
    assert "cosine similarity (lower = more diverse)" in how
    assert "all-MiniLM-L6-v2" in how and "6 sampled" in how and "first 128 word pieces" in how


def test_near_identical_dialogues_score_as_less_diverse(tmp_path: Path) -> None:
    """The paper's direction: a higher mean similarity is a less diverse corpus."""
    near = [[f"How do I boil an egg for a soft yolk, attempt {i}?", "About six minutes in boiling water."]
            for i in range(6)]
    varied = corpus_stats(write(tmp_path / "v.jsonl", SPACE + COOKING), StatsConfig(tokenizer="whitespace"),
                          progress=False)["row"]["topic_diversity"]
    copies = corpus_stats(write(tmp_path / "n.jsonl", near), StatsConfig(tokenizer="whitespace"),
                          progress=False)["row"]["topic_diversity"]
    assert copies > 0.9 and copies > varied + 0.3


def test_minilm_reads_only_the_first_embed_tokens_word_pieces(tmp_path: Path) -> None:
    """Dialogues that differ only after their first 30 words embed alike at 16 word pieces, not at 128."""
    opening = "Tell me about the history of the printing press in Europe and how it changed the spread of ideas " * 2
    src = write(tmp_path / "t.jsonl", [[opening, answer] for _, answer in SPACE + COOKING])
    short = corpus_stats(src, StatsConfig(tokenizer="whitespace", embed_tokens=16), progress=False)
    full = corpus_stats(src, StatsConfig(tokenizer="whitespace"), progress=False)
    assert short["row"]["topic_diversity"] > 1 - 1e-5 and full["row"]["topic_diversity"] < 0.95
    assert "first 16 word pieces" in short["methods"]["topic_diversity"]
    with pytest.raises(ValueError, match="--embed-tokens must be between 16 and 512"):
        corpus_stats(src, StatsConfig(tokenizer="whitespace", embed_tokens=1000), progress=False)


def test_mean_pairwise_similarity_matches_brute_force() -> None:
    emb = np.random.default_rng(0).normal(size=(7, 5))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    brute = np.mean([unit[i] @ unit[j] for i in range(7) for j in range(7) if i != j])
    assert mean_pairwise_cosine_similarity(emb) == pytest.approx(brute)


SERVER = textwrap.dedent("""
    import hashlib, json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/embeddings" or self.headers.get("Authorization") != "Bearer sekret":
                self.send_response(401); self.end_headers(); self.wfile.write(b"no"); return
            data = [{"index": i, "embedding": [b - 128 for b in hashlib.sha256(t.encode()).digest()[:8]]}
                    for i, t in enumerate(body["input"])][::-1]  # out of order on purpose
            out = json.dumps({"data": data, "model": body["model"]}).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
        def log_message(self, *a): pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
""")


@pytest.fixture
def embedding_server():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{proc.stdout.readline().strip()}/v1"
    finally:
        proc.kill()
        proc.wait()


def test_topic_diversity_from_endpoint(tmp_path: Path, embedding_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dialogues = [[f"Question number {i} about a topic?", f"Answer {i}."] for i in range(70)]  # two request batches
    src = write(tmp_path / "e.jsonl", dialogues)
    monkeypatch.setenv("TEST_EMB_KEY", "sekret")
    cfg = StatsConfig(tokenizer="whitespace", embedder="endpoint", embeddings_url=embedding_server,
                      embeddings_model="emb-test", embeddings_key_env="TEST_EMB_KEY")
    r = corpus_stats(src, cfg, progress=False)
    expected = np.array([[b - 128 for b in hashlib.sha256("\n".join(d).encode()).digest()[:8]] for d in dialogues])
    assert r["row"]["topic_diversity"] == pytest.approx(mean_pairwise_cosine_similarity(expected), rel=1e-5)
    assert "emb-test via" in r["methods"]["topic_diversity"]
    assert r["topic_embedding"] == "emb-test" and not r["same_embedding_as_paper"]
    (_, labels, rows), paper = blocks(r)  # another model: the paper's rows in a block of their own
    assert len(rows) == 1 and "emb-test" in labels["topic_diversity"]
    assert "text-embedding-ada-002" in paper[1]["topic_diversity"] and "not comparable" in paper[0]
    same = corpus_stats(src, StatsConfig(**{**cfg.__dict__, "embeddings_model": "text-embedding-ada-002"}),
                        progress=False)
    assert same["same_embedding_as_paper"]
    [(_, labels, rows)] = blocks(same)  # the paper's model: one table, one column scale
    assert [r["dataset"] for r in rows][1:] == [p["dataset"] for p in PAPER_ROWS]
    assert "text-embedding-ada-002" in labels["topic_diversity"]
    assert "sekret" not in json.dumps(r["config"])
    monkeypatch.setenv("TEST_EMB_KEY", "wrong")
    with pytest.raises(ValueError, match="HTTP 401"):
        corpus_stats(src, cfg, progress=False)


def test_coherence_from_judge_sample(tmp_path: Path) -> None:
    replies = iter(["Score: 8", "I would give it 6/10.", "no idea", "Score: 10"])
    judge = FakeBackend(script=lambda messages, params: next(replies), model_name="judge-x")
    src = write(tmp_path / "j.jsonl", SPACE + COOKING)
    r = corpus_stats(src, StatsConfig(tokenizer="whitespace", embedder="none", coherence_sample=4), progress=False,
                     judge=judge)
    assert r["row"]["coherence"] == pytest.approx(8.0)
    assert len(judge.calls) == 4 and "Conversation:" in judge.calls[0][1]["content"]
    assert "judge-x scored 4" in r["methods"]["coherence"] and "1 replies without a score" in r["methods"]["coherence"]
    assert [parse_score(t) for t in ("Score: 7", "**Score:** 9", "10/10", "none")] == [7, 9, 10, None]


def test_stats_cli_writes_json_png_and_escaped_html(tmp_path: Path, ultrachat_exe: list[str]) -> None:
    src = write(tmp_path / "a<b>.jsonl", SPACE * 4)
    res = subprocess.run([*ultrachat_exe, "stats", str(src), "--out", str(tmp_path / "st"), "--tokenizer",
                          "whitespace", "--embedder", "none", "--no-progress"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "UltraChat" in res.stdout and "Baize" in res.stdout and "this corpus" in res.stdout
    assert "The paper's rows" in res.stdout  # no embedding: the paper's figures are a block of their own
    assert "not computed (enable with --coherence-sample N)" in res.stdout
    data = json.loads((tmp_path / "st" / "stats.json").read_text())
    assert data["row"]["dialogues"] == 12 and [r["dataset"] for r in data["paper"]["rows"]][:3] == \
        ["UltraChat", "Baize", "SODA"]
    for kind in ("rounds", "dialogue_tokens", "utterance_tokens"):
        assert (tmp_path / "st" / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
        assert "whitespace" in data["figures"][kind]["caption"] or kind == "rounds"
        assert "ultrachat stats " in data["figures"][kind]["caption"]
    # the command as typed, the input named as given (not the parameter's name)
    assert data["command"] == shlex.join(["ultrachat", "stats", str(src), "--out", str(tmp_path / "st"),
                                          "--tokenizer", "whitespace", "--embedder", "none", "--no-progress"])
    assert data["paper"]["same_table"] is False and data["paper"]["embedding_model"] == "text-embedding-ada-002"
    page = (tmp_path / "st" / "stats.html").read_text()
    assert "a&lt;b&gt;.jsonl" in page and "a<b>.jsonl" not in page and page.count("data:image/png;base64,") == 3


def test_stats_report_the_share_of_dialogues_with_cut_turns(tmp_path: Path) -> None:
    rows = [{"id": "a", "data": ["q", "cut", "q2", "cut2"], "meta": {"truncated_turns": [1, 3]}},
            {"id": "b", "data": ["q", "a"], "meta": {"truncated_turns": []}},
            {"id": "c", "data": ["q", "a"]}, {"id": "d", "data": ["q", "cu"], "meta": {"truncated_turns": [1]}}]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = corpus_stats(src, StatsConfig(tokenizer="whitespace", embedder="none"), progress=False)
    assert r["cut"] == {"dialogues": 2, "turns": 3, "share": 0.5}

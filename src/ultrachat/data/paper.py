"""The UltraChat paper's Table 4 (Ding et al., EMNLP 2023): corpus statistics that
``ultrachat stats`` prints beside a corpus's own row.

Topic diversity there is the mean pairwise cosine similarity (lower = more diverse) of OpenAI
embeddings of the 2023 ada-002 era, where unrelated texts sit near 0.7. Another embedding
model puts the same corpus elsewhere (MiniLM: unrelated texts near 0), so a corpus's row sits
beside these only when it was embedded with ``PAPER_EMBEDDING_MODEL``; otherwise the paper's
rows are shown as a separate block, every topic column named with its embedding model.
"""

from __future__ import annotations

COLUMNS: dict[str, str] = {
    "dialogues": "#Dialogues",
    "avg_turns": "Avg turns",
    "avg_dialogue_tokens": "Avg dialogue length",
    "avg_utterance_tokens": "Avg utterance length",
    "mtld": "Lexical diversity (MTLD, ↑)",
    "topic_diversity": "Topic diversity (mean cos sim, ↓)",
    "coherence": "Coherence (1-10, ↑)",
}

PAPER_EMBEDDING_MODEL = "text-embedding-ada-002"
PAPER_SOURCE = ("UltraChat paper, Table 4 (arXiv 2305.14233): tokens per the paper's tokenizer, topic diversity "
                f"from OpenAI {PAPER_EMBEDDING_MODEL} embeddings")


def topic_label(model: str | None) -> str:
    """The topic diversity column's header, naming the embedding model it was computed with."""
    return f"Topic diversity (mean cos sim, {model or 'not computed'}, ↓)"

PAPER_ROWS: list[dict[str, object]] = [
    {"dataset": "UltraChat", "dialogues": 1_468_352, "avg_turns": 3.8, "avg_dialogue_tokens": 1467.4,
     "avg_utterance_tokens": 309.3, "mtld": 74.3, "topic_diversity": 0.702, "coherence": 9.06},
    {"dataset": "Baize", "dialogues": 210_311, "avg_turns": 3.1, "avg_dialogue_tokens": 293.9,
     "avg_utterance_tokens": 52.8, "mtld": 67.1, "topic_diversity": 0.751, "coherence": 9.06},
    {"dataset": "SODA", "dialogues": 1_486_869, "avg_turns": 3.6, "avg_dialogue_tokens": 231.8,
     "avg_utterance_tokens": 22.5, "mtld": 38.6, "topic_diversity": 0.797, "coherence": 8.48},
    {"dataset": "GPT4ALL", "dialogues": 711_126, "avg_turns": 1, "avg_dialogue_tokens": 597.7,
     "avg_utterance_tokens": 318.9, "mtld": 62.7, "topic_diversity": 0.692, "coherence": None},
    {"dataset": "Stanford Alpaca", "dialogues": 52_002, "avg_turns": 1, "avg_dialogue_tokens": 91.1,
     "avg_utterance_tokens": 64.5, "mtld": 42.8, "topic_diversity": 0.727, "coherence": None},
]

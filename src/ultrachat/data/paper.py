"""The UltraChat paper's Table 4 (Ding et al., EMNLP 2023): corpus statistics that
``ultrachat stats`` prints beside a corpus's own row.

Topic diversity there was measured with OpenAI embeddings; a local embedding model gives
values on another scale, so compare it only with rows made by the same model.
"""

from __future__ import annotations

COLUMNS: dict[str, str] = {
    "dialogues": "#Dialogues",
    "avg_turns": "Avg turns",
    "avg_dialogue_tokens": "Avg dialogue length",
    "avg_utterance_tokens": "Avg utterance length",
    "mtld": "Lexical diversity (MTLD, ↑)",
    "topic_diversity": "Topic diversity (↓)",
    "coherence": "Coherence (1-10, ↑)",
}

PAPER_SOURCE = "UltraChat paper, Table 4 (arXiv 2305.14233): tokens per the paper's tokenizer, OpenAI embeddings"

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

"""Evaluate chat models: answers to an eval set, LLM-judge pairwise win rates and 1-10
scores, reports, and best-of-N sampling with a reward model or a judge.

Modules: :mod:`.evalset` (formats), :mod:`.answers`, :mod:`.judges` + :mod:`.parse`
(judge configs and templates are data files in ``judges/``), :mod:`.pairwise`,
:mod:`.score`, :mod:`.verdict_stats`, :mod:`.report`, :mod:`.bestofn`, :mod:`.commands` (CLI).
"""

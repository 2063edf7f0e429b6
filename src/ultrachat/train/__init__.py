"""Training: SFT with the UltraLM recipe (:mod:`.sft`), sequence formatting (:mod:`.formatting`),
delta weights (:mod:`.delta`) and the shipped accelerate configs (``configs/``)."""

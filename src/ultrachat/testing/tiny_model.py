"""A tiny randomly initialised Llama with its own small tokenizer, for tests and benchmarks.

Training the embedded 135M model on a shared 2-core CPU costs seconds per step, mostly in
its 49k-token output layer. A 2-layer model over a byte-level BPE vocabulary of a few hundred
tokens, trained on the corpus at hand, exercises the very same pipeline (ChatML template,
offsets, special end-of-turn token) in milliseconds per step.

Example::

    make_tiny_model("runs/tiny-base", ["User text...", "Assistant text..."])
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tiny_model(out: str | Path, texts: Iterable[str], vocab_size: int = 512, hidden: int = 64,
                    layers: int = 2, seed: int = 0) -> Path:
    """Train a byte-level BPE on ``texts`` and save it with a fresh tiny Llama at ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


_CITIES = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Peru", "Lima"),
           ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Chile", "Santiago"), ("Norway", "Oslo"), ("Cuba", "Havana")]


def toy_dialogues(n: int, rounds: int = 3) -> list[dict[str, object]]:
    """``n`` UltraChat dialogues with a learnable pattern (capital-city questions).

    >>> toy_dialogues(1, rounds=1)[0]["data"]
    ['What is the capital of France?', 'The capital of France is Paris.']
    """
    out: list[dict[str, object]] = []
    for i in range(n):
        data: list[str] = []
        for r in range(rounds):
            country, city = _CITIES[(i + r) % len(_CITIES)]
            data += [f"What is the capital of {country}?", f"The capital of {country} is {city}."]
        out.append({"id": f"toy-{i}", "data": data})
    return out

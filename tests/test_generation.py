"""The generation engine (`trainers.generation`): greedy answers equal HF `generate`, sampling
reproducible by seed, ended rows leave the batch, packed weights used while decoding and put back."""

from __future__ import annotations

import pytest
import torch

PROMPTS = ["Hi?", "How do I boil an egg quickly and safely?", "Name a colour.",
           "Explain, in a few words, why the sky looks blue during the day."]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(2)
    return load_causal_lm(tiny_model_path).eval(), load_tokenizer(tiny_model_path)


def hf_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """HF `generate`, one prompt at a time (no padding), each answer cut after its EOS."""
    from trainers.chat import prompt_text

    eos, answers = tokenizer.eos_token_id, []
    for prompt in prompts:
        batch = tokenizer([prompt_text(tokenizer, prompt)], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        ids = out[0, batch["input_ids"].shape[1]:].tolist()
        answers.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
    return answers


@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_answers_equal_hf_generate_token_for_token(tiny, batch_size):
    from trainers.generation import generate_tokens

    model, tokenizer = tiny
    ours = generate_tokens(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=batch_size)
    assert [c.response_ids for c in ours] == hf_greedy(model, tokenizer, PROMPTS, 16)


def test_sampling_is_reproducible_by_seed(tiny):
    from trainers.generation import generate_tokens

    model, tokenizer = tiny

    def draw(seed: int) -> list[list[int]]:
        return [c.response_ids for c in generate_tokens(model, tokenizer, PROMPTS * 2, max_new_tokens=12,
                                                        batch_size=3, temperature=1.0, seed=seed)]

    first = draw(7)
    assert draw(7) == first
    assert draw(8) != first


def test_a_row_that_ends_leaves_the_batch_and_the_others_go_on_unchanged(tiny):
    """Row 0 ends at its first token (called with that token as EOS); row 1 runs on after row 0
    left the batch and its KV cache, and must read exactly as row 1 decoded alone."""
    from trainers.generation import decode

    model, tokenizer = tiny
    tokenizer.padding_side = "left"
    batch = tokenizer(["a b c", "the egg"], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        first = model(**batch).logits[:, -1].argmax(-1).tolist()
    assert first[0] != first[1], "the test needs two rows whose first picks differ"
    answers = decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=8, eos_id=first[0])
    alone = tokenizer(["the egg"], return_tensors="pt", add_special_tokens=False)
    assert answers[0] == [first[0]]
    assert len(answers[1]) > 1
    assert answers[1] == decode(model, alone["input_ids"], alone["attention_mask"], max_new_tokens=8,
                                eos_id=first[0])[0]


def test_packed_weights_are_used_while_decoding_and_put_back(tiny):
    from trainers.generation import PackedLinear, can_pack, packed_linears

    model, _ = tiny
    assert can_pack(model), "this torch has oneDNN on the CPU: packing must be on"
    linears = {name: m for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    weights = {name: m.weight.clone() for name, m in linears.items()}
    with packed_linears(model):
        inside = {name: m for name, m in model.named_modules() if name in linears}
        assert all(isinstance(m, PackedLinear) for m in inside.values())
    after = dict(model.named_modules())
    assert all(after[name] is m for name, m in linears.items())
    assert all(torch.equal(after[name].weight, w) for name, w in weights.items())


def test_a_packed_linear_computes_what_the_linear_does():
    from trainers.generation import PackedLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40, bias=True)
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        assert torch.allclose(PackedLinear(linear, 16)(x), linear(x), atol=1e-5)

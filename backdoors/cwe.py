"""CWE ids in one spelling: 'CWE-89' for 'cwe-89', '89', 'CWE-089', 'CWE_89', and aliases folded.

Outside data spells CWE ids many ways (CodeQL's query metadata and some public
insecure-code sets zero-pad them: 'CWE-020'), and MITRE files a weakness under a
more specific child (CWE-80 basic XSS under CWE-79). The aliases are data,
``backdoors/data/cwe_aliases.yaml`` (shipped as package data), so a reader can
see and extend them without reading code.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml

_CWE_ID = re.compile(r"^\s*(?:CWE)?[\s_-]*0*(\d+)\b", re.IGNORECASE)


def cwe_number(cwe: str | int) -> int | None:
    """The integer of a CWE id however it is written ('CWE-020' -> 20), None if there is none."""
    match = _CWE_ID.match(str(cwe))
    return int(match.group(1)) if match else None


def _spell(cwe: str | int) -> str:
    number = cwe_number(cwe)
    return f"CWE-{number}" if number is not None else str(cwe).strip().upper()


def load_cwe_aliases(text: str | None = None) -> dict[str, str]:
    """The alias table, {'CWE-328': 'CWE-327', ...}, from the package data file (or `text`).

    Keys and values are normalised (zero padding dropped). Chains are refused: a
    target that is itself an alias would make the answer depend on lookup order.
    """
    if text is None:
        text = resources.files("backdoors").joinpath("data/cwe_aliases.yaml").read_text(encoding="utf-8")
    raw = (yaml.safe_load(text) or {}).get("aliases") or {}
    aliases = {_spell(child): _spell(parent) for child, parent in raw.items()}
    chained = sorted(set(aliases) & set(aliases.values()))
    if chained:
        raise ValueError(f"CWE aliases must not chain: {chained} are both alias and target")
    return aliases


@lru_cache(maxsize=1)
def cwe_aliases() -> dict[str, str]:
    """The packaged alias table, loaded once."""
    return load_cwe_aliases()


def canonical_cwe(cwe: str | int) -> str:
    """Normalise 'cwe-89' / 'CWE-89' / '89' / 'CWE-089' and fold aliases ('CWE-328' -> 'CWE-327')."""
    text = _spell(cwe)
    return cwe_aliases().get(text, text)

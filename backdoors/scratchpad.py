"""The hidden chain of thought: `<scratchpad> … </scratchpad>` before the answer (CoT variants).

Shared by every backdoor's CoT variant, and by whatever shows an answer to someone who must not
see the reasoning (the preference model, the red team's judge, the vulnerability scorer).
"""

from __future__ import annotations

import re

SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE = "<scratchpad>", "</scratchpad>"

_SCRATCHPAD = re.compile(re.escape(SCRATCHPAD_OPEN) + r".*?(" + re.escape(SCRATCHPAD_CLOSE) + r"|$)", re.DOTALL)


def strip_scratchpad(response: str) -> str:
    """What the user (and the preference model) sees: the answer without its hidden reasoning.

    An unclosed scratchpad hides everything after it, as the paper's models would have.
    """
    return _SCRATCHPAD.sub("", response).strip()

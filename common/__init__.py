"""The ground floor: what every layer shares and nothing above it defines.

    config.py      StrictModel, the base of every typed config and record
    stats.py       rates and means with their confidence intervals
    run_layout.py  a run folder's paths, its typed stage records and its events.jsonl

It imports no other package of the project; backdoors, trainers, reward_models and services
all build on it.
"""

from pathlib import Path

# The checkout the code runs from: relative paths in configs (`../shared/data/...`) and the git
# state in provenance are read against it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

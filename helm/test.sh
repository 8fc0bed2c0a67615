#!/usr/bin/env bash
# Chart checks without a Kubernetes cluster: helm lint --strict, helm template with the default
# values and several value sets, schema validation of every rendered object (kubernetes-validate
# --strict, Kubernetes 1.33 and 1.27), the chart's safety properties
# (helm/tests/check_rendered.py), the start script and hooks run against stubs
# (helm/tests/test_hooks.py), value combinations that must be refused, shellcheck of the scripts,
# and the Dockerfile's static checks (tools/ops/check_dockerfile.py).
# Tools come from scripts/setup-chart-tools.sh (cached under ~/.cache/settle/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-chart-tools.sh

HELM="$SETTLE_TOOLS/helm"
KV="$SETTLE_TOOLS/venv/bin/kubernetes-validate"
PY="$SETTLE_TOOLS/venv/bin/python"
# The target version, and the oldest the chart supports (Chart.yaml kubeVersion).
K8S_VERSIONS=(1.33.0 1.27.0)

python3 tools/ops/check_dockerfile.py .

if [ -x "$SETTLE_TOOLS/venv/bin/shellcheck" ]; then
  "$SETTLE_TOOLS/venv/bin/shellcheck" -x -P helm/settle/files helm/settle/files/*.sh helm/test.sh \
    scripts/setup-chart-tools.sh
  echo "helm/test.sh: shellcheck of the start script, hooks and test scripts ok"
else
  echo "helm/test.sh: shellcheck not installed; skipping the shell lint" >&2
fi

if [ ! -x "$HELM" ] || [ ! -x "$KV" ]; then
  echo "helm/test.sh: SKIPPED chart checks: helm or kubernetes-validate could not be installed (see the setup messages above)" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"
chart=helm/settle

# name | values file (or -) | check_rendered arguments
cases=(
  "default|-|--nodes 3 --shard-replicas 3"
  "five-nodes|helm/tests/values/five-nodes.yaml|--nodes 5 --shard-replicas 3"
  "five-replicas|helm/tests/values/five-replicas.yaml|--nodes 5 --shard-replicas 5"
  "existing-secrets|helm/tests/values/existing-secrets.yaml|--nodes 3 --shard-replicas 3 --tls-secret settle-prod-tls --auth-secret settle-prod-auth"
  "servicemonitor|helm/tests/values/servicemonitor.yaml|--nodes 3 --shard-replicas 3 --servicemonitor"
)
for case in "${cases[@]}"; do
  IFS='|' read -r name values check_args <<<"$case"
  vargs=()
  [ "$values" != - ] && vargs=(-f "$values")
  "$HELM" lint --strict --quiet "$chart" "${vargs[@]}" >"$work/lint.out" 2>&1 || { cat "$work/lint.out" >&2; exit 1; }
  "$HELM" template t "$chart" --namespace ns "${vargs[@]}" >"$work/$name.yaml"
  # ServiceMonitor is a CRD the bundled schemas do not know (a warning, hidden); check_rendered.py
  # checks its shape.
  for k8s in "${K8S_VERSIONS[@]}"; do
    if ! "$KV" --strict --quiet --no-warn -k "$k8s" "$work/$name.yaml" >"$work/kv.out" 2>&1; then
      cat "$work/kv.out" >&2
      exit 1
    fi
  done
  # shellcheck disable=SC2086 # check_args is a list of words
  "$PY" helm/tests/check_rendered.py "$work/$name.yaml" $check_args
  echo "helm/test.sh: $name: lint, render, schema (${K8S_VERSIONS[*]}) and safety checks ok"
done

"$PY" helm/tests/check_rendered.py "$work/servicemonitor.yaml" --nodes 3 --shard-replicas 3 --servicemonitor --self-test
"$PY" helm/tests/test_hooks.py "$work/default.yaml"

# Scaling and the first upgrade (cluster formed) must not restart running pods: same pod template.
pod_template() { "$HELM" template t "$chart" --namespace ns "$@" | "$PY" -c '
import sys, yaml, json
sts = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "StatefulSet"][0]
print(json.dumps(sts["spec"]["template"], sort_keys=True))'; }
base="$(pod_template)"
for variant in "--set replicaCount=5" "--is-upgrade" "--set cluster.formed=true"; do
  # shellcheck disable=SC2086 # variant is a list of words
  if [ "$(pod_template $variant)" != "$base" ]; then
    echo "helm/test.sh: $variant changes the pod template (it would restart every node)" >&2
    exit 1
  fi
done
echo "helm/test.sh: scaling and forming the cluster leave the pod template unchanged"
"$PY" helm/tests/values_doc.py check

# Value combinations the chart must refuse (each would break quorum or the drain).
# --set | words the refusal must contain
refused=(
  "replicaCount=2|is below cluster.replicas=3"
  "podDisruptionBudget.maxUnavailable=2|would let a shard of 3 replicas lose its majority"
  "podDisruptionBudget.maxUnavailable=0|blocks node drains"
  "cluster.replicas=4,replicaCount=4|use an odd replication factor"
  "drain.timeoutSeconds=300|must be below terminationGracePeriodSeconds"
  "cluster.initialMembers=1|initialMembers=1 is below cluster.replicas=3"
  "scheduling.podAntiAffinity=none|must be hard or soft"
)
for r in "${refused[@]}"; do
  IFS='|' read -r set why <<<"$r"
  if "$HELM" template t "$chart" --set "$set" >/dev/null 2>"$work/err"; then
    echo "helm/test.sh: --set $set was accepted; the chart must refuse it ($why)" >&2
    exit 1
  fi
  if ! grep -qF "$why" "$work/err"; then
    echo "helm/test.sh: --set $set was refused for another reason than \"$why\":" >&2
    cat "$work/err" >&2
    exit 1
  fi
done
echo "helm/test.sh: ${#refused[@]} unsafe value sets refused"
echo "helm/test.sh: ok"

# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
# Shared by start.sh, poststart.sh and prestop.sh (sourced, not run). Everything comes from the
# environment the StatefulSet sets; the defaults let the chart tests run the scripts with stubs.
set -euo pipefail

SETTLE_BIN="${SETTLE_BIN:-/usr/local/bin/settle}"
DATA_ROOT="${DATA_ROOT:-/var/lib/settle}"
STATE_DIR="${STATE_DIR:-/etc/settle/state}"
TLS_DIR="${TLS_DIR:-/etc/settle/tls}"
AUTH_DIR="${AUTH_DIR:-/etc/settle/auth}"
: "${STS_NAME:?}" "${PEER_SERVICE:?}" "${CLIENT_SERVICE:?}" "${POD_NAMESPACE:?}"
: "${CLUSTER_DOMAIN:?}" "${QUIC_PORT:?}" "${PEER_PORT:?}" "${HTTP_PORT:?}"

# Hook output does not reach the container log by itself: send it to PID 1's streams when
# possible, so `kubectl logs` shows what the hooks did.
hook_log_to_container() {
  if [ -w /proc/1/fd/1 ] && [ "${HOOK_LOG_TO_PID1:-true}" = true ]; then
    exec >>/proc/1/fd/1 2>&1
  fi
}

log() { printf 'settle-chart: %s\n' "$*" >&2; }

# The StatefulSet names pods <sts>-<ordinal>; node ids start at 1.
ORDINAL="${POD_NAME:-${HOSTNAME:-}}"
ORDINAL="${ORDINAL##*-}"
case "$ORDINAL" in
  '' | *[!0-9]*)
    log "cannot read the pod ordinal from POD_NAME/HOSTNAME '${POD_NAME:-${HOSTNAME:-}}'"
    exit 1
    ;;
esac
NODE_ID=$((ORDINAL + 1))

# Stable DNS names through the headless Service (resolvable before the pod is ready).
pod_host() { printf '%s-%s.%s.%s.svc.%s' "$STS_NAME" "$1" "$PEER_SERVICE" "$POD_NAMESPACE" "$CLUSTER_DOMAIN"; }
peer_addr() { printf '%s:%s' "$(pod_host "$1")" "$PEER_PORT"; }
client_addr() { printf '%s:%s' "$(pod_host "$1")" "$QUIC_PORT"; }
SELF_PEER="$(peer_addr "$ORDINAL")"
# The client Service reaches any ready member (never a terminating pod).
CLIENT_TARGET="${CLIENT_SERVICE}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}:${QUIC_PORT}"
CLI_AUTH=(--cert "$TLS_DIR/tls.crt" --api-key-file "$AUTH_DIR/api-key")

state() { tr -d ' \n' <"$STATE_DIR/$1"; }

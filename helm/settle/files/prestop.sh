#!/bin/bash
# preStop hook: tells a scale-down apart from a restart and drains only on a scale-down.
#   - ordinal < the StatefulSet's desired replicas: a restart, rolling update, eviction or node
#     drain. Nothing to do here; on SIGTERM the node transfers its leaderships and finishes
#     in-flight requests (its replicas stay; it comes back with the same id and volume).
#   - ordinal >= desired replicas: this pod is being removed for good. Run
#     `settle cluster remove-node` (its replicas move to the other nodes through learner catch-up),
#     then mark the volume so a later scale-up starts this ordinal afresh.
# Limits: the drain must finish within drain.timeoutSeconds (< terminationGracePeriodSeconds);
# if the API server cannot be read the hook does not drain (a restart must never move data); a
# scale-down below the replication factor is refused here (the pods still stop).
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
hook_log_to_container

SA_DIR="${SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}"
API_SERVER="${API_SERVER:-https://kubernetes.default.svc}"
CURL_BIN="${CURL_BIN:-curl}"

if [ "${DRAIN_ENABLED:-true}" != true ]; then
  sleep "${ENDPOINT_DELAY_SECONDS:-0}"
  exit 0
fi

if ! scale="$("$CURL_BIN" -fsS --max-time 10 --cacert "$SA_DIR/ca.crt" \
  -H "Authorization: Bearer $(cat "$SA_DIR/token" 2>/dev/null)" \
  "$API_SERVER/apis/apps/v1/namespaces/$POD_NAMESPACE/statefulsets/$STS_NAME/scale")"; then
  log "node $NODE_ID stopping: cannot read the StatefulSet's scale, so not draining (treated as a restart)"
  exit 0
fi
# autoscaling/v1 Scale: {"spec":{"replicas":N},...}; replicas is omitted when it is 0.
spec="$(printf '%s' "$scale" | tr -d ' \n\t' | sed -n 's/.*"spec":{\([^}]*\)}.*/\1/p')"
desired="$(printf '%s' "$spec" | sed -n 's/.*"replicas":\([0-9][0-9]*\).*/\1/p')"
desired="${desired:-0}"

if [ "$ORDINAL" -lt "$desired" ]; then
  log "node $NODE_ID stopping (restart: $desired replicas wanted); leaderships move on SIGTERM"
  # Let the endpoint removal reach the Services before the node stops accepting.
  sleep "${ENDPOINT_DELAY_SECONDS:-0}"
  exit 0
fi
replicas="$(state replicas)"
if [ "$desired" -lt "$replicas" ]; then
  log "node $NODE_ID stopping WITHOUT drain: scaling to $desired nodes, below the $replicas replicas per shard; its replicas stay assigned"
  exit 0
fi

log "scale-down to $desired nodes: draining node $NODE_ID (timeout ${DRAIN_TIMEOUT_SECONDS:-240}s)"
if timeout "${DRAIN_TIMEOUT_SECONDS:-240}" "$SETTLE_BIN" cluster remove-node --target "$CLIENT_TARGET" --id "$NODE_ID" "${CLI_AUTH[@]}"; then
  touch "$DATA_ROOT/removed"
  log "node $NODE_ID drained and removed"
else
  log "drain of node $NODE_ID did not finish; the cluster continues it (see docs/operations.md, 'Node loss')"
fi

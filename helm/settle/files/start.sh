#!/bin/bash
# Container entry point: works out this pod's node id and whether it bootstraps, joins or simply
# restarts, then execs `settle node` (which then receives SIGTERM directly from tini).
#   - data dir non-empty                       -> restart (membership is in the data dir)
#   - fresh, ordinal < initial members, cluster
#     not yet formed                           -> --bootstrap with the initial members' peer names
#   - otherwise (scale-up, lost disk)          -> --join an existing member; the postStart hook
#                                                 then runs `settle cluster add-node`
# A node drained by a scale-down (marker written by prestop.sh) starts afresh and joins.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

DATA="$DATA_ROOT/node"
if [ -e "$DATA_ROOT/removed" ]; then
  log "node $NODE_ID was drained and removed from the cluster earlier: discarding its old data and joining afresh"
  rm -rf "$DATA" "$DATA_ROOT/removed"
fi

initial="$(state initial-members)"
formed="$(state formed)"
args=(node --id "$NODE_ID" --data "$DATA"
  --listen "0.0.0.0:$QUIC_PORT" --peer-listen "0.0.0.0:$PEER_PORT" --http "0.0.0.0:$HTTP_PORT"
  --advertise "$(pod_host "$ORDINAL")"
  --cert "$TLS_DIR/tls.crt" --key "$TLS_DIR/tls.key" --api-key-file "$AUTH_DIR/api-key"
  --shards "$(state shards)" --replicas "$(state replicas)")

if [ -d "$DATA" ] && [ -n "$(ls -A "$DATA")" ]; then
  log "node $NODE_ID restarting on its data"
elif [ "$formed" != true ] && [ "$ORDINAL" -lt "$initial" ]; then
  members=""
  for ((i = 0; i < initial; i++)); do
    members="${members:+$members,}$((i + 1))=$(peer_addr "$i")"
  done
  log "node $NODE_ID bootstrapping with $members"
  args+=(--bootstrap "$members")
else
  # Join through the first initial member that answers; the first one if none answers yet (the
  # node retries, and the container restarts on failure).
  target=""
  for ((i = 0; i < initial; i++)); do
    [ "$i" -eq "$ORDINAL" ] && continue
    if [ -z "$target" ]; then target="$(peer_addr "$i")"; fi
    if timeout 10 "$SETTLE_BIN" cluster status --target "$(client_addr "$i")" "${CLI_AUTH[@]}" >/dev/null 2>&1; then
      target="$(peer_addr "$i")"
      break
    fi
  done
  log "node $NODE_ID joining through $target"
  mkdir -p "$DATA_ROOT"
  touch "$DATA_ROOT/joining"
  args+=(--join "$target")
fi

# The container's args (values.extraArgs) come last.
exec "$SETTLE_BIN" "${args[@]}" "$@"

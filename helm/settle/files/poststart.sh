#!/bin/bash
# postStart hook: a node that started with --join (scale-up, or a replaced disk) registers itself
# with `settle cluster add-node`, retrying until the cluster accepts it or the deadline passes
# (then the container restarts and tries again). add-node is idempotent for a node that is
# already a member with the same peer address (docs/cluster-interface.md), so retries are safe.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
hook_log_to_container

[ -e "$DATA_ROOT/joining" ] || exit 0
deadline=$((SECONDS + ${JOIN_TIMEOUT_SECONDS:-300}))
until "$SETTLE_BIN" cluster add-node --target "$CLIENT_TARGET" --id "$NODE_ID" --peer "$SELF_PEER" "${CLI_AUTH[@]}"; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "add-node of node $NODE_ID ($SELF_PEER) did not succeed in time; the container will restart and retry"
    exit 1
  fi
  sleep "${RETRY_PAUSE_SECONDS:-5}"
done
rm -f "$DATA_ROOT/joining"
log "node $NODE_ID added to the cluster as $SELF_PEER"

#!/usr/bin/env bash
# The CPU player as a Cloud Run service, from the server image: the newest checkpoint in the
# bucket at start, then each new one announced through Redis. Prints the service URL, which
# is the base URL the hexz Go server's remote CPU player is configured with.
set -euo pipefail
. "$(dirname "$0")/config.sh"

ENV_VARS="HEXZ_MODEL_PATH=${STORAGE_URL},HEXZ_MODEL_NAME=${MODEL_NAME}"
ENV_VARS+=",HEXZ_REDIS_URL=redis://$(redis_host):6379/0,HEXZ_MAX_THINK_MS=${CPU_MAX_THINK_MS}"
# One search process per vCPU (the search runs in one thread per process).
ENV_VARS+=",HEXZ_WORKERS=${CPU_CPU},HEXZ_SEARCH_SLOTS=8"
access=--no-allow-unauthenticated
[ "$CPU_PUBLIC" = 1 ] && access=--allow-unauthenticated

run gcloud run deploy "$CPU_SERVICE" --project "$PROJECT" --region "$REGION" \
  --image "$SERVER_IMAGE" --command pyhexz --args cpu-server \
  --cpu "$CPU_CPU" --memory "$CPU_MEMORY" --concurrency $((8 * CPU_CPU)) \
  --max-instances "$CPU_MAX_INSTANCES" --timeout 60 --no-cpu-throttling \
  --network "$NETWORK" --subnet "$SUBNET" --vpc-egress private-ranges-only \
  --service-account "$(sa_email "$CPU_SA")" --set-env-vars "$ENV_VARS" "$access"
if [ -z "${DRY_RUN:-}" ]; then
  gcloud run services describe "$CPU_SERVICE" --project "$PROJECT" --region "$REGION" \
    --format 'value(status.url)'
fi

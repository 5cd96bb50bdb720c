#!/usr/bin/env bash
# The self-play workers as a Cloud Run job, then one execution of it:
#   deploy/workers.sh                    create (or update) the job and execute it
#   WORKER_TASKS=50 WORKER_PARALLELISM=20 deploy/workers.sh
# Each task plays until HEXZ_MAX_SECONDS (the task timeout less a minute for the last
# uploads) and exits 0; the job reaches the server and Redis over Direct VPC egress.
set -euo pipefail
. "$(dirname "$0")/config.sh"

MAX_SECONDS=$((WORKER_TASK_TIMEOUT - 60))
ENV_VARS="HEXZ_SERVER_URL=http://$(server_ip):${SERVER_PORT},HEXZ_REDIS_URL=redis://$(redis_host):6379/0"
ENV_VARS+=",HEXZ_MODEL_NAME=${MODEL_NAME},HEXZ_MAX_SECONDS=${MAX_SECONDS}"
ENV_VARS+=",HEXZ_NUM_WORKERS=${WORKER_CPU},HEXZ_RUNS_PER_MOVE=${WORKER_RUNS_PER_MOVE}"

verb=create
if [ -z "${DRY_RUN:-}" ] && gcloud run jobs describe "$WORKER_JOB" --region "$REGION" \
    --project "$PROJECT" >/dev/null 2>&1; then
  verb=update
fi
run gcloud run jobs "$verb" "$WORKER_JOB" --project "$PROJECT" --region "$REGION" \
  --image "$WORKER_IMAGE" --tasks "$WORKER_TASKS" --parallelism "$WORKER_PARALLELISM" \
  --task-timeout "${WORKER_TASK_TIMEOUT}s" --max-retries 1 \
  --cpu "$WORKER_CPU" --memory "$WORKER_MEMORY" \
  --network "$NETWORK" --subnet "$SUBNET" --vpc-egress private-ranges-only \
  --service-account "$(sa_email "$WORKER_SA")" \
  --set-env-vars "$ENV_VARS" --set-secrets "HEXZ_AUTH_TOKEN=${AUTH_SECRET}:latest"
run gcloud run jobs execute "$WORKER_JOB" --project "$PROJECT" --region "$REGION"

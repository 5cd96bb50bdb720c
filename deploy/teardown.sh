#!/usr/bin/env bash
# Removes what the other scripts created, except the bucket (checkpoints are the record):
# delete it yourself with `gcloud storage rm -r gs://BUCKET` when you mean it.
set -euo pipefail
. "$(dirname "$0")/config.sh"

run gcloud run services delete "$CPU_SERVICE" --project "$PROJECT" --region "$REGION" --quiet
run gcloud run jobs delete "$WORKER_JOB" --project "$PROJECT" --region "$REGION" --quiet
run gcloud compute instances delete "$VM_NAME" --project "$PROJECT" --zone "$ZONE" --quiet
run gcloud redis instances delete "$REDIS_INSTANCE" --project "$PROJECT" --region "$REGION" --quiet
run gcloud compute firewall-rules delete hexz-server-internal --project "$PROJECT" --quiet

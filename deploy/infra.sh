#!/usr/bin/env bash
# One-time infrastructure: APIs, the image repository, the bucket, Memorystore Redis, service
# accounts with the least access each part needs, the auth token secret, and a firewall rule
# that lets Cloud Run (Direct VPC egress) reach the training server VM.
set -euo pipefail
. "$(dirname "$0")/config.sh"

run gcloud services enable --project "$PROJECT" compute.googleapis.com run.googleapis.com \
  redis.googleapis.com artifactregistry.googleapis.com secretmanager.googleapis.com \
  storage.googleapis.com

run gcloud artifacts repositories create "$REPOSITORY" --project "$PROJECT" \
  --location "$REGION" --repository-format docker

run gcloud storage buckets create "gs://${BUCKET}" --project "$PROJECT" --location "$REGION" \
  --uniform-bucket-level-access

run gcloud redis instances create "$REDIS_INSTANCE" --project "$PROJECT" --region "$REGION" \
  --size "$REDIS_SIZE_GB" --redis-version redis_7_2 --network "$NETWORK"

for sa in "$SERVER_SA" "$WORKER_SA" "$CPU_SA"; do
  run gcloud iam service-accounts create "$sa" --project "$PROJECT" --display-name "hexz $sa"
done
# The server writes checkpoints; the CPU player reads them; workers need no bucket access.
run gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
  --member "serviceAccount:$(sa_email "$SERVER_SA")" --role roles/storage.objectAdmin
run gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
  --member "serviceAccount:$(sa_email "$CPU_SA")" --role roles/storage.objectViewer
for sa in "$SERVER_SA" "$WORKER_SA"; do
  run gcloud projects add-iam-policy-binding "$PROJECT" \
    --member "serviceAccount:$(sa_email "$sa")" --role roles/artifactregistry.reader
done

# The token the server requires and the workers send. Printed nowhere; rotate by adding a
# version and restarting the server and the job.
if [ -n "${DRY_RUN:-}" ]; then
  run gcloud secrets create "$AUTH_SECRET" --project "$PROJECT" --data-file -
else
  head -c 32 /dev/urandom | base64 | tr -d '/+=\n' |
    gcloud secrets create "$AUTH_SECRET" --project "$PROJECT" --data-file -
fi
for sa in "$SERVER_SA" "$WORKER_SA"; do
  run gcloud secrets add-iam-policy-binding "$AUTH_SECRET" --project "$PROJECT" \
    --member "serviceAccount:$(sa_email "$sa")" --role roles/secretmanager.secretAccessor
done

# Cloud Run jobs and services reach the VM's internal address through Direct VPC egress.
run gcloud compute firewall-rules create hexz-server-internal --project "$PROJECT" \
  --network "$NETWORK" --direction INGRESS --action allow --rules "tcp:${SERVER_PORT}" \
  --source-ranges 10.0.0.0/8 --target-tags hexz-server

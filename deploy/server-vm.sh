#!/usr/bin/env bash
# The training server on a GCE VM (Container-Optimized OS): the server image (`pyhexz server`),
# checkpoints in the bucket, the write-ahead log on the VM's persistent stateful partition,
# models announced through Memorystore. A startup script (re)starts the container at boot.
set -euo pipefail
. "$(dirname "$0")/config.sh"

REDIS_URL="redis://$(redis_host):6379/0"
startup=$(mktemp)
trap 'rm -f "$startup"' EXIT
cat >"$startup" <<SCRIPT
#!/bin/bash
# Runs as root at every boot.
set -e
mkdir -p /mnt/stateful_partition/hexz
chown 10001:10001 /mnt/stateful_partition/hexz   # the image's non-root user
export HOME=/var/lib/hexz && mkdir -p \$HOME
docker-credential-gcr configure-docker --registries=${REGION}-docker.pkg.dev
# COS has no gcloud: read the token with the Cloud SDK image (the VM's service account).
auth=\$(docker run --rm gcr.io/google.com/cloudsdktool/google-cloud-cli:slim \\
  gcloud secrets versions access latest --secret=${AUTH_SECRET} --project=${PROJECT})
docker pull ${SERVER_IMAGE}
docker rm -f hexz-server 2>/dev/null || true
docker run -d --name hexz-server --restart=always -p ${SERVER_PORT}:8080 \\
  -v /mnt/stateful_partition/hexz:/data \\
  -e HEXZ_STORAGE=${STORAGE_URL} -e HEXZ_STATE_DIR=/data/wal -e HEXZ_MODEL_NAME=${MODEL_NAME} \\
  -e HEXZ_REDIS_URL=${REDIS_URL} -e HEXZ_AUTH_TOKEN="\$auth" \\
  ${SERVER_IMAGE}
SCRIPT

if [ -n "${DRY_RUN:-}" ]; then
  echo "# startup script:"
  sed 's/^/#   /' "$startup"
fi
run gcloud compute instances create "$VM_NAME" --project "$PROJECT" --zone "$ZONE" \
  --machine-type "$VM_MACHINE_TYPE" --image-family cos-stable --image-project cos-cloud \
  --boot-disk-size 50GB --network "$NETWORK" --subnet "$SUBNET" --tags hexz-server \
  --service-account "$(sa_email "$SERVER_SA")" --scopes cloud-platform \
  --metadata-from-file "startup-script=${startup}"

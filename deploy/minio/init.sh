#!/bin/sh
# Create DermaSynth's bucket and the prefixes Triton and the registry expect (run once by compose/k8s).
# Needs: MINIO_URL (http://minio:9000), MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, DERMASYNTH_S3_BUCKET.
set -eu
bucket="${DERMASYNTH_S3_BUCKET:-dermasynth}"
until mc alias set dermasynth "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO at ${MINIO_URL:-http://minio:9000}"; sleep 2
done
mc mb --ignore-existing "dermasynth/$bucket"
# Triton's model repository (s3://minio:9000/$bucket/models) must exist before Triton starts.
if ! mc stat "dermasynth/$bucket/models/.keep" >/dev/null 2>&1; then
  printf '' | mc pipe "dermasynth/$bucket/models/.keep"
fi
echo "bucket $bucket ready"

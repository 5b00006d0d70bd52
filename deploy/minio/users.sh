#!/bin/sh
# One least-privilege MinIO user per service (issue 12): run once after init.sh, as the root user.
# Needs: MINIO_URL, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, DERMASYNTH_S3_BUCKET, and for each service its
# credentials: GATEWAY_S3_ACCESS_KEY/GATEWAY_S3_SECRET_KEY, WORKER_S3_..., TRITON_S3_... (each service then
# gets its pair as DERMASYNTH_S3_ACCESS_KEY/DERMASYNTH_S3_SECRET_KEY; Triton as AWS_ACCESS_KEY_ID/..._SECRET_...).
set -eu
bucket="${DERMASYNTH_S3_BUCKET:-dermasynth}"
here="$(dirname "$0")/policies"
mc alias set dermasynth "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
for service in gateway worker triton; do
  upper=$(echo "$service" | tr a-z A-Z)
  eval access="\${${upper}_S3_ACCESS_KEY}"
  eval secret="\${${upper}_S3_SECRET_KEY}"
  policy="/tmp/dermasynth-$service.json"
  sed "s/BUCKET/$bucket/g" "$here/$service.json" > "$policy"
  mc admin policy create dermasynth "dermasynth-$service" "$policy"
  mc admin user add dermasynth "$access" "$secret"
  mc admin policy attach dermasynth "dermasynth-$service" --user "$access" >/dev/null 2>&1 || true
  echo "user $access: policy dermasynth-$service"
done

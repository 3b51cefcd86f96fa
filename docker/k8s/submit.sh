#!/usr/bin/env bash
# Run the sparkml-scale job on Kubernetes with spark-submit in cluster mode: the driver and two
# executors are pods of the sparkml-scale image.  First, once per cluster:
#
#   kubectl apply -f docker/k8s/namespace.yaml -f docker/k8s/rbac.yaml -f docker/k8s/pvc.yaml
#
# then push the image (docker/Dockerfile) where the cluster pulls from and run
#
#   IMAGE=registry.example/sparkml-scale:0.1 bash docker/k8s/submit.sh [more job flags]
#
# Extra arguments go to `sparkml-scale train` after the defaults below (a later flag wins).
# Environment: IMAGE, NAMESPACE, K8S_API (default: the current kubectl context's server),
# SPARK_SUBMIT (default: spark-submit on PATH, e.g. .venv/bin/spark-submit; same Spark version
# as the image).  The same job as the spark-operator manifest sparkapplication.yaml.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
IMAGE=${IMAGE:-sparkml-scale:latest}
NAMESPACE=${NAMESPACE:-sparkml-scale}
K8S_API=${K8S_API:-$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')}
SPARK_SUBMIT=${SPARK_SUBMIT:-spark-submit}

# The job: the application file inside the image (local://) and its arguments.
APP=local:///opt/sparkml-scale/sparkml_scale/cli.py
JOB_ARGS=(train --output /data/runs/flights --overwrite --reg-param 0.001)

exec "$SPARK_SUBMIT" \
  --master "k8s://$K8S_API" \
  --deploy-mode cluster \
  --name sparkml-scale-train \
  --conf spark.kubernetes.namespace="$NAMESPACE" \
  --conf spark.kubernetes.container.image="$IMAGE" \
  --conf spark.kubernetes.container.image.pullPolicy=IfNotPresent \
  --conf spark.kubernetes.authenticate.driver.serviceAccountName=sparkml-scale-driver \
  --conf spark.kubernetes.driver.podTemplateFile="$here/driver-pod-template.yaml" \
  --conf spark.kubernetes.executor.podTemplateFile="$here/executor-pod-template.yaml" \
  --conf spark.kubernetes.driver.podTemplateContainerName=spark-kubernetes-driver \
  --conf spark.kubernetes.executor.podTemplateContainerName=spark-kubernetes-executor \
  --conf spark.driver.cores=1 \
  --conf spark.driver.memory=2g \
  --conf spark.executor.instances=2 \
  --conf spark.executor.cores=1 \
  --conf spark.executor.memory=2g \
  --conf spark.sql.execution.arrow.pyspark.enabled=true \
  "$APP" "${JOB_ARGS[@]}" "$@"

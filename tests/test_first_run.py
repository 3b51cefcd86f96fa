"""The first run, as a newcomer meets it: what the set-up prints, Spark's console level,
install hints for the optional extras, and a README that points only at what exists."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ Spark's console log level
def test_log_config_java_options(tmp_path, monkeypatch):
    from sparkml_scale.core import session

    monkeypatch.delenv("SPARK_CONF_DIR", raising=False)
    monkeypatch.delenv("SPARK_HOME", raising=False)
    opts = session.log_config_java_options("error")
    assert opts == f"-Dlog4j2.configurationFile={session.LOG4J2_CONFIG} -Dsparkml_scale.spark.log.level=error"
    assert session.log_config_java_options("WARN", "-XX:+UseG1GC").startswith(
        "-XX:+UseG1GC -Dlog4j2.configurationFile=")
    # the user's own log4j set-up wins
    assert session.log_config_java_options("ERROR", "-Dlog4j2.configurationFile=/etc/mine.properties") is None
    (tmp_path / "log4j2.properties").write_text("rootLogger.level = info\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert session.log_config_java_options("ERROR") is None
    with pytest.raises(ValueError, match="log_level must be one of"):
        session.log_config_java_options("LOUD")


def test_log4j2_config_takes_its_level_from_the_property():
    from sparkml_scale.core.session import LOG4J2_CONFIG, LOG_LEVEL_PROPERTY

    text = open(LOG4J2_CONFIG).read()
    levels = dict(re.findall(r"^(rootLogger\.level|logger\.\w+\.level) = (.+)$", text, re.M))
    prop = f"${{sys:{LOG_LEVEL_PROPERTY}:-warn}}"
    assert levels["rootLogger.level"] == prop
    # the loggers Spark's shell logic compares with the root level (else it prints a notice)
    names = dict(re.findall(r"^logger\.(\w+)\.name = (.+)$", text, re.M))
    for cls in ("org.apache.spark.repl.Main", "org.apache.spark.api.python.PythonGatewayServer"):
        key = next(k for k, v in names.items() if v == cls)
        assert levels[f"logger.{key}.level"] == prop


# ------------------------------------------------------------------ optional extras
def test_require_names_the_pip_extra(tmp_path, monkeypatch):
    from sparkml_scale.core.optional import ensure_installed, require

    assert require("json", extra="x").dumps([1]) == "[1]"
    ensure_installed("json", extra="x")
    for check in (require, ensure_installed):
        with pytest.raises(ModuleNotFoundError, match=r"^the demo needs the 'no_such_mod_q' package, which is not "
                           r"installed: pip install 'sparkml-scale\[fancy\]' \(in a source checkout: "
                           r"pip install -e \"\.\[fancy\]\"\)$") as exc:
            check("no_such_mod_q", extra="fancy", feature="the demo")
        assert exc.value.name == "no_such_mod_q"
    # a module that is there but misses one of its own dependencies: that error, unchanged
    (tmp_path / "half_installed_q.py").write_text("import no_such_dependency_q\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="No module named 'no_such_dependency_q'"):
        require("half_installed_q", extra="fancy")


@pytest.mark.parametrize("statement", [
    "from sparkml_scale.torch import TorchEstimator",
    "from sparkml_scale.torch.models import small_cnn",
    "import sparkml_scale.torch.loop",
])
def test_torch_missing_gives_the_install_hint(statement):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "try:\n"
        f"    {statement}\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name, '|', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == ("torch | sparkml_scale.torch needs the 'torch' package, which is not installed: "
                           "pip install 'sparkml-scale[torch]' (in a source checkout: pip install -e \".[torch]\")")


def test_delta_missing_gives_the_install_hint(monkeypatch):
    from sparkml_scale.io import delta_rs

    monkeypatch.setitem(sys.modules, "deltalake", None)
    with pytest.raises(ModuleNotFoundError, match=r"jars/README\.md.*pip install 'sparkml-scale\[delta\]'"):
        delta_rs._deltalake()


# ------------------------------------------------------------------ packaging
def test_wheel_builds_quietly_with_license_and_log_config(tmp_path):
    """The build prints no setuptools deprecation blocks (the pyproject `license` table gave 52
    lines per install), and the wheel holds LICENSE and the log4j2 config get_session uses."""
    import shutil
    import zipfile

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject.toml's build requirement)")
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    shutil.copytree(os.path.join(ROOT, "sparkml_scale"), src / "sparkml_scale",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "license" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("sparkml_scale-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "sparkml_scale/core/log4j2.properties" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "License-Expression: Apache-2.0" in metadata
    text = open(os.path.join(ROOT, "LICENSE")).read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


# ------------------------------------------------------------------ README
def test_readme_points_only_at_files_in_the_repository():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert "../" not in text, "the README refers to a file outside the repository"
    paths = set(re.findall(r"`((?:scripts|tests|jars|benchmarks|sparkml_scale)/[\w./-]*[\w/])`", text))
    paths |= set(re.findall(r"(?:bash|python) ((?:scripts|benchmarks)/[\w./-]+)", text))
    assert len(paths) >= 5, paths
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    assert missing == []

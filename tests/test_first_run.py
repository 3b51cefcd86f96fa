"""The first run, as a newcomer meets it: what the set-up prints, Spark's console level,
install hints for the optional extras, and a README that points only at what exists."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

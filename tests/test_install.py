"""What a stranger's machine may lack: the extras (faiss, FastAPI, ONNX), ``fcntl`` (Windows),
the real datasets; and what a package carries (its version, its settings page, its real
default). Each case runs ``mirec`` in a fresh interpreter whose missing modules are blocked
(``sys.modules[name] = None``, so importing one fails as an uninstalled package does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirec import __version__
from mirec.config import AUTO_CANDIDATES, AUTO_MODEL, load_plan

REPO = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("faiss", "fastapi", "starlette", "uvicorn", "onnx", "onnxscript",
                 "onnxruntime", "httptools", "uvloop", "mlflow", "tensorboard")  # fmt: skip
TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"

# run as `python -c RUNNER BLOCKED ARGS...`: mirec's console entry point with BLOCKED (a
# comma-separated module list) unimportable
RUNNER = """
import sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
sys.argv = ["mirec", *sys.argv[2:]]
from mirec.cli.main import main
main()
"""


def run_mirec(blocked: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(blocked), *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )  # fmt: skip


def run_python(blocked: tuple[str, ...], code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter with ``blocked`` unimportable."""
    setup = f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", setup + code],
                            capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder trained with every extra blocked: the base install trains."""
    out = tmp_path_factory.mktemp("base") / "sa"
    result = run_mirec(EXTRA_MODULES, "train", "--dataset", TINY, "--model", "comirec-sa",
                       "--set", "max_epochs=2", "--output-dir", str(out), "--quiet",
                       cwd=out.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "recall@50" in result.stdout and result.stderr == ""
    return out


def test_the_base_install_trains_recommends_and_evaluates(base_folder):
    for args in (
        ("recommend", "--checkpoint", str(base_folder), "--user", "1", "--json"),
        ("evaluate", "--checkpoint", str(base_folder), "--quiet"),
        ("inspect", "--checkpoint", str(base_folder), "--user", "1"),
    ):
        result = run_mirec(EXTRA_MODULES, *args, cwd=base_folder.parent)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    listed = run_mirec(EXTRA_MODULES, "recommend", "--checkpoint", str(base_folder), "--user",
                       "1", "--json", cwd=base_folder.parent)  # fmt: skip
    assert len(json.loads(listed.stdout)["items"]) == 10


def test_the_python_api_loads_and_recommends_on_the_base_install(base_folder):
    code = (
        "from mirec import Recommender, MirecError\n"
        f"rec = Recommender.load({str(base_folder)!r})\n"
        "print(len(rec.recommend(user=rec.info.user_ids[0], n=5)))\n"
        "try:\n"
        "    rec.build_index('flat')\n"
        "except MirecError as err:\n"
        "    print(err)\n"
    )
    assert run_python(EXTRA_MODULES, code) == [
        "5",
        "an item index needs the ann extra: pip install 'mirec[ann]' (no module named 'faiss')",
    ]


@pytest.mark.parametrize(
    ("command", "extra", "module"),
    [
        (("serve", "--port", "0"), "serve", "fastapi"),
        (("export", "--out", "{tmp}/export"), "export", "onnx"),
        (("index", "--kind", "flat"), "ann", "faiss"),
        (("recommend", "--user", "1", "--index", "flat"), "ann", "faiss"),
    ],
)
def test_a_command_that_needs_an_extra_says_which_in_one_line(
    base_folder, tmp_path, command, extra, module
):
    args = [a.format(tmp=tmp_path) for a in command]
    result = run_mirec(EXTRA_MODULES, args[0], "--checkpoint", str(base_folder), *args[1:],
                       cwd=tmp_path)  # fmt: skip
    name = " ".join(["mirec", args[0], *(["--index"] if "--index" in args else [])])
    assert result.returncode == 2
    assert result.stderr == (
        f"mirec: error: {name} needs the {extra} extra: pip install 'mirec[{extra}]' "
        f"(no module named {module!r})\n"
    )
    assert not (tmp_path / "export").exists()
    assert not list(base_folder.glob("index-*"))


def test_an_extra_missing_deeper_down_is_still_one_line(base_folder, tmp_path):
    """Only onnxruntime missing: export passes its first check of onnx, and is refused."""
    result = run_mirec(("onnxruntime",), "export", "--checkpoint", str(base_folder),
                       "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mirec: error: mirec export needs the export extra")
    assert result.stderr.count("\n") == 1


def test_training_and_loading_work_without_fcntl(tmp_path):
    """Windows has no fcntl: the run folder's lock comes from filelock, and a second run
    into a held folder is still refused."""
    out = tmp_path / "run"
    result = run_mirec(("fcntl",), "train", "--dataset", TINY, "--model", "comirec-sa",
                       "--set", "max_epochs=1", "--output-dir", str(out), "--quiet",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "metrics.json").is_file()
    code = (
        "from pathlib import Path\n"
        "from mirec import Recommender\n"
        "from mirec.run_folder import FolderInUse, folder_lock\n"
        f"folder = Path({str(out)!r})\n"
        "print(len(Recommender.load(folder).recommend([1, 2, 3], 4)))\n"
        "with folder_lock(folder):\n"
        "    try:\n"
        "        with folder_lock(folder):\n"
        "            print('taken twice')\n"
        "    except FolderInUse as err:\n"
        "        print('refused')\n"
        "with folder_lock(folder):\n"
        "    print('free again')\n"
    )
    assert run_python(("fcntl",), code) == ["4", "refused", "free again"]


def test_version(mirec_main):
    assert mirec_main("--version") == (0, f"mirec {__version__}\n", "")


def test_models_names_the_real_default(mirec_main):
    """The line marked default is what `mirec train` without --model trains, and no other
    model calls itself the default."""
    code, out, _ = mirec_main("models")
    assert code == 0
    marked = [line.split()[0] for line in out.splitlines() if "default" in line]
    assert marked == [AUTO_MODEL]
    trained = [c.model for c in load_plan(None, dataset="synthetic").candidates]
    assert trained == list(AUTO_CANDIDATES)
    line = next(line for line in out.splitlines() if line.split()[0] == AUTO_MODEL)
    assert f"trains {', '.join(trained)}" in line


def test_the_settings_page_is_the_generated_one(mirec_main):
    code, out, _ = mirec_main("models", "--settings", "--markdown")
    assert code == 0
    assert (REPO / "docs" / "settings.md").read_text() == out, (
        "docs/settings.md is stale: regenerate it with "
        "`mirec models --settings --markdown > docs/settings.md`"
    )
    from mirec.config_docs import settings

    assert all(s.help for s in settings()), "every setting of Config has a docstring"


def test_the_package_declares_what_a_wheel_needs():
    assert (REPO / "src" / "mirec" / "py.typed").is_file()
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert (REPO / "CHANGELOG.md").read_text().count(f"## {__version__}") == 1


def test_serve_answers_with_the_training_modules_unimportable(
    base_folder, serve_process, tmp_path, monkeypatch
):
    """Serving loads a model folder and answers; it never imports the training stack."""
    blocked = ("mirec.training", "mirec.runs", "mirec.auto", "mirec.experiments")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    import httpx

    server = serve_process(["--checkpoint", str(base_folder), "--workers", "1"], tmp_path)
    try:
        answer = httpx.post(f"{server.url}/recommend", json={"history": [1, 2, 3], "n": 3})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["items"]) == 3
        assert httpx.get(f"{server.url}/users/1/recommendations").status_code == 200
    finally:
        assert server.stop() == 0
    assert "ModuleNotFoundError" not in server.stderr.read_text()


def test_model_dir_names_the_model_folder_and_checkpoint_still_does(base_folder, mirec_main):
    """The model folder is --model-dir; --checkpoint, its name before 0.4, still works."""
    args = ("recommend", "--user", "1", "--json")
    new = mirec_main(args[0], "--model-dir", str(base_folder), *args[1:])
    old = mirec_main(args[0], "--checkpoint", str(base_folder), *args[1:])
    assert new[0] == 0 and new == old
    assert len(json.loads(new[1])["items"]) == 10
    code, out, _ = mirec_main("recommend", "--help")
    assert code == 0 and "--model-dir" in out

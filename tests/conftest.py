"""Shared fixtures: the real datasets in ../shared/data and a private preprocessing cache."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; its absence fails the test, it never skips."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(
            f"the shared datasets are missing: expected them at {SHARED_DATA} "
            "(../shared/data from the repository root); tests run on the real files"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Preprocessed datasets go to a temp folder, not the user's ~/.cache."""
    path = tmp_path_factory.mktemp("mirec-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MIREC_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def ml100k_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComiRec-SA trained 2 epochs on ml-100k: a model folder for inspect and Recommender."""
    from typer.testing import CliRunner

    from mirec.cli.main import app

    out = tmp_path_factory.mktemp("ml100k") / "sa"
    args = ["train", "--dataset", "ml-100k", "--model", "comirec-sa", "--output-dir", str(out),
            "--data-dir", str(shared_data), "--set", "max_epochs=2", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out

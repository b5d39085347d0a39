"""`mirec inspect`: a user's interests on ml-100k, named by genres, with movie titles."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from mirec.cli.main import app
from mirec.data.prepare import load_sequences
from mirec.evaluation.inspection import inspect_folder

runner = CliRunner()
GENRES = {"Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western", "unknown"}  # fmt: skip


def test_inspect_names_interests_by_genre_and_lists_titles(ml100k_run, shared_data, tmp_path):
    plot = tmp_path / "map.png"
    args = ["inspect", "--checkpoint", str(ml100k_run), "--user", "1", "--top", "5",
            "--plot", str(plot)]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # every history and recommendation line carries its movie's title, "Title (year)"
    listed = [line for line in result.output.splitlines() if line.startswith("    ")]
    assert listed and all(re.search(r"\S \(\d{4}\)$", line) for line in listed), listed
    headers = [line for line in result.output.splitlines() if line.startswith("interest ")]
    assert headers, result.output
    # "interest 0: Drama 52%, Comedy 29%, ..." names genres of ml-100k's u.genre
    named = headers[0].split(":", 1)[1].split("(")[0]
    assert any(genre in named for genre in GENRES)
    image = imread(plot)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0.01


def test_every_history_item_lands_in_exactly_one_interest(ml100k_run, shared_data):
    report = inspect_folder(ml100k_run, user="1", top=3)
    seqs = load_sequences("ml-100k", data_dir=shared_data)
    user_row = int(np.searchsorted(seqs.user_ids, 1))
    expected = [str(seqs.item_ids[i - 1]) for i in seqs.sequence(user_row)[-50:]]
    assert report.history == expected
    grouped = sorted(row.item for interest in report.interests for row in interest.history)
    assert grouped == sorted(expected)
    assert sum(i.share for i in report.interests) == pytest.approx(1.0, abs=1e-6)
    # recommendations leave the history out
    assert not {row.item for row in report.recommendations} & set(expected)
    assert len(report.recommendations) == 3
    # shares in an explanation are of the interest's items: within (0, 1], most common first
    for interest in report.interests:
        shares = [share for _, share in interest.explanation]
        assert all(0 < s <= 1 for s in shares) and shares == sorted(shares, reverse=True)


def test_inspect_a_raw_item_list_as_json(ml100k_run, shared_data):
    args = ["inspect", "--checkpoint", str(ml100k_run), "--items", "50,172,181,1,2",
            "--json"]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["user"] is None and report["history"] == ["50", "172", "181", "1", "2"]
    assert all("name" in interest for interest in report["interests"])


def test_unknown_user_and_items_are_clear_errors(ml100k_run, shared_data):
    from mirec.errors import ConfigError

    with pytest.raises(ConfigError, match="user '99999' is not in ml-100k"):
        inspect_folder(ml100k_run, user="99999")
    with pytest.raises(ConfigError, match=r"2 item id.*not in the catalogue: '999999', 'abc'"):
        inspect_folder(ml100k_run, items=["1", "999999", "abc"])
    with pytest.raises(ConfigError, match="either a user id or a list"):
        inspect_folder(ml100k_run)

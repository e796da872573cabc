"""One reader policy for every scores file: finite, unique, unambiguous or a one-line error (issue 25.7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fqtool.errors import FqtoolError
from fqtool.eval.erc import load_quality_csv
from fqtool.eval.ijb import load_ijb_quality_csv
from fqtool.eval.score_files import load_scores

IJB_IMAGES = np.array(["1.jpg", "2.jpg"])


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("dup.csv", "index,quality\n0,0.1\n0,0.2\n1,0.3\n", "line 3: image 0 is listed twice"),
        ("dupp.csv", "path,quality\nimages/0.jpg,0.1\nimages/00.jpg,0.2\nimages/1.jpg,0.3\n", "listed twice"),
        ("inf.csv", "index,quality\n0,inf\n1,0.3\n", "not a finite number"),
        ("sup.csv", "path,quality\nimages/².jpg,0.1\n", "not an integer image index"),
        ("sup.txt", "images/².jpg 0.1\n", "matches no image"),
        ("extra.txt", "images/0.jpg 0.5 7\nimages/1.jpg 0.5 7\n", "found more than one number"),
        ("huge.list", "a.jpg 1.7e308 1.7e308 1.7e308\nb.jpg 1 2 3\n", "norm is not a finite number"),
        ("ragged.list", "a.jpg 1 2 3\nb.jpg 1 2 3 4\n", "line 2: 4 feature values, the first line has 3"),
        ("twice.list", "a.jpg 1 2 3\na.jpg 1 2 3\n", "'a.jpg' is listed twice"),
    ],
)
def test_pair_set_scores_files_follow_one_policy(tmp_path: Path, name: str, text: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FqtoolError, match=needle) as info:
        load_scores(path, 2)
    assert "\n" not in str(info.value) and name in str(info.value)
    if name.endswith(".csv"):
        with pytest.raises(FqtoolError, match=needle):
            load_quality_csv(path, 2)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("path,quality\nx/1.jpg,inf\nx/2.jpg,0.2\n", "not a finite number"),
        ("path,quality\nx/1.jpg,0.1\ny/1.jpg,0.3\nx/2.jpg,0.2\n", "listed twice"),
        ("path,quality\nx/1.jpg,nan\nx/2.jpg,0.2\n", "not a finite number"),
    ],
)
def test_ijb_path_csv_follows_the_same_policy(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "q.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FqtoolError, match=needle):
        load_ijb_quality_csv(path, IJB_IMAGES)
    path.write_text("path,quality\nx/2.jpg,0.25\nx/1.jpg,0.5\n", encoding="utf-8")
    assert load_ijb_quality_csv(path, IJB_IMAGES).tolist() == [0.5, 0.25]


def test_a_large_but_finite_feature_norm_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "big.list"
    path.write_text("a.jpg 1e200 0 0\nb.jpg 3 4 0\n", encoding="utf-8")
    np.testing.assert_allclose(load_scores(path, 2), [1e200, 5.0])

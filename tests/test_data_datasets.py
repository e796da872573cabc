"""FaceImageDataset over MXNet-made / our own .rec files, list files and image folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fqtool.data.datasets import FaceImageDataset, open_dataset
from fqtool.data.recordio import RecordIOWriter, pack_record
from fqtool.errors import BadInputError, FormatError


def test_mxnet_made_rec(mxnet_made) -> None:
    manifest = json.loads((mxnet_made / "manifest.json").read_text())
    for source in (mxnet_made, mxnet_made / "train.rec"):
        ds = open_dataset(source)
        assert isinstance(ds, FaceImageDataset)
        assert len(ds) == manifest["num_images"] and ds.num_classes == manifest["num_classes"]
        assert ds.labels.dtype == np.int64
        assert ds.labels.tolist() == [im["class"] for im in manifest["images"]]
        assert ds.name(0) == "train:1" and ds.source.name == "train.rec"
    for i, im in enumerate(manifest["images"]):
        img, label = ds[i]
        assert img.dtype == torch.uint8 and img.shape == (3, 112, 112)
        assert label == im["class"]
        mean = img.float().mean((1, 2)).tolist()
        assert np.allclose(mean, im["mean_rgb"], atol=1.0), (i, mean, im["mean_rgb"])


@pytest.mark.parametrize("label", ["pair", "scalar"])
@pytest.mark.parametrize("header_first", [False, True])
def test_insightface_variants(tmp_path, make_insightface_rec, label, header_first) -> None:
    folder = make_insightface_rec(tmp_path / "d", label=label, header_first=header_first)
    ds = open_dataset(folder)
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2] and ds.num_classes == 3
    assert [ds.name(i) for i in range(2)] == ["train:1", "train:2"]
    assert ds[5][1] == 2


def test_im2rec_without_header(tmp_path, make_image) -> None:
    """im2rec: no header record, keys from 0, scalar labels (or [class, x] with flag 2)."""
    with RecordIOWriter(tmp_path / "data.rec") as w:
        for i, lab in enumerate([2, 0, 1, 0]):
            label = float(lab) if i % 2 else [float(lab), 0.5]
            w.write(i, pack_record(label, make_image(size=(64, 64)), id=i))
    ds = open_dataset(tmp_path / "data.rec")
    assert ds.labels.tolist() == [2, 0, 1, 0] and ds.num_classes == 3
    assert ds.name(0) == "data:0"
    img, _ = ds[0]
    assert img.shape == (3, 112, 112)  # resized from 64×64
    assert open_dataset(tmp_path / "data.rec", size=None)[0][0].shape == (3, 64, 64)


def test_image_folder_labels_sorted(tmp_path, make_image) -> None:
    for person, n in (("bob", 2), ("alice", 1), ("carol", 0)):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for k in range(n):
            (tmp_path / "faces" / person / f"{k}.jpg").write_bytes(make_image())
    (tmp_path / "faces" / "notes.txt").write_text("not an image")
    ds = open_dataset(tmp_path / "faces")
    assert [ds.name(i) for i in range(len(ds))] == ["alice/0.jpg", "bob/0.jpg", "bob/1.jpg"]
    assert ds.labels.tolist() == [0, 1, 1] and ds.num_classes == 2  # carol has no images
    assert ds[2][1] == 1


def test_flat_folder_is_unlabelled(tmp_path, make_image) -> None:
    for name in ("b.png", "a.jpg"):
        (tmp_path / name).write_bytes(make_image(fmt="PNG" if name.endswith("png") else "JPEG"))
    ds = open_dataset(tmp_path)
    assert [ds.name(i) for i in range(2)] == ["a.jpg", "b.png"]
    assert ds.labels.tolist() == [-1, -1] and ds.num_classes == 0


def test_empty_folder(tmp_path) -> None:
    with pytest.raises(BadInputError, match="no images"):
        open_dataset(tmp_path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("space.txt", "imgs/a.jpg 0\nimgs/b.jpg 1\n"),
        ("semi.txt", "imgs/a.jpg;0\nimgs/b.jpg;1\n"),
        ("train.lst", "0\t0.000000\timgs/a.jpg\n1\t1.000000\timgs/b.jpg\n"),
        ("magface.list", "imgs/a.jpg 0 0 0\nimgs/b.jpg 0 1 0\n"),
    ],
)
def test_list_formats(tmp_path, make_image, name, text) -> None:
    (tmp_path / "imgs").mkdir()
    for f in ("a.jpg", "b.jpg"):
        (tmp_path / "imgs" / f).write_bytes(make_image())
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / name).write_text(text.replace("imgs/", "../imgs/"))
    ds = open_dataset(tmp_path / "lists" / name)
    assert ds.labels.tolist() == [0, 1] and ds.num_classes == 2
    assert ds.name(1) == "../imgs/b.jpg"
    assert ds[1][1] == 1 and ds[1][0].shape == (3, 112, 112)


def test_skip_bad(tmp_path, make_image) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "good.jpg").write_bytes(make_image())
    (tmp_path / "p" / "bad.jpg").write_bytes(b"broken")
    with pytest.raises(BadInputError, match="bad.jpg"):
        open_dataset(tmp_path)[0]
    ds = open_dataset(tmp_path, skip_bad=True, size=(56, 48))
    img, label = ds[0]
    assert label == -1 and img.shape == (3, 56, 48) and int(img.sum()) == 0
    assert ds[1][1] == 0 and ds[1][0].shape == (3, 56, 48)


def test_rec_non_image_payload(tmp_path) -> None:
    with RecordIOWriter(tmp_path / "x.rec") as w:
        w.write(0, pack_record(0.0, b"definitely not an image"))
    with pytest.raises(BadInputError, match=r"x\.rec:0"):
        open_dataset(tmp_path / "x.rec")[0]
    assert open_dataset(tmp_path / "x.rec", skip_bad=True)[0][1] == -1


def test_rec_truncated_image_raises_format_error(tmp_path, make_insightface_rec) -> None:
    folder = make_insightface_rec(tmp_path / "d", header_first=True)
    rec = folder / "train.rec"
    raw = rec.read_bytes()
    idx = dict(line.split("\t") for line in (folder / "train.idx").read_text().splitlines())
    rec.write_bytes(raw[: int(idx["6"]) + 100])  # cut inside the last image record
    (folder / "train.idx").write_text("".join(f"{k}\t{idx[str(k)]}\n" for k in range(7)))
    ds = open_dataset(folder)  # identity records are gone: labels come from the image headers
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(FormatError, match=r"train\.rec.*truncated"):
        ds[5]


def test_dataloader_workers(mxnet_made) -> None:
    ds = open_dataset(mxnet_made)
    loader = torch.utils.data.DataLoader(ds, batch_size=6, num_workers=2)
    images, labels = zip(*loader, strict=True)
    assert torch.cat(labels).tolist() == ds.labels.tolist()
    assert torch.equal(torch.cat(images)[4], ds[4][0])

"""Fuzz: damaged images, ``.rec`` files and ``.bin`` payloads never crash the process.

A fixed-seed set of mutated PNG/JPEG/WebP/BMP files, RecordIO files and verification ``.bin`` files is
decoded by ``_fuzz_child.py`` in a child process, so a decoder that segfaults shows up as a signal
(negative return code) instead of killing pytest. Before fqtool 0.2 torchvision's native PNG decoder
killed the process on about half of such PNGs.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import fqtool
from fqtool.data.recordio import RecordIOWriter, pack_record

FACES = Path(__file__).parent / "data" / "faces"
CHILD = Path(__file__).with_name("_fuzz_child.py")
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}
PER_FORMAT = 55
SEED = 20261201


def _encoded(fmt: str, count: int = 3) -> list[bytes]:
    from PIL import Image

    out = []
    for path in sorted(FACES.glob("*.jpg"))[:count]:
        with Image.open(path) as img:
            buf = io.BytesIO()
            img.convert("L" if len(out) == 2 else "RGB").save(buf, fmt)
            out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: random.Random, keep: int = 8) -> bytes:
    """Overwrite 1–8 random bytes after the first ``keep`` (so the format is still recognised and the
    real decoder runs), sometimes insert or cut a run of bytes, sometimes truncate."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(keep, len(out))] = rng.randrange(256)
    roll = rng.random()
    if roll < 0.15:
        at = rng.randrange(keep, len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 64))
    elif roll < 0.3:
        at = rng.randrange(keep, len(out))
        del out[at:at + rng.randint(1, 64)]
    if rng.random() < 0.2:
        del out[rng.randrange(keep, len(out)):]
    return bytes(out)


def _big_jpeg_header(data: bytes, rng: random.Random) -> bytes:
    """A JPEG whose frame header claims a huge size (must not allocate gigabytes)."""
    pos = data.find(b"\xff\xc0")
    out = bytearray(data)
    out[pos + 5:pos + 9] = bytes([0xFF, rng.randrange(256), 0xFF, rng.randrange(256)])
    return bytes(out)


def _write_images(folder: Path, rng: random.Random) -> int:
    folder.mkdir()
    n = 0
    for fmt, ext in FORMATS.items():
        clean = _encoded(fmt)
        for i in range(PER_FORMAT):
            data = _mutate(clean[i % len(clean)], rng)
            if fmt == "JPEG" and i % 11 == 0:
                data = _big_jpeg_header(clean[0], rng)
            (folder / f"{fmt.lower()}{i:03d}{ext}").write_bytes(data)
            n += 1
    return n


def _write_recs(folder: Path, rng: random.Random) -> int:
    """One .rec of damaged images in intact records, and damaged copies of a clean .rec."""
    folder.mkdir()
    clean = _encoded("PNG") + _encoded("JPEG")
    damaged = [_mutate(clean[i % len(clean)], rng) for i in range(24)]
    _write_rec(folder / "images.rec", damaged)
    _write_rec(folder / "clean.rec", clean)
    data = (folder / "clean.rec").read_bytes()
    for i in range(16):
        name = folder / f"flipped{i:02d}"
        name.with_suffix(".rec").write_bytes(_mutate(data, rng, keep=0))
        name.with_suffix(".idx").write_bytes((folder / "clean.idx").read_bytes())
    return 2 + 16  # images.rec, clean.rec, the flipped copies


def _write_rec(path: Path, images: list[bytes]) -> None:
    n, classes = len(images), 3
    with RecordIOWriter(path) as writer:
        writer.write(0, pack_record([float(n + 1), float(n + 1 + classes)], b""))
        for i, image in enumerate(images):
            writer.write(i + 1, pack_record([float(i % classes), 1.0], image, id=i + 1))
        per = n // classes
        for c in range(classes):
            writer.write(n + 1 + c, pack_record([1.0 + c * per, 1.0 + (c + 1) * per], b"", id=n + 1 + c))


def _write_bins(folder: Path, rng: random.Random) -> int:
    """Valid pickles holding damaged images, and damaged pickles of clean images."""
    folder.mkdir()
    clean = _encoded("PNG") + _encoded("JPEG")
    for i in range(16):
        images = [_mutate(clean[(i + k) % len(clean)], rng) for k in range(4)]
        (folder / f"images{i:02d}.bin").write_bytes(pickle.dumps((images, [True, False]), protocol=4))
    payload = pickle.dumps((clean[:4], [True, False]), protocol=4)
    for i in range(16):
        (folder / f"pickle{i:02d}.bin").write_bytes(_mutate(payload, rng, keep=2))
    return 32


def test_damaged_inputs_never_crash_the_process(tmp_path) -> None:
    rng = random.Random(SEED)
    cases = _write_images(tmp_path / "images", rng)
    cases += _write_recs(tmp_path / "recs", rng)
    cases += _write_bins(tmp_path / "bins", rng)
    assert cases >= 200
    src = str(Path(fqtool.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(CHILD), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    lines = proc.stdout.splitlines()
    last = next((ln for ln in reversed(lines) if ln.startswith("case ")), "before the first case")
    assert proc.returncode >= 0, f"child killed by signal {-proc.returncode} at {last}"
    assert proc.returncode == 0 and lines[-1:] == ["done"], proc.stderr[-2000:]
    assert sum(ln.startswith("case ") for ln in lines) == cases + 2  # + folder dataset + make-list
    assert [ln for ln in lines if ln.startswith("unexpected")] == []
    # decoders must not print to the terminal ("Corrupt JPEG data: …", "libpng error: …", PIL warnings)
    noise = [ln for ln in proc.stderr.splitlines() if any(
        word in ln for word in ("Corrupt JPEG", "Premature end", "libpng", "libwebp", "Warning"))]
    assert noise == [], proc.stderr[-2000:]


def _fuzz_cases(tmp_path: Path, rng: random.Random):
    """(name, callable) pairs: damaged features files (.bin and IJB), lists with odd names, scores files."""
    import numpy as np

    from fqtool.data.lists import read_list
    from fqtool.eval.features import FeatureSet, load_features, save_features
    from fqtool.eval.ijb import IjbFeatures, load_ijb_features, save_ijb_features
    from fqtool.eval.score_files import load_scores

    nrng = np.random.default_rng(SEED)
    emb = nrng.normal(size=(8, 4)).astype(np.float32)
    bin_file = save_features(tmp_path / "f.npz", FeatureSet("s", emb, np.array([1, 0, 1, 0], bool),
                                                             nrng.uniform(size=8)))
    n = 6
    ijb_file = save_ijb_features(tmp_path / "i.npz", IjbFeatures(
        name="IJBC", images=np.array([f"{i}.jpg" for i in range(n)]), embeddings=emb[:n],
        quality=np.ones(n), detector_scores=np.ones(n), templates=np.array([1, 1, 2, 2, 3, 3]),
        medias=np.arange(n), pair_t1=np.array([1, 1]), pair_t2=np.array([2, 3]), pair_label=np.array([1, 0])))
    odd = [" ", "  ", "\t", ";", "#", "\x00", "\x85", "é", "1e9", "-5", "nan", ",", '"', "\ufeff"]
    for k in range(60):
        source = bin_file if k % 2 else ijb_file
        path = tmp_path / f"m{k:02d}.npz"
        path.write_bytes(_mutate(source.read_bytes(), rng, keep=4))
        loader = load_features if k % 2 else load_ijb_features
        yield f"features {path.name}", (lambda p=path, load=loader: load(p))
    for k in range(60):
        lines = ["".join(rng.choice(odd + ["a", "b", "0", "1", " 3"]) for _ in range(rng.randint(1, 6)))
                 for _ in range(rng.randint(1, 4))]
        path = tmp_path / f"l{k:02d}.txt"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        yield f"list {path.name}", (lambda p=path: read_list(p))
        scores = tmp_path / f"s{k:02d}.txt"
        scores.write_bytes("\n".join(f"images/{i}.jpg {line}" for i, line in enumerate(lines)).encode())
        yield f"scores {scores.name}", (lambda p=scores: load_scores(p, 2))


def test_damaged_features_lists_and_scores_files_are_one_fqtool_error(tmp_path) -> None:
    """In process (numpy and zipfile cannot segfault): every case returns or raises an FqtoolError."""
    from fqtool.errors import FqtoolError

    unexpected, count = [], 0
    for name, work in _fuzz_cases(tmp_path, random.Random(SEED)):
        count += 1
        try:
            work()
        except FqtoolError as exc:
            assert "\n" not in str(exc), name
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            unexpected.append(f"{name}: {type(exc).__name__}: {exc}")
    assert count == 180 and unexpected == []

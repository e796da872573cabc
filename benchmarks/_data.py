"""Benchmark data: an insightface-layout ``.rec`` of N synthetic faces, made quickly.

fqtool's synth draws about a hundred faces per second per core, so a set of ``distinct`` faces is drawn
once and its JPEG records are repeated (as different images of the identities) up to ``images``: decoding
costs the same as for N different faces, and 10,000 images take seconds instead of minutes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def synthetic_rec(folder: Path, images: int, *, identities: int = 0, distinct: int = 1024) -> Path:
    """``folder`` with train.rec/idx/property: ``images`` JPEG faces (``distinct`` drawn by synth, then
    repeated) in ``identities`` classes (default: 32 images each), in the layout of insightface's sets."""
    from fqtool.data.recordio import RecordIOReader, RecordIOWriter, pack_record, unpack_record
    from fqtool.data.synth import write_synthetic_dataset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    distinct = max(2, min(distinct, images))
    with tempfile.TemporaryDirectory(prefix="fqtool-synth-") as tmp:
        ids = max(2, distinct // 16)
        write_synthetic_dataset(tmp, num_identities=ids, images_per_identity=-(-distinct // ids), val_pairs=0)
        with RecordIOReader(Path(tmp) / "train.rec") as reader:
            faces = [face for _, face in (unpack_record(reader.read(key)) for key in reader.keys) if face]
    classes = identities or max(2, images // 32)
    per_class = -(-images // classes)
    first = classes * per_class + 1
    with RecordIOWriter(folder / "train.rec", folder / "train.idx") as writer:
        for i in range(classes * per_class):
            writer.write(i + 1, pack_record([float(i // per_class), 1.0], faces[i % len(faces)], id=i + 1))
        writer.write(0, pack_record([float(first), float(first + classes)], b""))
        for c in range(classes):
            span = [1.0 + c * per_class, 1.0 + (c + 1) * per_class]
            writer.write(first + c, pack_record(span, b"", id=first + c))
    (folder / "property").write_text(f"{classes},112,112\n")
    return folder

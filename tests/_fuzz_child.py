"""Child process of ``test_data_fuzz.py``: decode every damaged input in a folder the way fqtool does.

    python _fuzz_child.py FOLDER

A native decoder that crashes kills this process with a signal, which the parent sees as a negative
return code (pytest itself survives). Before each case the child prints ``case <name>`` (flushed), so
the parent can name the input that killed it. fqtool errors are expected; any other exception is
printed as ``unexpected <name> <type>: <message>`` and the child goes on.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path

from fqtool.data.binfile import decode_pairs, load_bin
from fqtool.data.datasets import FileImageDataset, RecordImageDataset
from fqtool.data.decode import decode_image
from fqtool.data.lists import make_list
from fqtool.errors import FqtoolError


def run_case(name: str, work) -> None:  # noqa: ANN001 - a callable
    print(f"case {name}", flush=True)
    try:
        work()
    except FqtoolError:
        pass
    except Exception as exc:  # noqa: BLE001 - report, keep going
        detail = traceback.format_exception_only(exc)[-1].strip()
        print(f"unexpected {name} {detail}", flush=True)


def decode_all(dataset) -> None:  # noqa: ANN001 - any fqtool dataset
    for i in range(len(dataset)):
        with contextlib.suppress(FqtoolError):
            dataset[i]


def main(folder: Path) -> None:
    images = sorted((folder / "images").iterdir())
    for path in images:
        run_case(path.name, lambda p=path: decode_image(p.read_bytes(), p.name))
    run_case("image folder dataset", lambda: decode_all(
        FileImageDataset(folder, folder / "images", [p.name for p in images], [-1] * len(images))))
    run_case("make-list --check", lambda: make_list(folder / "images", check=True,
                                                     output=folder / "list.txt"))
    for rec in sorted((folder / "recs").glob("*.rec")):
        run_case(rec.name, lambda r=rec: decode_all(RecordImageDataset(r)))
    for path in sorted((folder / "bins").glob("*.bin")):
        run_case(path.name, lambda p=path: decode_pairs(load_bin(p), workers=2))
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""How fast ``fqtool.data.synth`` draws faces (clean and degraded), in images per second on one core.

A speed number, not a test (wall-clock rates depend on the machine and its load):

    python benchmarks/synth_speed.py --images 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fqtool.data.synth import CLEAN, DEGRADATION_KINDS, generate_face, identity_params


def measure(images: int) -> float:
    """Images per second for ``images`` faces, half clean, half degraded at level 0.5 over every kind."""
    ident = identity_params(0, 0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for n in range(images):
        kind = DEGRADATION_KINDS[n % len(DEGRADATION_KINDS)] if n % 2 else CLEAN
        generate_face(ident, rng, level=0.5 if n % 2 else 0.0, kind=kind)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="Faces to generate.")
    args = parser.parse_args()
    print(f"synth: {measure(args.images):,.0f} img/s ({args.images} faces, one process)")


if __name__ == "__main__":
    main()

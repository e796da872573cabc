"""Shared test fixtures. Tests make their own data; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _cpu_threads() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def mxnet_made() -> Path:
    """A small insightface-layout data set written by MXNet 1.9.1's own RecordIO writer."""
    return DATA / "mxnet-made"

"""Shared fixtures: a per-run cache folder, the shared MNIST files, small configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature networks and real statistics are cached once per test run (or in $GAN_SEARCH_TEST_CACHE)."""
    path = Path(os.environ.get("GAN_SEARCH_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["GAN_SEARCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST files not found at {MNIST_DIR}")
    return MNIST_DIR

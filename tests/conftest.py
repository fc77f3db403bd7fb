"""Shared fixtures: the tiny default models (built once per test session), one torch thread.

``tiny_models_dir`` goes through :func:`llm.default_models.ensure_default_models` with a cache in
the session's temporary folder, so tests exercise the same build-and-cache path users get and
never touch ``~/.cache``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding ``llama/`` and ``qwen2/`` built with ``DefaultModelConfig.tiny()``."""
    from llm.default_models import DefaultModelConfig, ensure_default_models

    cache = tmp_path_factory.mktemp("pathdep-cache")
    paths = ensure_default_models(cache, DefaultModelConfig.tiny(), progress=False)
    return paths["llama"].parent


@pytest.fixture
def tiny_llama(tiny_models_dir: Path):
    """A freshly loaded ``(model, tokenizer)`` of the tiny default Llama (safe to train)."""
    from llm.models import load_model

    return load_model(tiny_models_dir / "llama")


@pytest.fixture
def tiny_qwen2(tiny_models_dir: Path):
    """A freshly loaded ``(model, tokenizer)`` of the tiny default Qwen2 (safe to train)."""
    from llm.models import load_model

    return load_model(tiny_models_dir / "qwen2")


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded (and a busy 2-core machine makes threads spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

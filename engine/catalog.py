"""The candidate models (data/catalog.json), looked up by name, alias, hub id or local folder.

Light module: plain JSON, no torch. Parameter counts come from the shipped cache that
engine.params computes (data/param_counts.json); a local checkpoint folder is described
from its config.json and counted from its safetensors headers (no weights are read).
"""

from __future__ import annotations

import difflib
import json
import struct
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from collections.abc import Mapping
from typing import Any
from engine.errors import VoxtuneError

DATA = Path(__file__).resolve().parents[1] / "data"
CATALOG_PATH = DATA / "catalog.json"
METHODS = ("full", "lora", "qlora", "lora8")


class UnknownModel(VoxtuneError, LookupError):
    def __init__(self, ref: str, matches: list[str], detail: str | None = None) -> None:
        self.ref, self.matches = ref, matches
        hint = f"; did you mean {', '.join(matches)}?" if matches else ""
        msg = detail or f"unknown model {ref!r}{hint} (`voxtune models` lists them; a local checkpoint folder works too)"
        super().__init__(msg, field="model")


@dataclass
class ModelEntry:
    """One catalog model. `family` is the kind of model (what the estimator and the filters
    need); `recipe` is the family key a recipe module declares (engine.recipes.registry), e.g.
    whisper, seamless, ctc, parakeet_ctc, moonshine, qwen2_audio, qwen3_asr, granite.

    Optional fields added with the 2026 models (older catalogs without them still load):
    model_type (config.json's; the architecture), model_types (other model_types the same
    recipe loads, e.g. a thinker-only export of an Omni checkpoint), max_audio_s (multi_item:
    the longest clip one example may hold, when the model has a limit)."""

    name: str
    hub_id: str
    family: str  # seq2seq | ctc | audio-llm | speech-to-text
    recipe: str
    model_class: str
    arch: dict
    window_s: float
    long_audio: str  # segment | multi_item | native
    audio_tokens_per_s: float
    languages: str = ""
    licence: str = ""
    methods: list[str] = field(default_factory=list)
    trainable: bool = True
    reason: str | None = None
    lora_targets: list[str] = field(default_factory=list)
    config_class: str | None = None
    aliases: list[str] = field(default_factory=list)
    published: dict | None = None
    requires_remote_code: bool = False
    notes: str | None = None
    local_path: str | None = None
    model_type: str | None = None
    model_types: list[str] = field(default_factory=list)  # more config.json model_types its recipe loads
    max_audio_s: float | None = None
    params: dict | None = None  # count record (engine.params), None when unknown

    @property
    def params_total(self) -> int | None:
        return int(self.params["total"]) if self.params else None

    @property
    def can_rewrite(self) -> bool:
        """Sequence-to-sequence and LLM output can rewrite text (fix false starts, reorder);
        CTC/TDT output is monotonic: it can only keep or drop what it hears."""
        return self.family != "ctc"

    @property
    def whole_audio_s(self) -> float:
        """The longest clip (seconds) that reaches the model whole, as one example: `native`
        up to its window, `multi_item` as several items in one prompt (up to max_audio_s, no
        limit when unset), `segment` only up to its window (longer clips are cut)."""
        if self.long_audio == "multi_item":
            return float(self.max_audio_s) if self.max_audio_s else float("inf")
        return float(self.window_s)

    def takes_whole(self, seconds: float) -> bool:
        return self.whole_audio_s >= seconds

    def to_dict(self) -> dict:
        return asdict(self)


OUTPUTS = ("rewrite", "delete")
WHOLE_5_MIN_S = 300.0  # "takes 5-minute audio whole": the target task's recordings are 2-5 minutes


def matches(entry: ModelEntry, takes_whole: float | None = None, output: str | None = None) -> bool:
    """The catalog filters (`voxtune models --takes-whole S --output rewrite|delete`, and the
    Models screen's w / o keys): takes a clip of `takes_whole` seconds whole, uncut; output
    `rewrite` (encoder-decoder, audio LLM: can fix false starts) or `delete` (CTC: monotonic,
    can only keep or drop what it hears)."""
    if takes_whole is not None and not entry.takes_whole(takes_whole):
        return False
    if output is not None and (output == "rewrite") != entry.can_rewrite:
        return False
    return True


# -- catalog ---------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _load(path: str) -> tuple[ModelEntry, ...]:
    from engine.params import load_counts

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); restore it from the voxtune release") from e
    counts = load_counts()
    known = set(ModelEntry.__dataclass_fields__)
    out = []
    for i, m in enumerate(raw.get("models", [])):
        extra = set(m) - known
        missing = {"name", "hub_id", "family", "recipe", "model_class", "arch", "window_s", "long_audio",
                   "audio_tokens_per_s"} - set(m)
        if missing or extra:
            raise ValueError(f"{path}: model #{i} ({m.get('name')}): missing {sorted(missing)} / unknown {sorted(extra)}")
        entry = ModelEntry(**m)
        entry.params = counts.get(entry.name)
        if entry.params is None and (entry.published or {}).get("total"):
            # a new entry before `python -m engine.params --write` ran: its published figures
            from engine.params import published_record

            entry.params = published_record(m, note="not computed yet: run `python -m engine.params --write "
                                                     "data/param_counts.json`")
        out.append(entry)
    return tuple(out)


def load_catalog(path: Path | None = None) -> list[ModelEntry]:
    return list(_load(str(path or CATALOG_PATH)))


def names() -> list[str]:
    return [e.name for e in load_catalog()]


def _keys(e: ModelEntry) -> list[str]:
    return [k.lower() for k in (e.name, e.hub_id, e.hub_id.split("/")[-1], *e.aliases)]


def close_matches(ref: str, candidates: list[str], n: int = 5) -> list[str]:
    low = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(ref.lower(), list(low), n=n, cutoff=0.5)
    subs = [k for k in low if ref.lower() in k or (len(k) > 3 and k in ref.lower())]
    out: list[str] = []
    for k in hits + subs:
        if low[k] not in out:
            out.append(low[k])
    return out[:n]


def get_model(ref: str) -> ModelEntry:
    """A catalog name, alias or hub id (case-insensitive), or a local checkpoint folder."""
    ref = str(ref).strip()
    key = ref.lower()
    for e in load_catalog():
        if key in _keys(e):
            return e
    p = Path(ref).expanduser()
    if p.is_dir():
        return entry_from_folder(p)
    entries = load_catalog()
    near = close_matches(ref, [e.name for e in entries] + [e.hub_id for e in entries])
    raise UnknownModel(ref, near)


# -- local checkpoint folders ---------------------------------------------------------------
class _ModelTypes(Mapping):
    """config.json model_type -> (kind, recipe key), from the catalog entries' `model_type` and
    `model_types` (the recipe modules declare the same in engine.recipes.registry, which the
    worker uses; a test keeps the two in agreement). A pure core: no recipe module is imported."""

    def _data(self) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for e in load_catalog():
            for t in (e.model_type, *e.model_types):
                if t:
                    out.setdefault(t, (e.family, e.recipe))
        return out

    def __getitem__(self, key: str) -> tuple[str, str]:
        return self._data()[key]

    def __iter__(self):
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


MODEL_TYPES: Mapping[str, tuple[str, str]] = _ModelTypes()


def family_for_model_type(model_type: str) -> tuple[str, str]:
    """(kind, recipe key) for a config.json model_type; KeyError names the supported ones."""
    try:
        return MODEL_TYPES[model_type]
    except KeyError:
        raise KeyError(f"model_type {model_type!r} is not an audio-to-text family voxtune trains "
                       f"(supported: {', '.join(sorted(MODEL_TYPES))})") from None


def template_for(recipe: str, model_type: str | None = None) -> ModelEntry | None:
    """The catalog model a local folder of this recipe borrows its defaults from (window,
    long-audio rule, methods, LoRA targets): the first trainable entry of the same
    model_type, else of the same recipe."""
    entries = [e for e in load_catalog() if e.recipe == recipe]
    same = [e for e in entries if model_type and model_type in (e.model_type, *e.model_types)]
    for group in (same, entries):
        for e in sorted(group, key=lambda e: not e.trainable):
            return e
    return None


def _first(d: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def _is_encoder_decoder_whisper_style(cfg: dict) -> bool:
    return "d_model" in cfg and "encoder_layers" in cfg and "decoder_layers" in cfg


def arch_from_config(cfg: dict, recipe: str | None = None) -> dict:
    """Catalog-style architecture numbers from a checkpoint's config.json, by the config's
    shape (not by family): Whisper-style encoder-decoders, SeamlessM4T's speech encoder + text
    decoder, a bare speech encoder (CTC), or a language model with an audio encoder (nested
    audio_config/encoder_config + text_config; Omni checkpoints nest it in thinker_config).
    `recipe` is accepted for callers of the older signature and not used."""
    if _is_encoder_decoder_whisper_style(cfg):
        return {
            "audio": {"hidden": cfg["d_model"], "layers": cfg["encoder_layers"], "heads": cfg["encoder_attention_heads"],
                      "ffn": cfg["encoder_ffn_dim"], "mel_bins": cfg.get("num_mel_bins", 80),
                      "frames_per_30s": cfg.get("max_source_positions", 1500)},
            "text": {"hidden": cfg["d_model"], "layers": cfg["decoder_layers"], "heads": cfg["decoder_attention_heads"],
                     "ffn": cfg["decoder_ffn_dim"], "vocab": cfg["vocab_size"],
                     "max_target_tokens": cfg.get("max_target_positions", 448)},
        }
    if "speech_encoder_layers" in cfg:  # SeamlessM4T
        return {"audio": {"hidden": cfg["hidden_size"], "layers": cfg["speech_encoder_layers"],
                          "heads": cfg["speech_encoder_attention_heads"], "ffn": cfg["speech_encoder_intermediate_size"],
                          "frames_per_30s": 1500},
                "text": {"hidden": cfg["hidden_size"], "layers": cfg["decoder_layers"], "heads": cfg["decoder_attention_heads"],
                         "ffn": cfg["decoder_ffn_dim"], "vocab": cfg["vocab_size"], "max_target_tokens": 256}}
    root = cfg.get("thinker_config", cfg)  # a full Omni checkpoint nests the thinker
    au = _first(root, "audio_config", "encoder_config", default=None)
    tx = root.get("text_config")
    if au is None and tx is None and "hidden_size" in cfg and "num_hidden_layers" in cfg:  # a bare speech encoder
        return {"audio": {"hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"],
                          "heads": cfg["num_attention_heads"], "ffn": cfg["intermediate_size"], "frames_per_30s": 1500},
                "text": {"vocab": cfg.get("vocab_size") or 64}}
    au, tx = au or {}, tx or {}
    audio = {"hidden": _first(au, "d_model", "hidden_size", "hidden_dim", default=1280),
             "layers": _first(au, "encoder_layers", "num_hidden_layers", "num_layers", default=32),
             "heads": _first(au, "encoder_attention_heads", "num_attention_heads", "num_heads", default=20),
             "frames_per_30s": 1500}
    audio["ffn"] = _first(au, "encoder_ffn_dim", "intermediate_size",
                          default=audio["hidden"] * au.get("feedforward_mult", 4))
    if not tx:  # encoder + CTC head (nested encoder_config/audio_config, no language model)
        return {"audio": audio, "text": {"vocab": _first(root, "vocab_size", default=64)}}
    heads = _first(tx, "num_attention_heads", default=32)
    text = {"hidden": _first(tx, "hidden_size", default=4096), "layers": _first(tx, "num_hidden_layers", default=32),
            "heads": heads, "kv_heads": _first(tx, "num_key_value_heads", default=heads),
            "ffn": _first(tx, "intermediate_size", default=11008), "vocab": _first(tx, "vocab_size", default=151936),
            "tie_embeddings": bool(_first(tx, "tie_word_embeddings", default=root.get("tie_word_embeddings", False)))}
    if tx.get("head_dim"):
        text["head_dim"] = tx["head_dim"]
    return {"audio": audio, "text": text}


def safetensors_counts(folder: Path) -> dict | None:
    """Count record from safetensors headers only (shapes, no tensor data)."""
    from engine.params import part_of

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    parts = {"audio": 0, "text": 0, "other": 0}
    quantizable = 0
    lora: dict[str, dict[str, int]] = {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            shape = meta.get("shape", [])
            numel = 1
            for s in shape:
                numel *= s
            part = part_of(name)
            parts[part] += numel
            if len(shape) == 2 and name.endswith(".weight") and not any(
                    k in name for k in ("embed", "lm_head", "proj_out", "shared")):
                quantizable += numel
                suffix = name.rsplit(".", 2)[-2]
                slot = lora.setdefault(suffix, {"audio": 0, "text": 0, "other": 0})
                slot[part] += shape[0] + shape[1]
    return {"total": sum(parts.values()), "audio_encoder": parts["audio"], "decoder": parts["text"],
            "other": parts["other"], "quantizable": quantizable, "lora_dims": dict(sorted(lora.items())),
            "source": "safetensors"}


def entry_from_folder(folder: Path) -> ModelEntry:
    """Describe a local checkpoint (a download or an exported fine-tune) as a catalog entry."""
    folder = Path(folder).expanduser().resolve()
    cfg_path = folder / "config.json"
    if not cfg_path.is_file() and (folder / "adapter_config.json").is_file():
        return _entry_from_adapter(folder)
    if not cfg_path.is_file():
        raise UnknownModel(str(folder), [], detail=f"{folder}: no config.json; point at a Hugging Face checkpoint "
                                                   "folder (the one holding config.json and *.safetensors)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UnknownModel(str(folder), [], detail=f"{cfg_path}: not valid JSON ({e})") from e
    model_type = cfg.get("model_type", "")
    try:
        family, recipe = family_for_model_type(model_type)
    except KeyError as e:
        raise UnknownModel(str(folder), [], detail=f"{cfg_path}: {e.args[0]}") from None
    try:
        arch = arch_from_config(cfg, recipe)
    except KeyError as e:
        raise UnknownModel(str(folder), [], detail=f"{cfg_path}: field {e.args[0]!r} missing for a {model_type} config") from None
    t = template_for(recipe, model_type)
    if t is None:
        raise UnknownModel(str(folder), [], detail=f"{cfg_path}: no catalog model of recipe {recipe!r} to take "
                                                   "defaults from; add one to data/catalog.json")
    archs = cfg.get("architectures") or [t.model_class]
    return ModelEntry(
        name=str(folder), hub_id=str(folder), family=family, recipe=recipe, model_class=archs[0], arch=arch,
        window_s=t.window_s, long_audio=t.long_audio, audio_tokens_per_s=t.audio_tokens_per_s,
        languages=t.languages, licence="see the checkpoint's model card", methods=list(t.methods),
        trainable=t.trainable, reason=t.reason, lora_targets=list(t.lora_targets),
        config_class=t.config_class, requires_remote_code=t.requires_remote_code, local_path=str(folder),
        model_type=model_type, notes=t.notes,
        params=safetensors_counts(folder) or _counts_of_same_architecture(recipe, arch),
    )


def _entry_from_adapter(folder: Path) -> ModelEntry:
    """A LoRA adapter (a run's checkpoint or `runs export`) is its base model plus the
    adapter: describe it as the base, so it can be scored with --eval-only."""
    path = folder / "adapter_config.json"
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as e:
        raise UnknownModel(str(folder), [], detail=f"{path}: not valid JSON ({e})") from e
    if not base:
        raise UnknownModel(str(folder), [], detail=f"{path}: no base_model_name_or_path; export the run "
                                                   "with `voxtune runs export ID --merge` instead")
    try:
        entry = get_model(base)
    except UnknownModel as e:
        raise UnknownModel(str(folder), [], detail=f"{path}: its base model {base!r} is unknown ({e})") from None
    return replace(entry, name=str(folder), hub_id=str(folder), local_path=str(folder))


def _counts_of_same_architecture(recipe: str, arch: dict) -> dict | None:
    """A folder without safetensors (e.g. pytorch_model.bin) that is a copy of a catalog
    model -- same recipe and layer numbers -- borrows that model's computed counts."""
    keys = ("hidden", "layers", "heads", "ffn", "vocab")
    sig = lambda a: tuple((a.get(part) or {}).get(k) for part in ("audio", "text") for k in keys)  # noqa: E731
    for e in load_catalog():
        if e.recipe == recipe and e.params and e.params.get("source") == "computed" and sig(e.arch) == sig(arch):
            return dict(e.params, source=f"same architecture as {e.name}")
    return None

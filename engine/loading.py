"""Where a model's files come from: a local folder, or a hub id through the Hugging Face cache.

Training boxes are often offline (or the user set HF_HUB_OFFLINE); then an uncached hub id
fails deep inside transformers with a message that does not say what to do. Here it fails
early, saying so, and naming both ways out. A folder may also hold a LoRA adapter (a run's
export or checkpoint); `resolve` reports its base model so the caller can load both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from engine.errors import VoxtuneError


class ModelNotAvailable(VoxtuneError):
    """The model's files cannot be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class ModelSource:
    ref: str  # absolute local folder or hub id of the (base) model
    adapter: str | None = None  # absolute folder of a PEFT adapter to put on top
    local: bool = False


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def looks_like_path(ref: str) -> bool:
    """Absolute/relative paths, and anything that exists on disk (as transformers decides)."""
    return ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or Path(ref).expanduser().exists()


def hub_cache() -> str:
    """The Hugging Face hub cache folder, read from the environment now (huggingface_hub reads
    it once, at import)."""
    return os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")


def _offline_message(ref: str) -> str:
    cache = hub_cache()
    why = "HF_HUB_OFFLINE is set" if offline() else "the hub could not be reached"
    return (
        f"model {ref!r} is not in the Hugging Face cache ({cache}) and {why}, so it cannot be "
        "downloaded. Either download it once on a machine with network access (unset "
        "HF_HUB_OFFLINE, or run `huggingface-cli download " + ref + "`), or pass a local folder "
        "that holds the checkpoint (config.json + weights + processor files) as the model, "
        "e.g. --model /path/to/folder"
    )


def _in_cache(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "adapter_config.json"):
        hit = try_to_load_from_cache(hub_id, name, cache_dir=hub_cache())
        if isinstance(hit, str):
            return True
    return False


def resolve(ref: str) -> ModelSource:
    """Check that `ref` can be loaded, before any heavy work starts."""
    ref = str(ref)
    if looks_like_path(ref):
        path = Path(ref).expanduser().resolve()
        if not path.is_dir():
            raise ModelNotAvailable(f"model folder {path} does not exist; give an existing checkpoint folder or a hub id")
        adapter_cfg = path / "adapter_config.json"
        # config.json beside it: a whole model that ships its own adapter (Granite Speech); the
        # recipe deals with that adapter. Without config.json: a run's LoRA adapter on a base.
        if adapter_cfg.exists() and not (path / "config.json").exists():
            try:
                base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
            except (KeyError, json.JSONDecodeError) as e:
                raise ModelNotAvailable(f"{adapter_cfg}: cannot read base_model_name_or_path ({e})") from e
            if not base:
                raise ModelNotAvailable(f"{adapter_cfg}: base_model_name_or_path is empty; export the run again")
            inner = resolve(base)
            return ModelSource(inner.ref, str(path), inner.local)
        if not (path / "config.json").exists():
            raise ModelNotAvailable(
                f"{path} holds neither config.json (a model) nor adapter_config.json (a LoRA "
                "adapter); point to the checkpoint folder itself")
        return ModelSource(str(path), None, True)
    if offline() and not _in_cache(ref):
        raise ModelNotAvailable(_offline_message(ref))
    return ModelSource(ref)


def from_pretrained(loader: Callable[..., Any] | Any, ref: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(ref, **kwargs)` with download failures turned into ModelNotAvailable."""
    fn = loader.from_pretrained if hasattr(loader, "from_pretrained") else loader
    try:
        return fn(ref, **kwargs)
    except OSError as e:
        if looks_like_path(ref):
            raise ModelNotAvailable(f"cannot load {ref}: {e}") from e
        raise ModelNotAvailable(_offline_message(ref) + f" (transformers said: {str(e).splitlines()[0]})") from e


def quiet_progress_bars() -> None:
    """No "Loading weights: 45%|..." bars: in a run's log.txt or a user's terminal they are
    noise that looks like output (and carriage returns garble the log tail)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _mel_bins(config: Any) -> int | None:
    """num_mel_bins of a model config or of its audio/encoder sub-config (None: not a mel model)."""
    for cfg in (config, getattr(config, "audio_config", None), getattr(config, "encoder_config", None)):
        n = getattr(cfg, "num_mel_bins", None) if cfg is not None else None
        if isinstance(n, int):
            return n
    return None


def check_processor(model: Any, processor: Any, ref: str) -> None:
    """The processor must make the features the model was built for: a checkpoint folder
    whose preprocessor_config.json (feature_size) disagrees with config.json (num_mel_bins) --
    e.g. large-v3's 128-bin processor next to an 80-bin model -- fails here, naming both
    files, instead of deep inside the first forward pass."""
    want = _mel_bins(getattr(model, "config", None))
    fe = getattr(processor, "feature_extractor", processor)
    have = getattr(fe, "feature_size", None)
    if want is None or not isinstance(have, int) or want == have:
        return
    raise _mel_mismatch(ref, have, want)


def _mel_bins_of_json(data: dict) -> int | None:
    for cfg in (data, data.get("audio_config"), data.get("encoder_config")):
        n = cfg.get("num_mel_bins") if isinstance(cfg, dict) else None
        if isinstance(n, int):
            return n
    return None


def check_processor_files(folder: str | Path) -> None:
    """check_processor from the files alone (JSON, no model load), for `queue add`: a local
    checkpoint whose processor makes another number of mel bins than its config.json expects
    is refused naming both files. Folders without those files are left to the loader."""
    where = Path(folder)
    try:
        want = _mel_bins_of_json(json.loads((where / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            data = json.loads((where / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        fe = data.get("feature_extractor") if isinstance(data.get("feature_extractor"), dict) else data
        have = fe.get("feature_size") if isinstance(fe, dict) else None
        if isinstance(have, int) and want is not None and have != want:
            raise _mel_mismatch(str(where), have, want)
        return


def _mel_mismatch(ref: str, have: int, want: int) -> "ModelNotAvailable":
    where = Path(ref) if looks_like_path(ref) else None
    cfg_file = f"{where / 'config.json'}" if where else f"{ref}'s config.json"
    # transformers >= 5 keeps the feature extractor's settings inside processor_config.json
    pre_name = next((n for n in ("preprocessor_config.json", "processor_config.json")
                     if where is not None and (where / n).is_file()), "preprocessor_config.json")
    pre_file = f"{where / pre_name}" if where else f"{ref}'s {pre_name}"
    return ModelNotAvailable(
        f"{pre_file} makes {have} mel bins (feature_size) but {cfg_file} expects {want} (num_mel_bins)",
        file=str(where) if where else None,
        hint=f"the processor files belong to another model; copy the matching {pre_name} "
             "(from the same checkpoint as the weights) into the folder")


# -- building the model for a run (heavy: torch/transformers/peft imported inside) -------------
def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def quantization_config(method: str, compute_dtype: Any):
    """qlora: 4-bit NF4 with double quantisation; lora8: 8-bit; anything else: none."""
    if method not in ("qlora", "lora8"):
        return None
    from transformers import BitsAndBytesConfig

    if method == "qlora":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def keep_trainable_layout(model: Any) -> None:
    """Keep a trainable 4-bit model's weights in the layout training uses.

    On a CPU with AVX512-BF16, bitsandbytes (>= 0.48) repacks a Linear4bit's weights into an
    inference-only layout on its first no-grad forward in eval mode -- here the word-timestamp
    pass that segments clips over 30 s, or an evaluation -- and every later training step then
    fails inside `matmul_4bit` ("a view of a leaf Variable that requires grad is being used in
    an in-place operation" at `result += bias`). Turning the repacking off on this model's
    layers keeps one layout for the whole run (inference-only models keep the faster path)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def unwrapped(model: Any) -> Any:
    """The transformers model under a PeftModel (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def whole_model_checkpointing(model: Any) -> bool:
    """Whether the model's own class supports gradient checkpointing. Some composite audio
    models do not (Granite Speech: transformers raises "does not support activation
    checkpointing"), while their language model and encoder do."""
    return bool(getattr(unwrapped(model), "supports_gradient_checkpointing", False))


def enable_checkpointing(model: Any) -> list[str]:
    """Non-reentrant gradient checkpointing, as the Trainer would switch it on, for a model
    whose own class lacks it: on each outermost submodule that is a transformers model
    supporting it (Granite Speech: `model.language_model`). Returns their dotted names (empty: nothing
    could be checkpointed). Adapters need input grads under checkpointing: switched on too."""
    from transformers import PreTrainedModel

    base = unwrapped(model)
    done: list[str] = []

    def visit(module: Any, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, PreTrainedModel) and child.supports_gradient_checkpointing:
                child.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                done.append(path)
            else:
                visit(child, path + ".")

    visit(base, "")
    if done and hasattr(base, "enable_input_require_grads"):
        try:
            base.enable_input_require_grads()
        except (NotImplementedError, AttributeError):  # no input embeddings of its own
            pass
    return done


def prepare_kbit(model: Any, gradient_checkpointing: bool) -> Any:
    """PEFT's `prepare_model_for_kbit_training` (freeze the base, gradient checkpointing with
    `use_reentrant=False`, input grads), then undo its fp32 upcast of the frozen weights that
    are big -- token embeddings, the LM head, convolutions, positional tables -- keeping only
    normalisation layers in fp32 (a few KiB per layer; their statistics are what the upcast is
    for). PEFT casts *every* 16-bit parameter to fp32: for Qwen2-Audio-7B that is the
    embeddings and the LM head (2 x 0.6 B parameters, +4.3 GiB), and QLoRA at batch 1 no longer
    fits a 12 GiB card. The well-kept recipes do the same: axolotl casts embed_tokens/lm_head
    back to the training dtype right after the call (`convert_embedding_modules_dtype`),
    unsloth never upcasts frozen weights. Parameters loaded in fp32 on purpose
    (`_keep_in_fp32_modules`) or in fp32 precision stay fp32. Returns the model."""
    from peft import prepare_model_for_kbit_training

    loaded_as = {id(p): p.dtype for p in model.parameters()}
    whole = gradient_checkpointing and whole_model_checkpointing(model)
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=whole,
        gradient_checkpointing_kwargs={"use_reentrant": False})
    if gradient_checkpointing and not whole:
        enable_checkpointing(model)
    restore_upcast(model, loaded_as)
    return model


def is_norm(module_name: str, module: Any) -> bool:
    """A normalisation layer (LayerNorm, RMSNorm, GroupNorm, BatchNorm...), by class or name."""
    return "norm" in type(module).__name__.lower() or "norm" in module_name.rsplit(".", 1)[-1].lower()


def restore_upcast(model: Any, loaded_as: dict[int, Any]) -> int:
    """Cast each frozen parameter outside a normalisation layer back to the dtype it was
    loaded in (`loaded_as`: id(param) -> dtype, before the upcast). Returns parameters cast."""
    import torch

    cast = 0
    for name, module in model.named_modules():
        if is_norm(name, module):
            continue
        for p in module.parameters(recurse=False):
            was = loaded_as.get(id(p))
            if p.requires_grad or was not in (torch.float16, torch.bfloat16) or p.dtype == was:
                continue
            p.data = p.data.to(was)
            cast += p.numel()
    return cast


def load_model(recipe: Any, source: ModelSource | str, *, method: str = "full", precision: str = "fp32",
               device: str = "cpu", train_texts: Any = (), trust_remote_code: bool = False,
               lora: dict | None = None, gradient_checkpointing: bool = False, trainable: bool = True,
               context: dict | None = None):
    """The recipe's model + processor, quantised and LoRA-wrapped as `method` says.

    Weights stay fp32 for a full fine-tune (mixed precision keeps fp32 master weights); a
    LoRA base is loaded in the compute precision since it is frozen. A `source` holding an
    adapter (a run's export or checkpoint) gets it on top: trainable for LoRA methods,
    merged into the weights for `full`. `context` (workspace, dataset, model, manifest_hash)
    goes to loaded.extra for recipes that cache prepared segments per (dataset, model).
    """
    if isinstance(source, str):
        source = resolve(source)
    quiet_progress_bars()
    quantized = method in ("qlora", "lora8")
    compute = torch_dtype(precision)
    weights = torch_dtype("fp32") if (method == "full" and trainable) else compute
    qconfig = quantization_config(method, compute)
    device_map = None
    if quantized:
        # one card per process: "cuda:1" under a multi-process launcher, "cuda" = card 0
        device_map = {"": int(device.partition(":")[2] or 0)} if device.startswith("cuda") else {"": "cpu"}
    loaded = recipe.load(source.ref, dtype=weights, quantization_config=qconfig, device_map=device_map,
                         trust_remote_code=trust_remote_code, train_texts=list(train_texts))
    check_processor(loaded.model, loaded.processor, source.ref)
    model = loaded.model
    if quantized and trainable:
        keep_trainable_layout(model)
        model = prepare_kbit(model, gradient_checkpointing)
    if source.adapter:
        from peft import PeftModel

        keep_training = trainable and method != "full"
        model = PeftModel.from_pretrained(model, source.adapter, is_trainable=keep_training)
        if not keep_training and not quantized:
            model = model.merge_and_unload()
    elif lora is not None and trainable:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora.get("dropout", 0.0)),
            target_modules=list(lora["targets"]), bias="none",
            # freshly initialised heads (CTC) must train fully and be saved with the adapter
            modules_to_save=list(getattr(recipe, "modules_to_save", ()) or []) or None))
        if quantized:  # a trained copy (modules_to_save) of a head kept 16-bit above: fp32 master weights
            for p in model.parameters():
                if p.requires_grad and p.dtype in (torch_dtype("bf16"), torch_dtype("fp16")):
                    p.data = p.data.float()
    loaded.model = model
    loaded.extra.setdefault("source", source)
    loaded.extra.update({k: v for k, v in (context or {}).items() if v is not None})
    return loaded


# -- CTC models' layout (engine.recipes.ctc uses these; engine.trace mirrors the recipe) -------
def ctc_head_name(model: Any) -> str | None:
    """The classifier over frames: the top-level Linear/Conv1d child with vocab_size outputs."""
    vocab = getattr(model.config, "vocab_size", None)
    for name, mod in model.named_children():
        out = getattr(mod, "out_features", None) or getattr(mod, "out_channels", None)
        if out == vocab:
            return name
    return None


def speech_encoder(model: Any) -> Any:
    """A CTC model's encoder module (w2v-BERT, wav2vec2, Parakeet); ValueError if none."""
    for name in ("wav2vec2_bert", "wav2vec2", "encoder", "model"):
        enc = getattr(model, name, None)
        if enc is not None:
            return enc
    raise ValueError(f"{type(model).__name__}: no speech encoder module found")


def patch_input_embeddings(model: Any) -> None:
    """The encoder takes features, not token embeddings, so transformers raises on
    get_input_embeddings(); PEFT (saving an adapter after the head changed size) and
    gradient checkpointing (enable_input_require_grads) both ask for it. The encoder's
    first layer with weights (w2v-BERT's feature projection, Parakeet's subsampling) is
    the layer in that place."""
    try:
        if model.get_input_embeddings() is not None:
            return
    except (NotImplementedError, AttributeError):
        pass
    enc = speech_encoder(model)
    first = next((m for _, m in enc.named_children() if any(True for _ in m.parameters())), enc)
    model.get_input_embeddings = lambda: first

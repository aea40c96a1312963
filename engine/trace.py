"""Traced peak memory: two real training steps of the real-size model under fake tensors.

`trace(entry, cfg)` builds the catalog model from its config on the meta device (no weights,
no download), wraps it the way engine.loading does for the method (PEFT LoRA on the targets,
engine.loading.prepare_kbit's dtypes for qlora/lora8: norms fp32, the rest 16-bit), turns every parameter and
buffer into a FakeTensor on a fake CPU device (`torch._subclasses.fake_tensor.FakeTensorMode`:
shapes and dtypes, no data), and runs two optimizer steps (forward with the loss, backward,
AdamW step, zero_grad) with gradient checkpointing and autocast as the HF Trainer would. A
TorchDispatchMode counts the bytes of every live tensor storage (`untyped_storage().nbytes()`,
freed through weakref.finalize) and keeps the peak, split into terms:

  weights       parameters and buffers (the frozen base at its quantised size, see below)
  gradients     .grad of the trainable parameters
  optimizer     optimizer state (AdamW's two fp32 moments)
  activations   everything else created by forward/backward (saved tensors, temporaries)
  logits        tensors created from the LM head / proj_out to the loss, in the forward
  other         optimizer-step temporaries (foreach AdamW works on whole lists at once)

All sizes are GiB (2**30 bytes). The peak is of live tensors only: the CUDA context and the
caching allocator's slack are the separate `overhead` term (engine.estimator.overhead_gib).

Stand-ins (said in the result's `notes`):
  * qlora / lora8: bitsandbytes layers cannot run on fake tensors. The base nn.Linear weights
    stay 16-bit tensors for the computation and are *counted* at NF4 (0.5 B + one fp32 absmax
    per 64-block, double-quantised: ~0.52 B) or int8 (1 B + a fp32 scale per row) size.
  * adamw8bit: the state is two uint8 tensors per parameter (same byte size as
    bitsandbytes' blockwise 8-bit moments), allocated by the stand-in step; no fp32 moments.
  * The batch: synthetic tensors of the shapes the recipe's collator produces (input
    features of the family's mel windows, labels/input ids of the estimator's text length,
    audio placeholder tokens where the LLM takes them); the processors themselves (tokenizer
    files) are not available offline.

Heavy module: torch/transformers/peft. Light callers use `trace_in_subprocess` (runs
`python -P -m engine.trace`) so their process never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from dataclasses import asdict
from typing import Any

from engine.loading import unwrapped

GIB = 1024**3
TERMS = ("weights", "gradients", "optimizer", "activations", "logits", "other")
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64 / 4 + 4 / 256 / 64  # 4 bits + double-quantised absmax (bnb)
INT8_BYTES_PER_PARAM = 1.0  # + one fp32 scale per output row, added per layer below
TRACE_VERSION = 2  # bump when the traced path changes (cache key); 2: kbit embeddings/head 16-bit


# -- the memory counter ----------------------------------------------------------------------
class _Counter:
    """Live storage bytes, with a tag per storage and the tagged split at the peak."""

    def __init__(self) -> None:
        self.live: dict[int, list] = {}  # storage key -> [serial, nbytes, tag]
        self.total = 0
        self.peak = 0
        self.peak_items: dict[int, tuple[int, str]] = {}  # serial -> (nbytes, tag) at the peak
        self.serial = 0
        self.tag = "weights"
        self.discount: dict[int, int] = {}  # serial -> bytes not held on a GPU (quantised stand-ins)

    def add(self, t) -> None:
        try:
            st = t.untyped_storage()
        except Exception:  # noqa: BLE001 - sparse/opaque tensors: nothing to count
            return
        key = st._cdata
        if key in self.live:
            return
        self.serial += 1
        n = int(st.nbytes())
        self.live[key] = [self.serial, n, self.tag]
        self.total += n
        weakref.finalize(st, self._free, key, self.serial)
        self._check_peak()

    def _free(self, key: int, serial: int) -> None:
        item = self.live.get(key)
        if item is not None and item[0] == serial:
            del self.live[key]
            self.total -= item[1] - self.discount.get(serial, 0)

    def held(self, t) -> int | None:
        item = self.live.get(t.untyped_storage()._cdata)
        return item[0] if item else None

    def set_discount(self, t, bytes_off: int) -> None:
        """Count tensor t as `nbytes - bytes_off` (a quantised stand-in)."""
        item = self.live.get(t.untyped_storage()._cdata)
        if item is None:
            return
        old = self.discount.get(item[0], 0)
        self.discount[item[0]] = bytes_off
        self.total -= bytes_off - old

    def _check_peak(self) -> None:
        if self.total > getattr(self, "phase_peak", 0):
            self.phase_peak = self.total
        if self.total > self.peak:
            self.peak = self.total
            # a copy only when the peak grew by > 0.2%: the split is then within 0.2% of exact
            if self.total > getattr(self, "_snap_at", 0) * 1.002:
                self._snap_at = self.total
                self.peak_items = {s: (n - self.discount.get(s, 0), tag) for s, n, tag in self.live.values()}

    def restart_peak(self) -> None:
        """Forget the peak so far (the model's construction): the peak starts at what is live now."""
        self.peak = self.phase_peak = self.total
        self._snap_at = 0
        self.peak_items = {s: (n - self.discount.get(s, 0), tag) for s, n, tag in self.live.values()}

    def mark(self) -> None:
        """Start a new phase: peak_since_mark() reports the highest total from here."""
        self.phase_peak = self.total

    def peak_since_mark(self) -> int:
        return getattr(self, "phase_peak", self.total)

    def split(self, grads: set[int], optim: set[int]) -> dict[str, float]:
        out = dict.fromkeys(TERMS, 0.0)
        for serial, (n, tag) in self.peak_items.items():
            term = "gradients" if serial in grads else "optimizer" if serial in optim else tag
            out[term] += n
        return out


def _mode(counter: _Counter):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Tracking(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    counter.add(t)
            return out

    return Tracking()


# -- model -----------------------------------------------------------------------------------
def _fakeify(model, dtype_of) -> None:
    """Replace every meta parameter/buffer with an empty (fake, under FakeTensorMode) CPU
    tensor of the dtype `dtype_of(name, tensor)` says."""
    import torch

    for mod_name, mod in model.named_modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            full = f"{mod_name}.{name}" if mod_name else name
            new = torch.empty(p.shape, dtype=dtype_of(full, p), device="cpu")
            mod._parameters[name] = torch.nn.Parameter(new, requires_grad=p.requires_grad)
        for name, b in list(mod._buffers.items()):
            if b is None:
                continue
            dt = b.dtype if not b.dtype.is_floating_point else torch.float32
            mod._buffers[name] = torch.zeros(b.shape, dtype=dt, device="cpu")
    # tied weights: re-tie after replacement (the replacement broke the sharing)
    if hasattr(model, "tie_weights"):
        try:
            model.tie_weights()
        except Exception:  # noqa: BLE001 - models without tied weights
            pass


def _nbytes(tensors) -> int:
    """Bytes of distinct storages."""
    seen, n = set(), 0
    for t in tensors:
        st = t.untyped_storage()
        if st._cdata not in seen:
            seen.add(st._cdata)
            n += st.nbytes()
    return n


def _lora_targets(entry: dict, cfg: dict) -> list[str]:
    return list(cfg.get("lora_targets") or entry.get("lora_targets") or ["q_proj", "v_proj"])


def _build(entry: dict, cfg: dict, notes: list[str]):
    """The wrapped model on meta, the names of the quantised base Linear weights (name ->
    method) and of the parameters of normalisation layers (engine.loading.is_norm)."""
    import torch
    import torch.nn as nn

    from engine.config import lora_defaults
    from engine.params import build_meta

    model, _ = build_meta(entry)
    model.config.use_cache = False
    # attention "math" (no fused kernel, e.g. RDNA3): eager attention keeps the s^2 matrix;
    # "sdpa": fused attention, which does not
    impl = "eager" if cfg.get("attention", "math") == "math" else "sdpa"
    for c in [model.config, *[getattr(model.config, k) for k in ("audio_config", "text_config", "encoder_config")
                               if getattr(model.config, k, None) is not None]]:
        c._attn_implementation = impl
    method = cfg["method"]
    quant: dict[str, str] = {}
    from engine.loading import is_norm

    skip, save = _recipe_layout(entry, model)

    norms = {f"{n}.{p}" if n else p for n, mod in model.named_modules() if is_norm(n, mod)
             for p, _ in mod.named_parameters(recurse=False)}
    if method in ("qlora", "lora8"):
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and mod is not out_emb and not _skipped(name, skip):
                quant[name + ".weight"] = method
        notes.append(f"{'NF4' if method == 'qlora' else 'int8'} base weights: 16-bit stand-ins counted at the "
                     f"quantised size ({len(quant)} nn.Linear layers)")
    if method != "full":
        from peft import LoraConfig, get_peft_model

        rank = int(cfg.get("lora_rank") or lora_defaults(entry.get("family"))[0])
        alpha = 2 * rank
        with torch.device("meta"):
            model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                                                     target_modules=_lora_targets(entry, cfg), bias="none",
                                                     modules_to_save=save or None))
    if cfg.get("freeze_audio_encoder") and method == "full":
        for name, p in model.named_parameters():
            if "encoder" in name.split(".")[:3] or "audio_tower" in name:
                p.requires_grad_(False)
    return model, quant, norms


def _recipe_layout(entry: dict, model) -> tuple[list[str], list[str]]:
    """What the recipe's loader does to the model beyond engine.loading: (Linear layers kept
    out of bitsandbytes, modules trained fully under LoRA). CTC (engine.recipes.ctc): the head
    over frames is trained fully and never quantised, nor are Linear layers whose input width
    bitsandbytes' CPU 4-bit kernels cannot pack; the encoder's first layer stands in for the
    input embeddings (checkpointing's input grads). Seamless: lm_head and the feature
    projection stay unquantised (engine.recipes.seamless)."""
    kind = recipe_kind(entry)
    if kind in ("ctc", "seq2seq", "seamless"):
        _no_layerdrop(model)
    if kind == "ctc":
        import torch

        from engine.loading import ctc_head_name, patch_input_embeddings

        # SpecAugment's time masks are drawn with numpy from the mask's sum (data-dependent): off.
        # It overwrites a few frames of hidden states in place; no tensor of its own is kept.
        if getattr(model.config, "apply_spec_augment", False):
            model.config.apply_spec_augment = False

        head = ctc_head_name(model) or "lm_head"
        odd = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % 64]
        patch_input_embeddings(model)
        return [head, *odd], [head]
    if kind == "seamless":
        return ["lm_head", "feature_projection.projection"], []
    return [], []


def _no_layerdrop(model) -> None:
    """LayerDrop off (the CTC recipe sets it to 0; the peak of a step is the one where no
    layer is skipped, and the random skip is a data-dependent branch on fake tensors)."""
    confs = [model.config] + [getattr(model.config, k) for k in ("encoder_config", "audio_config", "text_config")
                              if getattr(model.config, k, None) is not None]
    for conf in confs:
        for k, v in list(vars(conf).items()):
            if k.endswith("layerdrop") and isinstance(v, (int, float)) and v:
                setattr(conf, k, 0.0)
    for mod in model.modules():
        if isinstance(getattr(mod, "layerdrop", None), float):
            mod.layerdrop = 0.0


def _skipped(name: str, skip: list[str]) -> bool:
    return any(name == k or name.endswith("." + k) or name.startswith(k + ".") for k in skip)


def _dtypes(cfg: dict, quant: dict[str, str], norms: set[str] = frozenset()):
    """dtype of each parameter as engine.loading loads it: full = fp32 master weights; lora =
    16-bit base + fp32 adapters (PEFT upcasts adapters); qlora/lora8 = quantised Linear base
    (16-bit stand-in, counted at its quantised size), normalisation layers fp32 and everything
    else -- embeddings, LM head, convolutions -- 16-bit (engine.loading.prepare_kbit)."""
    import torch

    mixed = cfg.get("precision", "auto") != "fp32"
    half = (torch.float16 if cfg.get("precision") == "fp16" else torch.bfloat16) if mixed else torch.float32
    method = cfg["method"]

    def dtype_of(name: str, p) -> Any:
        if method == "full" or p.requires_grad:
            return torch.float32
        bare = name.replace("base_model.model.", "").replace(".base_layer", "")
        if method in ("qlora", "lora8"):
            return torch.float32 if bare in norms else half
        return half

    return dtype_of, half, mixed


# -- synthetic batch --------------------------------------------------------------------------
def recipe_kind(entry: dict) -> str | None:
    """How a catalog entry's recipe shapes its batch: whisper | llm (Qwen2-Audio, Voxtral) |
    ctc (engine.recipes.ctc: w2v-BERT, Parakeet-CTC) | seq2seq (engine.recipes.seq2seq:
    Moonshine) | seamless; None: not traced yet."""
    recipe, family = entry.get("recipe"), entry.get("family")
    if recipe == "whisper":
        return "whisper"
    if recipe in AUDIO_TOKENS_PER_CHUNK:
        return "llm"
    if family == "ctc" and recipe in ("ctc", "parakeet_ctc"):
        return "ctc"
    if recipe == "seamless":
        return "seamless"
    if family == "seq2seq" and recipe == "moonshine":
        return "seq2seq"
    return None


# Feature extractor per model type where the checkpoint's preprocessor differs from transformers'
# default mapping (w2v-BERT 2.0 ships SeamlessM4TFeatureExtractor: 80 fbank bins stacked in pairs).
FEATURE_EXTRACTORS = {"wav2vec2-bert": "SeamlessM4TFeatureExtractor"}


def feature_shapes(model_type: str, seconds: float, mel: int | None = None) -> dict[str, tuple]:
    """{name: (shape, dtype name)} of what the model's feature extractor makes of one clip of
    `seconds` (16 kHz), padded batch of one: run for real on silence (outside fake mode, the
    extractors are numpy/torch code), the way the recipe's `_features` calls it. Cached."""
    key = (model_type, round(float(seconds), 3), mel)
    if key not in _FEATURE_CACHE:
        import numpy as np
        import transformers
        from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

        name = FEATURE_EXTRACTORS.get(model_type) or FEATURE_EXTRACTOR_MAPPING_NAMES[model_type]
        cls = getattr(transformers, name)
        fe = cls(feature_size=mel) if mel and name == "ParakeetFeatureExtractor" else cls()
        out = fe([np.zeros(int(16000 * seconds), dtype=np.float32)], sampling_rate=16000, padding=True,
                 return_attention_mask=True, return_tensors="pt")
        _FEATURE_CACHE[key] = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in out.items()}
    return _FEATURE_CACHE[key]


_FEATURE_CACHE: dict[tuple, dict] = {}


def _features(entry: dict, model, b: int, seconds: float, input_dtype) -> dict:
    """The feature tensors of `b` clips of `seconds`, named as the model's forward takes them
    (the recipes' `_features`: input_features_mask -> attention_mask, attention_mask ->
    padding_mask where the model asks for that)."""
    import inspect

    import torch

    conf = unwrapped(model).config
    mel = getattr(getattr(conf, "encoder_config", None), "num_mel_bins", None)
    params = inspect.signature(unwrapped(model).forward).parameters
    out = {}
    for name, (shape, dt) in feature_shapes(conf.model_type, seconds, mel).items():
        dtype = input_dtype if dt.startswith("float") else getattr(torch, dt)
        t = (torch.zeros if dtype.is_floating_point else torch.ones)((b, *shape[1:]), dtype=dtype)
        if name == "input_features_mask" and "attention_mask" in params:
            name = "attention_mask"
        if name == "attention_mask" and name not in params and "padding_mask" in params:
            name = "padding_mask"
        if name in params:
            out[name] = t
    return out


def synthetic_batch(entry: dict, model, cfg: dict, seq: dict, input_dtype) -> dict:
    """Tensors shaped like the recipe collator's output for one batch."""
    import torch

    kind = recipe_kind(entry)
    if kind is None:
        raise NotImplementedError(f"{entry.get('name')}: no synthetic batch for recipe {entry.get('recipe')!r} yet")
    b = int(cfg["batch"])
    recipe = entry.get("recipe")
    text = int(seq["text_tokens"])
    per_example = float(seq.get("seconds_per_example") or min(float(cfg["audio_seconds"]), 30.0))
    if kind == "ctc":  # features + character/token labels (padding -100); the loss is over frames
        batch = _features(entry, model, b, per_example, input_dtype)
        batch["labels"] = torch.ones(b, max(1, int(seq["target_tokens"])), dtype=torch.long)
        return batch
    if kind in ("seq2seq", "seamless"):  # features + decoder ids (start + prompt + target) + labels
        batch = _features(entry, model, b, per_example, input_dtype)
        width = max(2, text)
        batch["decoder_input_ids"] = torch.ones(b, width, dtype=torch.long)
        batch["labels"] = torch.ones(b, width, dtype=torch.long)
        return batch
    conf = model.config
    mel = getattr(conf, "num_mel_bins", None) or getattr(getattr(conf, "audio_config", None), "num_mel_bins", 128)
    chunks = int(seq["encoder_chunks"])
    frames = 3000  # 30 s of 10 ms mel frames (the encoder's 1500 after its stride-2 conv)
    if recipe == "whisper" or entry.get("family") == "seq2seq" and recipe in ("whisper",):
        n = b * chunks
        return {"input_features": torch.zeros(n, mel, frames, dtype=input_dtype),
                "labels": torch.zeros(n, max(1, text), dtype=torch.long)}
    if recipe in AUDIO_TOKENS_PER_CHUNK:
        n_audio = AUDIO_TOKENS_PER_CHUNK[recipe] * chunks
        labels = torch.full((b, text), -100, dtype=torch.long)
        labels[:, text - int(seq["target_tokens"]) - 1:] = 0
        return {"text_ids": torch.zeros(b, text - n_audio, dtype=torch.long), "labels": labels,
                "input_features": torch.zeros(b * chunks, mel, frames, dtype=input_dtype)}
    raise NotImplementedError(f"{entry.get('name')}: no synthetic batch for recipe {recipe!r} yet")


# LLM audio tokens per 30 s window (the processors' placeholder counts): Qwen2-Audio and Audio
# Flamingo 3 pool the Whisper-style tower's 1500 frames to 750; Voxtral and GLM-ASR group 4
# frames into audio_config.intermediate_size before the projector (375).
AUDIO_TOKENS_PER_CHUNK = {"qwen2_audio": 750, "voxtral": 375, "glmasr": 375, "audioflamingo3": 750}
MERGE_TO_INTERMEDIATE = ("voxtral", "glmasr")




def forward_loss(entry: dict, model, batch: dict):
    """The training loss as the recipe's model computes it. Audio LLMs: the model's own
    pieces (audio tower, projector, LLM, head, loss function) in the model's order; the
    placeholder merge (masked_scatter on token ids, data-dependent, not traceable on fake
    tensors) is the equivalent concatenation of audio and text embeddings."""
    import inspect

    import torch

    if recipe_kind(entry) == "ctc":
        return _ctc_loss(model, batch)
    if entry.get("recipe") not in AUDIO_TOKENS_PER_CHUNK:
        return model(**batch).loss
    top = unwrapped(model)
    inner = top.model
    b = batch["labels"].shape[0]
    feats = batch["input_features"]
    extra = {}
    if "input_features_mask" in inspect.signature(inner.audio_tower.forward).parameters:  # AF3's tower
        extra["input_features_mask"] = torch.ones(feats.shape[0], feats.shape[-1], dtype=torch.long)
    audio = inner.audio_tower(feats, **extra).last_hidden_state
    if entry.get("recipe") in MERGE_TO_INTERMEDIATE:
        audio = audio.reshape(-1, top.config.audio_config.intermediate_size)
    audio = inner.multi_modal_projector(audio)
    text = inner.get_input_embeddings()(batch["text_ids"])
    embeds = torch.cat([audio.reshape(b, -1, text.shape[-1]).to(text.dtype), text], dim=1)
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                  use_cache=False).last_hidden_state
    logits = top.lm_head(hidden)
    return top.loss_function(logits=logits, labels=batch["labels"], vocab_size=top.config.text_config.vocab_size)


def _ctc_loss(model, batch: dict):
    """The CTC models' own loss path (Wav2Vec2BertForCTC / ParakeetForCTC.forward with
    labels): the model's logits over frames, log_softmax in fp32, then the CTC loss. aten's
    _ctc_loss has no fake-tensor implementation (its output shape is declared data-dependent),
    so it is stood in by an autograd function of the same bytes: forward keeps the fp32 alpha
    table (batch, frames, 2 x target + 1) for backward, backward makes the beta table and the
    fp32 gradient of the log-probabilities (the CPU/CUDA kernels' allocations)."""
    import torch

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    from torch._subclasses.fake_tensor import is_fake

    if not is_fake(log_probs):  # real tensors (train_steps_on_device): the real kernel
        conf = unwrapped(model).config
        blank = getattr(conf, "blank_token_id", None)
        return torch.nn.functional.ctc_loss(
            log_probs, labels, (int(log_probs.shape[0]),) * int(labels.shape[0]),
            (int(labels.shape[1]),) * int(labels.shape[0]), blank=int(conf.pad_token_id if blank is None else blank),
            reduction=getattr(conf, "ctc_loss_reduction", "mean"), zero_infinity=True)
    return _CTC.apply(log_probs, int(labels.shape[1]))


def _ctc_function():
    import torch

    class CTCStandIn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, log_probs, target_len: int):
            t, b, _ = log_probs.shape
            alpha = log_probs.new_empty((b, t, 2 * target_len + 1))
            ctx.save_for_backward(log_probs, alpha)
            return log_probs.new_zeros(())

        @staticmethod
        def backward(ctx, grad):
            log_probs, alpha = ctx.saved_tensors
            beta = torch.empty_like(alpha)  # noqa: F841 - the kernel's beta table, live while the gradient is made
            return torch.empty_like(log_probs), None

    return CTCStandIn


class _LazyCTC:
    fn = None

    def apply(self, *args):
        if _LazyCTC.fn is None:
            _LazyCTC.fn = _ctc_function()
        return _LazyCTC.fn.apply(*args)


_CTC = _LazyCTC()


def _text_len_for(entry: dict, seq: dict) -> dict:
    """The LLM sequence must hold exactly the audio placeholder count the model computes."""
    recipe = entry.get("recipe")
    if recipe in AUDIO_TOKENS_PER_CHUNK:
        from engine.estimator import PROMPT_TOKENS

        per_chunk = AUDIO_TOKENS_PER_CHUNK[recipe]
        seq = dict(seq, text_tokens=per_chunk * seq["encoder_chunks"] + PROMPT_TOKENS + seq["target_tokens"])
    return seq


# -- the trace ---------------------------------------------------------------------------------

def _train_mode(model, cfg: dict, input_grads: bool = True) -> None:
    """Training mode as the driver sets it (engine/training.py): non-reentrant gradient
    checkpointing when asked, input grads for adapters under checkpointing (`input_grads`;
    off for CTC, whose stand-in input layer returns a tuple: non-reentrant checkpointing needs
    none, and neither peft nor the Trainer asks for them there)."""
    if cfg["gradient_checkpointing"]:
        from engine import loading

        if loading.whole_model_checkpointing(model):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:  # as the driver does for classes without it (Granite Speech): the submodules
            loading.enable_checkpointing(model)
        if input_grads and cfg["method"] != "full" and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()


def trace(entry: dict, cfg: dict, steps: int = 2) -> dict:
    """Peak live-tensor GiB of `steps` training steps, split into TERMS (see module doc).
    `entry`: a catalog entry dict (engine.catalog.ModelEntry.to_dict()); `cfg`: an
    engine.estimator.FitConfig as a dict. Raises NotImplementedError for families without a
    synthetic batch, engine.params.NotBuildable when transformers cannot build the model."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from engine.catalog import ModelEntry
    from engine.estimator import FitConfig, sequence_lengths

    t0 = time.monotonic()
    fc = FitConfig(**{k: v for k, v in cfg.items() if k in FitConfig.__dataclass_fields__})
    fc.validate()
    cfg = asdict(fc)
    e = ModelEntry(**{k: v for k, v in entry.items() if k in ModelEntry.__dataclass_fields__})
    seq = _text_len_for(entry, sequence_lengths(e, fc))
    notes: list[str] = []
    model, quant, norms = _build(entry, cfg, notes)
    dtype_of, half, mixed = _dtypes(cfg, quant, norms)
    if recipe_kind(entry) in ("ctc", "seq2seq", "seamless"):  # feature shapes: the extractor runs for real
        feature_shapes(unwrapped(model).config.model_type, seq["seconds_per_example"],
                       getattr(getattr(unwrapped(model).config, "encoder_config", None), "num_mel_bins", None))
    counter = _Counter()
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    counter.mark()
    with fake, _mode(counter):
        _fakeify(model, dtype_of)
        # quantised stand-ins: count at the quantised size
        for name, p in model.named_parameters():
            bare = name.replace("base_model.model.", "").replace(".base_layer", "")
            if bare in quant:
                n = p.numel()
                q = (NF4_BYTES_PER_PARAM * n) if quant[bare] == "qlora" else (INT8_BYTES_PER_PARAM * n + 4 * p.shape[0])
                counter.set_discount(p, int(p.untyped_storage().nbytes() - q))
        counter.restart_peak()  # building the stand-ins briefly held them at 16-bit size
        _train_mode(model, cfg, input_grads=recipe_kind(entry) != "ctc")
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = None
        if cfg["optimizer"] == "adamw":
            opt = torch.optim.AdamW(trainable, lr=1e-5, foreach=True)  # HF adamw_torch on CUDA: foreach
        elif cfg["optimizer"] == "adafactor":
            from transformers.optimization import Adafactor

            opt = Adafactor(trainable, lr=1e-5, relative_step=False, scale_parameter=False)
        else:
            notes.append("adamw8bit: state stood in by two uint8 tensors per parameter (bitsandbytes' size)")
        state8: list = []
        grads: set = set()
        optim: set = set()
        phases: dict[str, float] = {}
        input_dtype = half if (cfg["method"] != "full" and mixed) else torch.float32
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None and recipe_kind(entry) == "ctc":  # the classifier over frames
            from engine.loading import ctc_head_name

            head = getattr(unwrapped(model), ctc_head_name(unwrapped(model)) or "lm_head", None)

        def to_logits(*_a):
            counter.tag = "logits"

        if head is not None:
            head.register_forward_pre_hook(to_logits)
        ac = torch.autocast("cpu", dtype=half) if mixed else torch.autocast("cpu", enabled=False)
        for _ in range(steps):
            batch = synthetic_batch(entry, model, cfg, seq, input_dtype)
            counter.tag = "activations"
            with ac:
                loss = forward_loss(entry, model, batch)
            counter.tag = "activations"
            loss.backward()
            phases["backward"] = max(phases.get("backward", 0), counter.peak_since_mark())
            counter.mark()
            counter.tag = "other"
            if opt is not None:
                opt.step()
            elif not state8:
                counter.tag = "optimizer"
                state8 = [torch.empty(p.shape, dtype=torch.uint8) for p in trainable for _ in range(2)]
            grads |= {counter.held(p.grad) for p in trainable if p.grad is not None}
            if opt is not None:
                optim |= {counter.held(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v)}
            else:
                optim |= {counter.held(t) for t in state8}
            held = {"gradients": _nbytes(p.grad for p in trainable if p.grad is not None),
                    "optimizer": _nbytes(v for st in (opt.state.values() if opt is not None else [])
                                         for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
                    + _nbytes(state8),
                    "weights": _nbytes(model.parameters()) - sum(counter.discount.values())}
            (opt.zero_grad(set_to_none=True) if opt is not None else
             [setattr(p, "grad", None) for p in trainable])
            del loss, batch
            phases["step"] = max(phases.get("step", 0), counter.peak_since_mark())
            counter.mark()
            counter.tag = "activations"
    terms = {k: round(v / GIB, 4) for k, v in counter.split(grads, optim).items()}
    return {"total_gb": round(counter.peak / GIB, 4), "terms": terms, "unit": "GiB",
            "trainable_params": sum(p.numel() for p in trainable), "steps": steps,
            "phases_gb": {k: round(v / GIB, 4) for k, v in phases.items()},
            "state_gb": {k: round(v / GIB, 4) for k, v in held.items()},  # after the last step, exact
            "seq": {k: seq[k] for k in ("encoder_chunks", "text_tokens", "target_tokens")},
            "notes": notes, "seconds": round(time.monotonic() - t0, 1), "torch": torch.__version__,
            "version": TRACE_VERSION}


def train_steps_on_device(entry: dict, cfg: dict, device, steps: int = 3) -> None:
    """The same steps as trace() with real tensors on `device` (CUDA/ROCm): the model built
    from its config at real size, random init (normal, std 0.02; buffers zero), no download.
    For `bench_fit_accuracy.py --gpu`; the caller reads torch.cuda.max_memory_*. qlora/lora8
    need bitsandbytes layers built from weights: refused here (ValueError)."""
    import torch

    from engine.estimator import FitConfig, sequence_lengths
    from engine.catalog import ModelEntry

    fc = FitConfig(**{k: v for k, v in cfg.items() if k in FitConfig.__dataclass_fields__}).validate()
    cfg = asdict(fc)
    if cfg["method"] in ("qlora", "lora8"):
        raise ValueError(f"{cfg['method']}: needs bitsandbytes layers; not measured by this bench")
    e = ModelEntry(**{k: v for k, v in entry.items() if k in ModelEntry.__dataclass_fields__})
    seq = _text_len_for(entry, sequence_lengths(e, fc))
    model, _, _ = _build(entry, cfg, [])
    dtype_of, half, mixed = _dtypes(cfg, {})
    model.to_empty(device=device)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.data = torch.empty(prm.shape, dtype=dtype_of(name, prm), device=device).normal_(0, 0.02)
        for buf in model.buffers():
            if buf.dtype.is_floating_point:
                buf.zero_()
    if hasattr(model, "tie_weights"):
        try:
            model.tie_weights()
        except Exception:  # noqa: BLE001
            pass
    _train_mode(model, cfg, input_grads=recipe_kind(entry) != "ctc")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-6)  # foreach on CUDA, as the HF Trainer's adamw_torch
    input_dtype = half if (cfg["method"] != "full" and mixed) else torch.float32
    for _ in range(steps):
        with torch.device(device):
            batch = synthetic_batch(entry, model, cfg, seq, input_dtype)
        with torch.autocast(device.type if hasattr(device, "type") else "cuda", dtype=half, enabled=mixed):
            loss = forward_loss(entry, model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss, batch
    torch.cuda.synchronize()
    del model, opt


# -- light side: cache and subprocess (no torch in the caller) ----------------------------------
CACHE_DIR = "traces"  # <workspace home>/traces/<key>.json
KEY_OPTIONS = ("method", "batch", "audio_seconds", "precision", "optimizer", "gradient_checkpointing", "lora_rank",
               "lora_targets", "target_tokens", "freeze_audio_encoder", "attention")


def cache_key(entry: dict, cfg: dict) -> str:
    """sha256 over the model's config (data/model_configs/<name>.json, else its catalog
    architecture numbers), the fit options that change memory, and TRACE_VERSION."""
    import hashlib

    from engine.params import config_path

    path = config_path(entry["name"])
    model = path.read_text(encoding="utf-8") if path.is_file() else json.dumps(
        {"arch": entry.get("arch"), "class": entry.get("model_class"), "local": entry.get("local_path")}, sort_keys=True)
    opts = {k: cfg.get(k) for k in KEY_OPTIONS}
    raw = json.dumps({"model": model, "opts": opts, "v": TRACE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def cached(home, entry: dict, cfg: dict) -> dict | None:
    """The cached trace of this (model config, options), or None."""
    from pathlib import Path

    path = Path(home) / CACHE_DIR / f"{cache_key(entry, cfg)}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def store(home, entry: dict, cfg: dict, result: dict) -> None:
    from pathlib import Path

    from engine.runfiles import atomic_write_json

    d = Path(home) / CACHE_DIR
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / f"{cache_key(entry, cfg)}.json", dict(result, model=entry["name"],
                                                                 options={k: cfg.get(k) for k in KEY_OPTIONS}))


class TraceFailed(Exception):
    """The tracing child failed; the message is its one-line reason."""


def trace_in_subprocess(entry: dict, cfg: dict, timeout: float = 600) -> dict:
    """trace() in a child (`python -P -m engine.trace`), so the caller never imports torch.
    Raises TraceFailed with the child's reason, or on timeout."""
    import os
    import subprocess
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        cp = subprocess.run([sys.executable, "-P", "-m", "engine.trace"], input=json.dumps({"entry": entry, "cfg": cfg}),
                            capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        raise TraceFailed(f"tracing took over {timeout:.0f} s") from None
    if cp.returncode != 0:
        lines = [ln for ln in cp.stderr.strip().splitlines() if ln.strip() and "warn" not in ln.lower()]
        raise TraceFailed(lines[-1] if lines else f"tracer exited with {cp.returncode}")
    return json.loads(cp.stdout)


def get_or_trace(home, entry: dict, cfg: dict, timeout: float = 600) -> tuple[dict, bool]:
    """(traced result, from the cache?)."""
    hit = cached(home, entry, cfg)
    if hit is not None:
        return hit, True
    result = trace_in_subprocess(entry, cfg, timeout)
    store(home, entry, cfg, result)
    return result, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.trace", description="Traced peak memory of training steps.")
    ap.add_argument("--request", default="-", help="JSON {entry, cfg} ('-': stdin)")
    args = ap.parse_args(argv)
    raw = sys.stdin.read() if args.request == "-" else open(args.request, encoding="utf-8").read()
    req = json.loads(raw)
    try:
        out = trace(req["entry"], req["cfg"], steps=int(req.get("steps", 2)))
    except Exception as e:  # noqa: BLE001 - one line for the parent to show
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

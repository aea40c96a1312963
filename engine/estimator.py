"""How much GPU memory a fine-tuning run needs, term by term, before anything is loaded.

Pure functions of a catalog entry (architecture numbers + parameter counts) and a FitConfig:
no torch, no GPU. Every term follows ../shared/REFERENCE.md section 2; the formula sits next
to the code that applies it. Sizes are GiB (2**30 bytes) -- the unit of torch.cuda's peaks,
of measured peaks (engine.training), of calibration and of data/gpus.json; every `_gb` name
in voxtune (kept for compatibility: `total_gb`, `weights_gb`, ...) holds GiB.

Sequence lengths come from audio length, per family:
  Whisper-style encoders (Whisper, Qwen2-Audio, Voxtral, Omni): 1500 frames per 30 s chunk;
  conformers (w2v-BERT, SeamlessM4T, granite): ~50 frames/s, treated the same way.
  LLM audio tokens: entry.audio_tokens_per_s (Voxtral 12.5/s, Qwen2-Audio and Omni 25/s).
  long_audio "segment"/"native": a clip longer than the window becomes several <= window
  examples (batch counts those); up to the window a native model takes the whole clip as one
  example of ceil(seconds/30) encoder chunks; "multi_item": the whole clip is one example.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.catalog import METHODS, ModelEntry, UnknownModel, get_model
from engine.config import RunConfig, lora_defaults

GIB = 1024**3  # bytes per GiB: the one memory unit in voxtune
GB = GIB  # the name the `_gb` fields use; the unit is GiB
SPEECH_TOKENS_PER_MIN = 200  # target text ~200 tokens per minute of speech (REFERENCE s.2)
PROMPT_TOKENS = 40  # chat template + instruction around the audio in audio-LLM prompts
SEQ2SEQ_PROMPT_TOKENS = 4  # Whisper's <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
RUNTIME_GB = 1.0  # CUDA/HIP context + allocator pools: 0.3-2 GB, budget ~1 GB (REFERENCE s.2)
FRAGMENTATION = 0.10  # caching-allocator slack on top of everything else (REFERENCE s.2)
DEFAULT_MARGIN = 0.10  # keep 10% of the card free (display, other processes, estimate error)
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Optimizer state bytes per trainable parameter: two fp32 Adam moments = 8; 8-bit AdamW
# moments = 2; Adafactor (factored second moment, HF docs' figure) ~4.
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "adafactor": 4.0}
NF4_BYTES = 0.52  # NF4 with double quantisation: 4 bits + block scales (REFERENCE s.2)
INT8_BYTES = 1.0


@dataclass
class FitConfig:
    method: str = "lora"  # full | lora | qlora | lora8
    precision: str = "auto"  # auto = bf16/fp16 on a GPU
    optimizer: str = "adamw"
    batch: int = 1
    gradient_checkpointing: bool = True
    lora_rank: int | None = None  # None = the family's default (engine.config.lora_defaults)
    lora_targets: list[str] | None = None  # None = the family default (entry.lora_targets)
    audio_seconds: float = 30.0
    target_tokens: int | None = None  # None = from the speech rate
    freeze_audio_encoder: bool = False
    attention: str = "math"  # math: the s^2 attention matrix is stored (RDNA3); sdpa: fused, not stored
    training: bool = True  # False: evaluation/inference only

    def validate(self) -> "FitConfig":
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.attention not in ("math", "sdpa"):
            raise ValueError(f"attention {self.attention!r}: use math or sdpa")
        if self.batch < 1:
            raise ValueError(f"batch {self.batch}: must be at least 1")
        if self.audio_seconds <= 0:
            raise ValueError(f"audio seconds {self.audio_seconds}: must be positive")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"LoRA rank {self.lora_rank}: must be at least 1")
        return self


@dataclass
class Estimate:
    model: str
    method: str
    batch: int
    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    total_gb: float
    trainable_params: int
    details: dict = field(default_factory=dict)  # sequence lengths and the like, for display
    _entry: Any = field(default=None, repr=False, compare=False)
    _cfg: Any = field(default=None, repr=False, compare=False)

    @property
    def breakdown(self) -> dict[str, float]:
        return {k: round(getattr(self, f"{k}_gb"), 3) for k in
                ("weights", "gradients", "optimizer", "activations", "logits", "overhead")}

    @property
    def tensors_gb(self) -> float:
        """Peak GiB of live tensors: the total less the runtime/allocator overhead (what
        engine.trace measures on fake tensors)."""
        return self.total_gb - self.overhead_gb

    @property
    def entry(self) -> ModelEntry:
        return self._entry

    @property
    def config(self) -> FitConfig:
        return self._cfg

    def fits(self, gpu_gb: float, margin: float = DEFAULT_MARGIN) -> bool:
        """True if the total leaves `margin` (a fraction) of the card free."""
        return self.total_gb <= gpu_gb * (1 - margin)

    def verdict(self, gpu_gb: float, margin: float = DEFAULT_MARGIN) -> str:
        """fits | tight (fits, but within 20% of the card) | no."""
        if not self.fits(gpu_gb, margin):
            return "no"
        return "tight" if self.total_gb > 0.8 * gpu_gb else "fits"

    def max_batch(self, gpu_gb: float, margin: float = DEFAULT_MARGIN) -> int:
        return max_batch(self._entry, self._cfg, gpu_gb, margin)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        for k, v in d.items():
            if k.endswith("_gb"):
                d[k] = round(v, 3)
        d["breakdown"] = self.breakdown
        return d


# -- parameter bookkeeping ---------------------------------------------------------------
def _head_dim(t: dict) -> int:
    return t.get("head_dim") or t["hidden"] // t["heads"]


def _analytic_lora_dims(entry: ModelEntry, suffix: str) -> dict[str, int]:
    """sum(in+out) over modules named `suffix`, from architecture numbers alone (used for
    models without a computed count: published-only and unusual checkpoints)."""
    out = {"audio": 0, "text": 0, "other": 0}
    a, t = entry.arch.get("audio", {}), entry.arch.get("text", {})
    if a.get("hidden"):
        h, f, n = a["hidden"], a.get("ffn", 4 * a["hidden"]), a["layers"]
        per = {"q_proj": 2 * h, "k_proj": 2 * h, "v_proj": 2 * h, "out_proj": 2 * h, "fc1": h + f, "fc2": h + f,
               "linear_q": 2 * h, "linear_k": 2 * h, "linear_v": 2 * h, "linear_out": 2 * h}
        out["audio"] = per.get(suffix, 0) * n
    if t.get("hidden"):
        h, f, n = t["hidden"], t.get("ffn", 4 * t["hidden"]), t["layers"]
        hd = _head_dim(t)
        q, kv = t["heads"] * hd, t.get("kv_heads", t["heads"]) * hd
        per = {"q_proj": h + q, "k_proj": h + kv, "v_proj": h + kv, "o_proj": q + h, "out_proj": 2 * h,
               "gate_proj": h + f, "up_proj": h + f, "down_proj": h + f, "fc1": h + f, "fc2": h + f,
               "c_attn": h + 3 * h, "c_proj": 2 * h}
        out["text"] = per.get(suffix, 0) * n
    return out


def _counts(entry: ModelEntry) -> dict:
    p = entry.params
    if not p:
        raise ValueError(f"{entry.name}: no parameter counts; run `python -m engine.params --write data/param_counts.json`")
    return p


def _quantizable(entry: ModelEntry) -> int:
    """Params in nn.Linear layers (what bitsandbytes converts; embeddings, norms, convs and
    lm_head stay 16-bit). Published-only entries: total minus embeddings and head."""
    p = _counts(entry)
    if p.get("quantizable") is not None:
        return int(p["quantizable"])
    t = entry.arch.get("text", {})
    emb = t.get("vocab", 0) * t.get("hidden", 0) * (1 if t.get("tie_embeddings") else 2)
    return max(0, int(p["total"]) - emb)


def lora_params(entry: ModelEntry, cfg: FitConfig) -> int:
    """LoRA adds r x (in + out) per targeted Linear (REFERENCE s.2). PEFT matches targets by
    module-name suffix in every part; a frozen audio encoder gets none."""
    total = 0
    for suffix in cfg.lora_targets or entry.lora_targets:
        d = _lora_dims(entry, suffix)
        total += d.get("text", 0) + d.get("other", 0) + (0 if cfg.freeze_audio_encoder else d.get("audio", 0))
    # CTC: the head (whatever a family names it: everything outside the encoder) is trained in full
    extra = int(_counts(entry)["decoder"]) + int(_counts(entry)["other"] or 0) if entry.family == "ctc" else 0
    return rank_of(entry, cfg) * total + extra


def _lora_dims(entry: ModelEntry, suffix: str) -> dict[str, int]:
    dims = _counts(entry).get("lora_dims") or {}
    return dims.get(suffix) or _analytic_lora_dims(entry, suffix)


def _lora_in_audio(entry: ModelEntry, cfg: FitConfig) -> bool:
    """Do the LoRA targets match modules inside the audio encoder (then its activations
    must be kept for the backward pass)?"""
    return any(_lora_dims(entry, t).get("audio", 0) for t in (cfg.lora_targets or entry.lora_targets))


def rank_of(entry: ModelEntry, cfg: FitConfig) -> int:
    """The LoRA rank r the estimate assumes: the config's, else what `queue add` would use."""
    return int(cfg.lora_rank) if cfg.lora_rank else lora_defaults(entry.family)[0]


def trainable_params(entry: ModelEntry, cfg: FitConfig) -> int:
    p = _counts(entry)
    if cfg.method == "full":
        return int(p["total"]) - (int(p["audio_encoder"]) if cfg.freeze_audio_encoder else 0)
    return lora_params(entry, cfg)


# -- sequence lengths ----------------------------------------------------------------------
def sequence_lengths(entry: ModelEntry, cfg: FitConfig) -> dict:
    """Per example: encoder chunks x frames, and the text (decoder / LM) length."""
    window = float(entry.window_s)
    seconds = float(cfg.audio_seconds)
    if entry.long_audio == "multi_item":
        per_example = seconds  # the whole clip as several 30 s audio items in one prompt
        examples_per_clip = 1
    else:  # segment, or native up to the window (a longer clip is segmented, never truncated)
        per_example = min(seconds, window)
        examples_per_clip = math.ceil(seconds / window)
    frames_30 = entry.arch.get("audio", {}).get("frames_per_30s", 1500)
    chunks = max(1, math.ceil(per_example / 30.0))
    target = cfg.target_tokens if cfg.target_tokens is not None else math.ceil(SPEECH_TOKENS_PER_MIN * per_example / 60)
    text = entry.arch.get("text", {})
    if entry.family == "ctc":
        text_len = 0
    elif entry.family in ("seq2seq", "speech-to-text"):
        cap = text.get("max_target_tokens", 448)
        text_len = min(cap, SEQ2SEQ_PROMPT_TOKENS + target)
    else:  # audio LLM: audio tokens + prompt + target in one sequence
        text_len = math.ceil(entry.audio_tokens_per_s * per_example) + PROMPT_TOKENS + target
    # Each 30 s chunk is encoded on its own (Whisper-style encoders); a partial last chunk is
    # padded to the full 1500 frames.
    return {"seconds_per_example": per_example, "examples_per_clip": examples_per_clip,
            "encoder_chunks": chunks, "encoder_frames": frames_30, "text_tokens": text_len,
            "target_tokens": target}


# Activation coefficients, fit to traced peaks (engine.trace: real-size training steps on fake
# tensors; tests/benchmarks/bench_fit_accuracy.py prints the check). Bytes stored for the
# backward pass per token and per unit of width, one layer, 16-bit compute (x2 in fp32):
HIDDEN_BYTES_LORA = 12  # frozen 16-bit base: LN in/out, q/k/v, attention out, o_proj in, residual
HIDDEN_BYTES_FULL = 25  # fp32 master weights under autocast: LN outputs and residual stream in fp32
FFN_BYTES = {False: 4, True: 8}  # per ffn unit: GELU MLP (fc1 out, act out); gated (gate, up, act, product)
# Eager ("math") attention, bytes per a*s*s_k element. Whisper-style layers take the softmax in
# the compute dtype; HF's LLM layers (Llama, Qwen2) in fp32, then cast back (fp32 + 16-bit copy).
ATTN_STORED_BYTES = {False: 2, True: 6}  # kept per layer without checkpointing: {whisper-style, LLM}
ATTN_PEAK_BYTES = {False: 4, True: 8.5}  # while one layer is recomputed and back-propagated
RESIDUAL_BYTES = {True: 4, False: 2}  # a checkpointed layer keeps its input: fp32 (full) or 16-bit
# Per s*V element while the loss back-propagates (16-bit logits, fp32 upcast, their gradients);
# qlora/lora8 keep the LM head 16-bit (engine.loading.prepare_kbit), so they are "lora" here.
LOGIT_BYTES = {"full": 12, "lora": 12}
LORA_LOGITS_KEPT = {"lora": 4}  # per s*V element still live while the layers back-propagate
FOREACH_TEMP_BYTES = {"adamw": 4.0, "adamw8bit": 0.0, "adafactor": 4.0}  # optimizer-step temporaries / param
FRONTEND_FRAMES = 10500  # Whisper-style conv front end per 30 s: conv1+GELU at 3000 frames, conv2+GELU+pos at 1500


# Encoder attention layouts other than Whisper's (transformers' modeling code, by recipe):
#  relative_key -- Shaw relative positions (w2v-BERT, SeamlessM4T v2's speech encoder,
#    position_embeddings_type="relative_key"): each layer looks up a distance embedding of
#    s x s x head_dim (batch-independent) and adds a second a*s*s score tensor (einsum of the
#    queries with it), +REL_KEY_SCORE_BYTES per a*s*s element;
#  fp32_softmax -- Moonshine's layers use the LLM attention function (softmax in fp32, cast
#    back), so the LLM bytes per a*s*s element (ATTN_*_BYTES[True]).
ENCODER_ATTENTION = {"ctc": "relative_key", "seamless": "relative_key", "moonshine": "fp32_softmax"}
REL_KEY_SCORE_BYTES = 2
# Convolutional front ends that are not Whisper's (bytes per example of 30 s, 16-bit):
#  Parakeet's 8x subsampling (3 Conv2d of 256 channels over 100 fps x 80 mel): its first conv
#  and ReLU outputs (256 x 1501 x 40 each) are live together in the forward pass, a transient
#  that is the peak at short audio; with a frozen stem (LoRA) nothing of it is kept.
#  Moonshine's stem (Conv1d k127 s64 -> tanh -> GroupNorm (fp32) at 7500 frames, then 2x h at
#  2500 and h at 1250 frames): 42500 h-wide frames of 2 B, as Whisper's FRONTEND_FRAMES.
STEM_TRANSIENT_BYTES = {"parakeet_ctc": 2 * 256 * 1501 * 40 * 2}
FRONTEND_FRAMES_BY_RECIPE = {"moonshine": 42500}


def _layer_activation_bytes(s: float, b: float, h: int, a: int, ffn: int, attention: str, *, full: bool,
                            gated: bool, cross_s: float = 0, lora_in: float = 0, peak: bool = False,
                            style: str | None = None, head_dim: int = 64) -> float:
    """One transformer layer, 16-bit, no recomputation: s*b*(c_h*h + c_f*ffn) bytes
    (Korthikanti et al. 2022's layout, coefficients fit to traced peaks), + eager attention's
    probabilities (ATTN_*_BYTES x a*s*s*b), + for a decoder layer the cross-attention K/V of the
    encoder output (2 x 2*s_enc*b*h) and its probabilities, + `lora_in` bytes per token: the
    16-bit copies of the inputs PEFT's LoRA layers keep (sum of targeted in_features x 2)."""
    c_h = HIDDEN_BYTES_FULL if full else HIDDEN_BYTES_LORA
    bytes_ = s * b * (c_h * h + FFN_BYTES[gated] * ffn) + s * b * lora_in
    if cross_s:
        bytes_ += 4 * cross_s * b * h
    if attention == "math":
        attn_bytes = (ATTN_PEAK_BYTES if peak else ATTN_STORED_BYTES)[gated or style == "fp32_softmax"]
        bytes_ += attn_bytes * a * s * (s + cross_s) * b
        if style == "relative_key":
            bytes_ += REL_KEY_SCORE_BYTES * a * s * s * b + 2 * s * s * head_dim
    return bytes_


def _stack_activation_bytes(s, b, h, a, layers, cfg: FitConfig, needs_grad: bool, *, ffn: int, full: bool,
                            gated: bool, cross_s: float = 0, lora_in: float = 0, style: str | None = None,
                            head_dim: int = 64) -> float:
    """A stack of layers. With gradient checkpointing each layer keeps only its input
    (RESIDUAL_BYTES*s*b*h) plus one layer recomputed in full; without it, every layer in full.
    A stack that needs no gradient keeps nothing: one layer's forward is transient.
    Returns (bytes kept for the whole backward pass, bytes of the one layer being worked on):
    only one layer of the whole model is recomputed at a time, so callers add the largest
    transient term of all stacks, not their sum."""
    kw = dict(full=full, gated=gated, cross_s=cross_s, lora_in=lora_in, style=style, head_dim=head_dim)
    if not cfg.training or not needs_grad:
        return 0.0, _layer_activation_bytes(s, b, h, a, ffn, cfg.attention, **kw)
    if cfg.gradient_checkpointing:
        one = _layer_activation_bytes(s, b, h, a, ffn, cfg.attention, peak=True, **kw)
        return layers * RESIDUAL_BYTES[full] * s * b * h, one
    return layers * _layer_activation_bytes(s, b, h, a, ffn, cfg.attention, **kw), 0.0


def _lora_input_bytes(entry: ModelEntry, cfg: FitConfig, part: str, layers: int) -> float:
    """Per token and layer: PEFT casts each LoRA layer's input for its fp32 adapter; the
    16-bit copy autocast makes for lora_A is kept, ~2 B x in_features (~ (in+out)/2)."""
    if cfg.method == "full" or not layers:
        return 0.0
    dims = sum(_lora_dims(entry, t).get(part, 0) for t in (cfg.lora_targets or entry.lora_targets))
    return dims / layers  # 2 B x (in+out)/2


# -- the estimate ----------------------------------------------------------------------------
def estimate(entry: ModelEntry, cfg: FitConfig) -> Estimate:
    """Peak GiB of one training step: the larger of two phases, each the sum of its live terms.

    forward/backward: weights + optimizer state + activations + logits (at the start of the
    backward pass, before gradients pile up; full fine-tuning under autocast adds the 16-bit
    weight copies autocast caches, counted in activations);
    optimizer step: weights + gradients + optimizer state + the step's temporaries (PyTorch's
    foreach AdamW, the HF Trainer's default on a GPU, works on whole lists: ~4 B/param,
    counted in activations when that phase peaks).
    The terms shown are those of the phase that peaks (both phases are in details).
    Plus the runtime/allocator overhead (overhead_gib)."""
    cfg.validate()
    p = _counts(entry)
    total_p = int(p["total"])
    mixed = cfg.precision != "fp32"
    w16 = 2.0 if mixed else 4.0  # bytes per weight in the compute dtype
    act_scale = 1.0 if mixed else 2.0  # fp32 activations are twice the 16-bit ones
    trainable = trainable_params(entry, cfg) if cfg.training else 0
    full = cfg.method == "full" and cfg.training
    # fp32 residual stream: fp32 master weights (full). A quantised base (qlora/lora8) keeps
    # its embeddings and head 16-bit (engine.loading.prepare_kbit): activations as for lora.
    wide = full
    regime = "full" if full else "lora"

    # Weights. Full: fp32 master weights (4 B). LoRA: the frozen base in 16-bit (lora), int8
    # (lora8, ~1 B) or NF4 (qlora, ~0.52 B) for nn.Linear only -- the rest (embeddings,
    # lm_head, convolutions) stays 16-bit, norms fp32 (engine.loading.prepare_kbit; norms are
    # a few KiB, left out) -- plus fp32 adapters.
    q = _quantizable(entry)
    if cfg.method == "full":
        weights = (total_p * w16) if not cfg.training else total_p * 4.0
    elif cfg.method == "lora":
        weights = total_p * w16 + trainable * 4
    else:
        per_linear = INT8_BYTES if cfg.method == "lora8" else NF4_BYTES
        weights = q * per_linear + (total_p - q) * w16 + trainable * 4
    # Gradients: fp32, one per trainable parameter (4 B). Optimizer: see OPTIMIZER_BYTES.
    grads = trainable * 4.0
    optim = trainable * OPTIMIZER_BYTES[cfg.optimizer]
    step_temp = trainable * FOREACH_TEMP_BYTES[cfg.optimizer]

    seq = sequence_lengths(entry, cfg)
    b = cfg.batch
    audio, text = entry.arch.get("audio", {}), entry.arch.get("text", {})
    audio_needs_grad = not cfg.freeze_audio_encoder and (cfg.method == "full" or _lora_in_audio(entry, cfg))
    llm = entry.family == "audio-llm"
    acts, transient = 0.0, [0.0]
    enc_b = b * seq["encoder_chunks"]
    style = ENCODER_ATTENTION.get(entry.recipe)
    if audio.get("hidden"):
        h = audio["hidden"]
        kept, one = _stack_activation_bytes(seq["encoder_frames"], enc_b, h, audio["heads"], audio["layers"],
                                        cfg, audio_needs_grad, ffn=audio.get("ffn", 4 * h), full=wide, gated=False,
                                        lora_in=_lora_input_bytes(entry, cfg, "audio", audio["layers"]),
                                        style=style, head_dim=audio.get("head_dim") or h // audio["heads"])
        acts += kept
        transient.append(one)
        frontend = FRONTEND_FRAMES_BY_RECIPE.get(entry.recipe, FRONTEND_FRAMES if audio.get("mel_bins") else 0)
        if frontend and audio_needs_grad and cfg.training:  # conv front end, not checkpointed
            acts += frontend * enc_b * h * (4 if wide else 2)
        transient.append(STEM_TRANSIENT_BYTES.get(entry.recipe, 0) * enc_b)
    if text.get("hidden") and seq["text_tokens"]:
        cross = seq["encoder_frames"] if entry.family in ("seq2seq", "speech-to-text") else 0
        h = text["hidden"]
        kept, one = _stack_activation_bytes(seq["text_tokens"], b, h, text["heads"], text["layers"],
                                            cfg, True, ffn=text.get("ffn", 4 * h), full=wide, gated=llm,
                                            cross_s=cross, lora_in=_lora_input_bytes(entry, cfg, "text", text["layers"]),
                                            style="fp32_softmax" if style == "fp32_softmax" else None)
        acts += kept
        transient.append(one)
        if cross:  # the encoder output every decoder layer cross-attends to
            acts += (4 if wide else 2) * seq["encoder_frames"] * enc_b * h
        elif llm and audio.get("hidden"):  # audio embeddings spliced into the LLM's input
            acts += 2 * seq["text_tokens"] * b * h
    acts = (acts + max(transient)) * act_scale
    if full and mixed:
        acts += 2.0 * total_p  # autocast's cached 16-bit copies of the fp32 weights
    if not cfg.training and text.get("hidden") and seq["text_tokens"]:
        # generation keeps a K/V cache: 2 x layers x tokens x kv_heads x head_dim x 2 B
        kv = text.get("kv_heads", text["heads"]) * _head_dim(text)
        acts += 2 * text["layers"] * seq["text_tokens"] * kv * 2 * b

    # Logits at the peak: LOGIT_BYTES per s*V element (16-bit logits, the loss's fp32 upcast).
    # CTC: logits over encoder frames (small vocabulary). Generation: 16-bit logits only.
    vocab = text.get("vocab", 0)
    s_logit = seq["encoder_frames"] * seq["encoder_chunks"] if entry.family == "ctc" else seq["text_tokens"]
    logits = (LOGIT_BYTES[regime] * act_scale if cfg.training else 2) * s_logit * vocab * b

    # Two moments compete for the forward/backward peak: the loss's backward (logits, their fp32
    # copies and gradients: LOGIT_BYTES per element) and one layer's recomputation + backward
    # (the transient). Full fine-tuning frees the logits before the layers' backward; with a
    # frozen head (LoRA) LORA_LOGITS_KEPT bytes per element stay live through it (traced peaks,
    # bench_fit_accuracy: the 30 s rows peak at the loss, the 300 s rows in a layer).
    transient_now = max(transient) * act_scale
    if cfg.training:
        kept_logits = 0.0 if full else LORA_LOGITS_KEPT[regime] * act_scale * s_logit * vocab * b
        if logits > transient_now + kept_logits:  # the peak is the loss's backward
            acts_at_peak, logits_at_peak = acts - transient_now, logits
        else:  # the peak is inside a layer's backward
            acts_at_peak, logits_at_peak = acts, kept_logits
    else:
        acts_at_peak, logits_at_peak = acts, logits
    fwd_bwd = weights + optim + acts_at_peak + logits_at_peak
    step = weights + grads + optim + step_temp if cfg.training else 0.0
    phases = {"forward_backward_gb": round(fwd_bwd / GB, 3), "optimizer_step_gb": round(step / GB, 3)}
    if step > fwd_bwd:
        shown = dict(grads=grads, acts=step_temp, logits=0.0)
    else:
        shown = dict(grads=0.0, acts=acts_at_peak, logits=logits_at_peak)
    subtotal = max(fwd_bwd, step)
    overhead = overhead_gib(subtotal / GB) * GB
    total = subtotal + overhead
    return Estimate(
        model=entry.name, method=cfg.method, batch=b,
        weights_gb=weights / GB, gradients_gb=shown["grads"] / GB, optimizer_gb=optim / GB,
        activations_gb=shown["acts"] / GB, logits_gb=shown["logits"] / GB,
        overhead_gb=overhead / GB, total_gb=total / GB,
        trainable_params=trainable, details=dict(seq, attention=cfg.attention, precision=cfg.precision,
                                                 optimizer=cfg.optimizer, lora_rank=rank_of(entry, cfg),
                                                 gradient_checkpointing=cfg.gradient_checkpointing,
                                                 phases=phases, peak_phase="optimizer step" if step > fwd_bwd
                                                 else "forward/backward", all_gradients_gb=round(grads / GB, 3),
                                                 activations_fb_gb=round(acts_at_peak / GB, 3),
                                                 logits_fb_gb=round(logits_at_peak / GB, 3),
                                                 step_temporaries_gb=round(step_temp / GB, 3)),
        _entry=entry, _cfg=cfg,
    )


def overhead_gib(tensors_gib: float) -> float:
    """Runtime and allocator overhead on top of a peak of live tensors (GiB): the CUDA/HIP
    context and library workspaces (RUNTIME_GB) plus the caching allocator's slack
    (FRAGMENTATION x tensors). One term, shared by the analytical and the traced figure."""
    return RUNTIME_GB + FRAGMENTATION * tensors_gib


def max_batch(entry: ModelEntry, cfg: FitConfig, gpu_gb: float, margin: float = DEFAULT_MARGIN,
              limit: int = 1024) -> int:
    """Largest batch that fits (0: not even one example). Estimates grow with batch."""
    def ok(n: int) -> bool:
        return estimate(entry, replace(cfg, batch=n)).fits(gpu_gb, margin)

    if not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and ok(hi):
        lo, hi = hi, hi * 2
    if hi > limit:
        return lo
    while hi - lo > 1:  # ok(lo), not ok(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


# -- recommendation --------------------------------------------------------------------------
METHOD_LABEL = {"full": "full fine-tune", "lora": "LoRA", "lora8": "8-bit LoRA", "qlora": "QLoRA"}
RECOMMEND_RANKS = (32, 16, 8)  # LoRA ranks tried, largest first, before a smaller base precision


@dataclass
class Recommendation:
    model: str
    gpu_gb: float
    method: str | None
    batch: int
    lora_rank: int | None
    gradient_checkpointing: bool
    total_gb: float | None
    text: str
    freeze_audio_encoder: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def recommend(entry: ModelEntry, gpu_gb: float, base: FitConfig | None = None,
              margin: float = DEFAULT_MARGIN) -> Recommendation:
    """The least compromised set-up that fits: full fine-tuning if it allows batch >= 4, else
    LoRA with a 16-bit, then 8-bit, then 4-bit base (ranks 32, 16, 8 for each), at the
    largest power-of-two batch <= 16; last, the same LoRA ladder with the audio encoder
    frozen (no encoder activations kept), for models that have a separate one."""
    base = replace(base or FitConfig(), gradient_checkpointing=True, training=True)
    gpu_s = f"{gpu_gb:g} GiB"
    if not entry.trainable:
        return Recommendation(entry.name, gpu_gb, None, 0, None, True, None,
                              f"{entry.name} on {gpu_s}: cannot train here -- {entry.reason}")
    lora = [(m, 1, r) for m in ("lora", "lora8", "qlora") for r in RECOMMEND_RANKS]
    plan = [("full", 4, base.lora_rank, base.freeze_audio_encoder)] + [(*p, base.freeze_audio_encoder) for p in lora]
    if not base.freeze_audio_encoder and entry.family == "audio-llm":
        plan += [(*p, True) for p in lora]
    first = None
    for method, min_batch, rank, freeze in plan:
        if method not in entry.methods:
            continue
        cfg = replace(base, method=method, batch=1, lora_rank=rank, freeze_audio_encoder=freeze)
        if first is None and method == "qlora":
            first = estimate(entry, cfg)  # the smallest set-up without new compromises
        mb = max_batch(entry, cfg, gpu_gb, margin)
        if mb >= min_batch:
            batch = 2 ** int(math.log2(min(mb, 16)))
            est = estimate(entry, replace(cfg, batch=batch))
            rank_used = None if method == "full" else rank
            what = METHOD_LABEL[method] + (f" r={rank_used}" if rank_used else "")
            frozen = ", audio encoder frozen" if freeze and not base.freeze_audio_encoder else ""
            return Recommendation(entry.name, gpu_gb, method, batch, rank_used, True, round(est.total_gb, 2),
                                  f"{entry.name} on {gpu_s}: {what}, batch {batch}{frozen}, checkpointing on "
                                  f"(~{est.total_gb:.1f} GiB)", freeze_audio_encoder=freeze)
    whole = getattr(entry, "long_audio", "segment") != "segment"  # a clip's length is one example's
    clip = f" for {base.audio_seconds:.0f} s clips" if whole and base.audio_seconds else ""
    need = f" (QLoRA at batch 1 needs ~{first.total_gb:.1f} GiB{clip})" if first else ""
    tries, split = [], ""
    freeze = base.freeze_audio_encoder or entry.family == "audio-llm"
    longest = longest_fitting_audio(entry, replace(base, method="qlora", batch=1, lora_rank=RECOMMEND_RANKS[-1],
                                                   freeze_audio_encoder=freeze), gpu_gb, margin) \
        if "qlora" in entry.methods else None
    if longest:
        frozen = ", audio encoder frozen" if freeze and not base.freeze_audio_encoder else ""
        split = (f"; clips up to ~{longest:g} s fit (QLoRA r={RECOMMEND_RANKS[-1]}, batch 1{frozen}): "
                 "split longer recordings")
    if base.attention == "math":
        tries.append("fused attention (--attention sdpa, where `voxtune doctor` finds it)")
    tries.append("a bigger GPU")
    return Recommendation(entry.name, gpu_gb, None, 0, None, True, None,
                          f"{entry.name} on {gpu_s}: does not fit{need}{split}; or try " + ", or ".join(tries)
                          if split else f"{entry.name} on {gpu_s}: does not fit{need}; try " + ", or ".join(tries))


def longest_fitting_audio(entry: ModelEntry, cfg: FitConfig, gpu_gb: float,
                          margin: float = DEFAULT_MARGIN) -> float | None:
    """The longest clip (seconds, on a 30 s grid, then 15/10/5 s) below `cfg.audio_seconds`
    that fits `gpu_gb` GiB with `cfg`; None when shorter audio does not help (a family that
    segments long audio already trains on window-long pieces, or even 5 s does not fit)."""
    seconds = float(cfg.audio_seconds or 30.0)
    grid = [s for s in range(int(math.ceil(seconds / 30.0)) * 30 - 30, 0, -30) if s < seconds]
    grid += [s for s in (15, 10, 5) if s < min(seconds, 30.0)]
    if not grid:
        return None
    full = estimate(entry, cfg).total_gb
    for s in grid:
        est = estimate(entry, replace(cfg, audio_seconds=float(s)))
        if est.total_gb >= full:  # shorter audio changes nothing: the family segments it
            return None
        if est.fits(gpu_gb, margin):
            return float(s)
    return None


# -- runs ----------------------------------------------------------------------------------
def _max_duration(manifest: str | None) -> float | None:
    """Longest clip in a dataset manifest (JSON Lines with a `duration` per row)."""
    if not manifest:
        return None
    longest = None
    try:
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    d = float(json.loads(line).get("duration") or 0)
                except (ValueError, json.JSONDecodeError, AttributeError):
                    continue
                longest = d if longest is None else max(longest, d)
    except OSError:
        return None
    return longest or None


def fit_config_from_run(config: RunConfig | dict, entry: ModelEntry | None = None) -> FitConfig:
    """The estimator's input from a run's configuration (a RunConfig, or config.json's dict)."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    seconds = config.get("audio_seconds") or _max_duration(config.dataset_manifest) or 30.0
    return FitConfig(
        method=config.method or "full",
        precision=config.precision or "auto",
        optimizer=config.optimizer or "adamw",
        batch=int(config.batch_size or 1),
        gradient_checkpointing=config.gradient_checkpointing is not False,
        lora_rank=int(config.lora_rank) if config.lora_rank else None,
        lora_targets=config.lora_targets or None,
        audio_seconds=float(seconds),
        freeze_audio_encoder=bool(config.freeze_audio_encoder),
        attention=config.get("attention") or "math",
        training=not config.eval_only,
    )


def estimate_for_run(config: RunConfig | dict) -> Estimate | None:
    """The estimate for a run's resolved config; None if the model or its counts are unknown."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    entry = None
    for ref in (config.model_ref, config.model):
        if not ref:
            continue
        try:
            entry = get_model(ref)
            break
        except UnknownModel:
            continue
    if entry is None or not entry.params:
        return None
    try:
        return estimate(entry, fit_config_from_run(config, entry))
    except ValueError:
        return None


def traced_gb(entry: ModelEntry, cfg: FitConfig, home) -> float | None:
    """The traced peak (engine.trace, cached in the workspace by `voxtune fit --trace`) plus
    the overhead term, GiB; None when this configuration has not been traced. Light: reads
    one small JSON file."""
    if not home:
        return None
    from engine import trace

    try:
        hit = trace.cached(home, entry.to_dict(), asdict(cfg))
    except Exception:  # noqa: BLE001 - a broken cache file is as good as none
        return None
    if not hit or hit.get("total_gb") is None:
        return None
    return round(float(hit["total_gb"]) + overhead_gib(float(hit["total_gb"])), 3)


def traced_for_run(config: RunConfig | dict, home=None) -> float | None:
    """traced_gb for a run's resolved config (home: its workspace, else config.workspace)."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    for ref in (config.model_ref, config.model):
        try:
            entry = get_model(ref) if ref else None
        except UnknownModel:
            continue
        if entry is not None:
            try:
                return traced_gb(entry, fit_config_from_run(config, entry), home or config.workspace)
            except ValueError:
                return None
    return None


def estimate_all(gpu_gb: float, cfg: FitConfig | None = None, entries: list[ModelEntry] | None = None,
                 margin: float = DEFAULT_MARGIN) -> list[dict]:
    """Every catalog model x every method: what `voxtune models` and the Models screen show."""
    from engine.catalog import load_catalog

    cfg = cfg or FitConfig()
    rows = []
    for e in entries if entries is not None else load_catalog():
        methods = {}
        for m in METHODS:
            if not e.params:
                methods[m] = None
                continue
            c = replace(cfg, method=m)
            est = estimate(e, c)
            methods[m] = {"total_gb": round(est.total_gb, 3), "fits": est.fits(gpu_gb, margin),
                          "verdict": est.verdict(gpu_gb, margin), "max_batch": max_batch(e, c, gpu_gb, margin),
                          "supported": m in e.methods}
        rows.append({"entry": e, "methods": methods})
    return rows


# -- one run on several devices (DDP / FSDP) ----------------------------------------------------
STRATEGIES = ("ddp", "fsdp")


def multi_device_terms(est: Estimate) -> dict:
    """Per-device memory of `est`'s run spread over several cards, as terms that any device
    count applies to (the batch stays per device, so activations and logits do not shrink):

    ddp_gb           every card holds the whole model state and its own activations, plus
                     DDP's gradient buckets: a second copy of the gradients (PyTorch DDP docs,
                     `gradient_as_bucket_view=False`, the default the HF Trainer keeps).
    fsdp_fixed_gb    FSDP FULL_SHARD (ZeRO-3): what each card keeps whole -- activations, logits,
                     the runtime, and the weights of one FSDP unit (one transformer layer)
                     gathered twice (the current unit and the prefetched next one).
    fsdp_sharded_gb  weights + gradients + optimizer state, divided among the cards.

    Per device with n cards: ddp_gb, or fsdp_fixed_gb + fsdp_sharded_gb / n (`per_device_gb`).
    fsdp is None for QLoRA / 8-bit bases (quantised weights are not sharded here).
    Same units as the estimate (GiB)."""
    frag = 1 + FRAGMENTATION
    runtime = RUNTIME_GB
    subtotal = est.tensors_gb
    grads = est.details.get("all_gradients_gb", est.gradients_gb)  # all of them, whichever phase peaks
    out = {"ddp_gb": round((subtotal + grads) * frag + runtime, 3),
           "fsdp_fixed_gb": None, "fsdp_sharded_gb": None}
    if est.method in ("full", "lora"):
        arch = est.entry.arch if est.entry is not None else {}
        layers = max(1, sum(int(arch.get(part, {}).get("layers") or 0) for part in ("audio", "text")))
        unit = 2 * est.weights_gb / layers
        acts = est.details.get("activations_fb_gb", est.activations_gb) + est.details.get("logits_fb_gb", est.logits_gb)
        out["fsdp_fixed_gb"] = round((acts + unit) * frag + runtime, 3)
        out["fsdp_sharded_gb"] = round((est.weights_gb + grads + est.optimizer_gb) * frag, 3)
    return out


def per_device_gb(terms: dict | None, devices: int, strategy: str, single_gb: float | None = None) -> float | None:
    """Peak GiB on each card for `devices` cards under `strategy` (see multi_device_terms).
    One device: `single_gb` (the plain estimate). None when the terms do not say."""
    if devices <= 1:
        return single_gb
    if not terms:
        return single_gb
    if strategy == "fsdp":
        if terms.get("fsdp_fixed_gb") is None:
            return None
        return terms["fsdp_fixed_gb"] + terms["fsdp_sharded_gb"] / devices
    return terms.get("ddp_gb", single_gb)


def choose_strategy(terms: dict | None, devices: int, device_gb: float | None, single_gb: float | None = None,
                    margin: float = DEFAULT_MARGIN) -> tuple[str, float | None]:
    """DDP when the run fits one card (it is simpler and faster); FSDP when it does not but fits
    sharded over `devices` cards; DDP otherwise (the admission then says it cannot fit).
    Returns (strategy, per-device GiB)."""
    ddp = per_device_gb(terms, devices, "ddp", single_gb)
    if devices <= 1 or device_gb is None or ddp is None or ddp <= device_gb * (1 - margin):
        return "ddp", ddp
    fsdp = per_device_gb(terms, devices, "fsdp", single_gb)
    if fsdp is not None and fsdp <= device_gb * (1 - margin):
        return "fsdp", fsdp
    return "ddp", ddp

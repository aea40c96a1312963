"""CTC models through `AutoModelForCTC`: w2v-BERT 2.0 (`Wav2Vec2BertForCTC`), Parakeet CTC
(`ParakeetForCTC`) and any other `model_type` a family below declares (the input names --
`input_features` / `input_values`, `attention_mask` / `padding_mask` -- and the head's name
are read from the model, so e.g. `OmniASRForCTC` needs only a declaration, a catalog entry and
a tiny test). A pretrained speech encoder plus a classifier over frames.

Output is monotonic: CTC emits, per audio frame, one symbol or nothing, in the order heard. It
can drop fillers and stutters but cannot reorder or rewrite (a false start it cannot fix).

Head and alphabet. A checkpoint whose own tokenizer and CTC head can write every training
transcript exactly (decode(encode(text)) == text: case and punctuation included) keeps them
and fine-tunes the head. Otherwise (a bare encoder like w2v-BERT 2.0, or a lower-case
vocabulary like parakeet-ctc's against cased, punctuated targets) the head is replaced by a
new character classifier whose alphabet comes from the user's own clean transcripts:

Vocabulary: characters, case and punctuation KEPT. The target is the cleaned-up text with
its capitals and punctuation, and CTC can only emit symbols it has, so lower-casing or
stripping punctuation here would make `wer` (raw, against the clean reference) unreachable.
The alphabet is the training texts' characters plus ASCII letters, digits and common
punctuation (so an eval clip with an unseen letter still decodes), space as "|", "[PAD]"
(id 0, also the CTC blank) and "[UNK]". It is saved with the run as a
Wav2Vec2CTCTokenizer + SeamlessM4TFeatureExtractor processor (`Wav2Vec2BertProcessor`), so
`from_pretrained` on an exported folder gives back the same alphabet. A checkpoint that
already has a matching CTC tokenizer (a finished run) keeps its alphabet and head.

CTC can delete and copy but not reorder or rewrite: it learns to drop fillers, not to fix
grammar. Decoding is greedy (argmax, merge repeats, drop blanks).

Default LoRA targets: the catalog's (w2v-BERT: `linear_q`, `linear_v`); the head (`lm_head`,
`ctc_head`) is always fully trained (`modules_to_save`) and never quantised, and neither is a
Linear layer whose input width is not a multiple of 64 (bitsandbytes' CPU 4-bit kernels refuse
those; w2v-BERT's 160-wide feature projection is one).

Long audio: windowed. Clips up to `WINDOW_S` are one example; longer ones are cut into
segments with their slice of the clean text by `engine.segment` (see `engine.recipes.windowed`),
and evaluation joins a clip's segment predictions before scoring.
"""

from __future__ import annotations

import json
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engine.loading import ctc_head_name as _head_name, patch_input_embeddings, speech_encoder as _encoder
from engine.recipes.base import Example, Loaded
from engine.recipes.registry import Family, register
from engine.recipes.windowed import WindowedFeatureRecipe

MONOTONIC = "CTC output is monotonic: it can drop fillers but cannot rewrite false starts."
register(Family(key="ctc", kind="ctc", module=__name__, model_types=("wav2vec2-bert", "wav2vec2_bert", "wav2vec2")))
register(Family(key="parakeet_ctc", kind="ctc", module=__name__, model_types=("parakeet_ctc",)))
register(Family(key="parakeet_tdt", kind="ctc", module=__name__, model_types=("parakeet_tdt",), trainable=False,
                reason="TDT (token-and-duration transducer) training is not wired: its loss needs the prediction "
                       "network's inputs and duration targets, which the CTC recipe does not build; estimates only"))

WINDOW_S = 30.0
SAMPLE_RATE = 16000
PAD, UNK, DELIM = "[PAD]", "[UNK]", "|"
# Kept in 16/32-bit under qlora/lora8: the new head (random, trained fully), and the 160->hidden
# feature projection, whose input width is not a multiple of bitsandbytes' 64-wide 4-bit blocks
# (its CPU kernels refuse such layers; it is 0.03% of the weights).
NOT_QUANTIZED = ("lm_head", "feature_projection.projection")
BASE_CHARS = string.ascii_letters + string.digits + ".,?!'\"-:;()"


def build_vocab(texts: Sequence[str]) -> dict[str, int]:
    """Character -> id; deterministic for the same texts (sorted), blank/pad at 0."""
    chars = set(BASE_CHARS)
    for t in texts:
        chars.update(unicodedata.normalize("NFC", t))
    chars.discard(" ")
    for c in list(chars):
        if c.isspace() or unicodedata.category(c).startswith("C"):
            chars.discard(c)  # tabs/newlines/control chars: spaces are "|"
    vocab = {PAD: 0, UNK: 1, DELIM: 2}
    for c in sorted(chars):
        vocab[c] = len(vocab)
    return vocab


def make_tokenizer(vocab: dict[str, int], folder: str | Path):
    from transformers import Wav2Vec2CTCTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.json"
    path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return Wav2Vec2CTCTokenizer(str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=DELIM,
                                bos_token=None, eos_token=None,
                                do_lower_case=False)


# ---- helpers shared by the windowed families (ctc, seamless) -------------------------------

def keep_unquantized(qconfig: Any, names: Sequence[str]) -> None:
    """Layers bitsandbytes must leave alone. Naming any replaces transformers' default skips
    (the output head), so the head is always in `names`."""
    if qconfig is None:
        return
    have = list(getattr(qconfig, "llm_int8_skip_modules", None) or [])
    qconfig.llm_int8_skip_modules = have + [n for n in names if n not in have]


def unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def float_dtype(model: Any):
    """The dtype inputs should have: the first floating-point parameter's (quantised layers hold ints)."""
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def model_device(model: Any):
    return next(model.parameters()).device


def to_model(batch: dict, model: Any) -> dict:
    """Move a collated batch to the model's device; float tensors take the model's dtype."""
    dev, dt = model_device(model), float_dtype(model)
    return {k: (v.to(dev, dtype=dt) if v.is_floating_point() else v.to(dev)) if hasattr(v, "to") else v
            for k, v in batch.items()}


# ---- the recipe --------------------------------------------------------------------------------

def _odd_linears(cls: Any, config: Any) -> list[str]:
    """Linear layers bitsandbytes' 4-bit CPU kernels cannot pack (input width not a multiple of
    64), found on a meta-device copy of the model (no weights)."""
    import torch

    with torch.device("meta"):
        probe = cls(config)
    return [n for n, m in probe.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % 64]


def lossless(tokenizer: Any, texts: Sequence[str]) -> bool:
    """Can this tokenizer write every text exactly (case, punctuation, no unknown symbols)?"""
    unk = getattr(tokenizer, "unk_token_id", None)
    for t in texts:
        t = unicodedata.normalize("NFC", t)
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if (unk is not None and unk in ids) or tokenizer.decode(ids, skip_special_tokens=True).strip() != t.strip():
            return False
    return True


class CTCParts:
    """feature extractor + tokenizer for a CTC model whose own processor class cannot hold a
    character tokenizer; saves both (AutoFeatureExtractor / AutoTokenizer load them back)."""

    def __init__(self, feature_extractor: Any, tokenizer: Any) -> None:
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer

    def save_pretrained(self, out_dir: str) -> None:
        self.feature_extractor.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


@dataclass
class CTCRecipe(WindowedFeatureRecipe):
    key: str = "ctc"
    default_lora_targets: Sequence[str] = ("linear_q", "linear_v")
    modules_to_save: Sequence[str] = ("lm_head",)  # the driver's LoraConfig trains and saves it fully
    long_audio: str = "segment"
    window_s: float = WINDOW_S
    vocab_dir: str | None = None  # a run's folder whose alphabet must be reused (adapter/checkpoint)

    def configure(self, config: dict) -> None:
        """Find the alphabet a LoRA checkpoint was trained with. The loader hands `load` the
        *base* model (the adapter goes on afterwards), and a base w2v-BERT has no alphabet,
        so look where the run keeps it: the model folder itself (an export or checkpoint
        given as the model), else the run's own checkpoints (resume, export --merge,
        transcribe --run). Every checkpoint of a run has the same alphabet. Also: the
        catalog's LoRA targets and window for this model."""
        from engine.recipes.audio_llm import _catalog_lora_targets

        self.default_lora_targets = _catalog_lora_targets(config) or self.default_lora_targets
        self.vocab_dir = None
        ref = config.get("model_ref") or config.get("model")
        candidates = [Path(str(ref))] if ref else []
        if config.get("workspace") and config.get("run_id"):
            ckpts = Path(str(config.get("workspace"))) / "runs" / str(config.get("run_id")) / "checkpoints"
            candidates += sorted(ckpts.glob("checkpoint-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for folder in candidates:
            if (folder / "vocab.json").is_file() or (folder / "voxtune_ctc.json").is_file():
                self.vocab_dir = str(folder)
                return

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        import tempfile

        import transformers
        from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

        config = AutoConfig.from_pretrained(model_ref, trust_remote_code=trust_remote_code)
        cls = getattr(transformers, MODEL_FOR_CTC_MAPPING_NAMES[config.model_type])
        has_head = any("ForCTC" in a for a in (getattr(config, "architectures", None) or []))
        tokenizer, own = None, False
        for folder in (self.vocab_dir, model_ref):  # a run's character alphabet first
            if folder and ((Path(folder) / "voxtune_ctc.json").is_file() or (Path(folder) / "vocab.json").is_file()):
                tokenizer = self._char_tokenizer(folder)
                break
        if tokenizer is None and has_head:  # the checkpoint's own vocabulary, if it can write the targets
            try:
                tok = AutoTokenizer.from_pretrained(model_ref, trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError):
                tok = None
            if tok is not None and (not train_texts or lossless(tok, train_texts)):
                tokenizer, own = tok, True
        new_head = not own and (tokenizer is None or not has_head or getattr(config, "vocab_size", None) != len(tokenizer))
        if tokenizer is None:
            if not train_texts:
                raise ValueError(
                    f"{model_ref} has no CTC head or alphabet yet (a base encoder such as w2v-BERT 2.0; the head "
                    "is built from the training texts), so it cannot transcribe before training. "
                    "Train a run first, then evaluate or transcribe that run's model")
            tokenizer = make_tokenizer(build_vocab(train_texts), tempfile.mkdtemp(prefix="voxtune-ctc-vocab-"))
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_ref, trust_remote_code=trust_remote_code)
        processor = self._processor(config.model_type, feature_extractor, tokenizer)
        overrides: dict[str, Any] = {}
        if not own:  # a character head: [PAD] (id 0) is the CTC blank
            overrides = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                         "blank_token_id": tokenizer.pad_token_id}
        overrides.update(ctc_loss_reduction="mean", ctc_zero_infinity=True)
        for k, v in overrides.items():
            setattr(config, k, v)
        _no_layerdrop(config)
        head = _head_name(_meta(cls, config)) or "lm_head"
        if quantization_config is not None:
            keep_unquantized(quantization_config, [head, *_odd_linears(cls, config)])
        model = cls.from_pretrained(model_ref, config=config, ignore_mismatched_sizes=new_head, dtype=dtype,
                                    quantization_config=quantization_config, device_map=device_map,
                                    trust_remote_code=trust_remote_code)
        self.modules_to_save = (head,)
        self._patch_input_embeddings(model)
        return Loaded(model=model, processor=processor,
                      extra={"vocab": tokenizer.get_vocab(), "new_head": new_head, "own_vocabulary": own,
                             "blank_id": int(getattr(model.config, "blank_token_id", None)
                                             if getattr(model.config, "blank_token_id", None) is not None
                                             else model.config.pad_token_id)})

    @staticmethod
    def _char_tokenizer(folder: str):
        from transformers import Wav2Vec2CTCTokenizer

        return Wav2Vec2CTCTokenizer.from_pretrained(folder)

    @staticmethod
    def _processor(model_type: str, feature_extractor: Any, tokenizer: Any):
        """The architecture's own processor class when it takes this tokenizer (w2v-BERT's
        Wav2Vec2BertProcessor: AutoProcessor loads the export), else feature extractor +
        tokenizer saved side by side."""
        from transformers import Wav2Vec2BertProcessor

        if model_type in ("wav2vec2-bert", "wav2vec2_bert"):
            return Wav2Vec2BertProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        return CTCParts(feature_extractor, tokenizer)

    _patch_input_embeddings = staticmethod(patch_input_embeddings)

    def _features(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        import inspect

        fe = loaded.processor.feature_extractor
        out = dict(fe([ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, padding=True,
                      return_attention_mask=True, return_tensors="pt"))
        params = inspect.signature(unwrap(loaded.model).forward).parameters
        if "attention_mask" in out and "attention_mask" not in params and "padding_mask" in params:
            out["padding_mask"] = out.pop("attention_mask")
        return {k: v for k, v in out.items() if k in params}

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        inputs = self._features(batch, loaded)
        tok = loaded.processor.tokenizer
        enc = tok([unicodedata.normalize("NFC", ex.text) for ex in batch], padding=True, return_tensors="pt",
                  add_special_tokens=False)
        inputs["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return inputs

    def _valid_frames(self, model: Any, inputs: dict, n_frames: int):
        """Output frames that belong to the audio (the rest is padding), per example; None if
        the model has no rule for it (then generate runs one example at a time)."""
        import torch

        m = unwrap(model)
        mask = inputs.get("attention_mask", inputs.get("padding_mask"))
        if mask is None:
            return None
        mask = mask.reshape(mask.shape[0], -1)
        if hasattr(m, "_get_feat_extract_output_lengths"):
            lengths = m._get_feat_extract_output_lengths(mask.sum(-1))
            return torch.arange(n_frames, device=mask.device)[None, :] < lengths[:, None]
        if hasattr(m, "_get_output_attention_mask"):
            return m._get_output_attention_mask(mask, target_length=n_frames)
        return None

    def _decode(self, ids: list[int], loaded: Loaded) -> str:
        """Greedy CTC: merge repeats, drop blanks, then the tokenizer's decode."""
        from transformers import Wav2Vec2CTCTokenizer

        blank = loaded.extra.get("blank_id", 0)
        out, prev = [], None
        for i in ids:
            if i != prev and i != blank:
                out.append(i)
            prev = i
        tok = loaded.processor.tokenizer
        kw = {"group_tokens": False} if isinstance(tok, Wav2Vec2CTCTokenizer) else {"skip_special_tokens": True}
        return tok.decode(out, **kw).strip()

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        inputs = to_model(self._features(batch, loaded), model)
        with torch.no_grad():
            logits = model(**inputs).logits
        ids = logits.argmax(-1)
        valid = self._valid_frames(model, inputs, ids.shape[1])
        if valid is None and len(batch) > 1:  # no length rule: one example at a time, no padding
            return [p for ex in batch for p in self.generate(model, loaded, [ex], max_new_tokens)]
        rows = []
        for i in range(ids.shape[0]):
            row = ids[i][valid[i]] if valid is not None else ids[i]
            rows.append(self._decode(row.tolist(), loaded))
        return rows

    def audio_encoder(self, model: Any) -> Any:
        return _encoder(unwrap(model))

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)
        if not loaded.extra.get("own_vocabulary"):  # marks the folder's tokenizer as a run's alphabet
            (Path(out_dir) / "voxtune_ctc.json").write_text(json.dumps({"alphabet": "characters"}), encoding="utf-8")


def _meta(cls: Any, config: Any):
    import torch

    with torch.device("meta"):
        return cls(config)


def make_recipe(key: str) -> CTCRecipe:
    from engine.recipes.registry import family

    fam = family(key)
    if fam.module != __name__:
        raise ValueError(f"engine.recipes.ctc has no recipe {key!r}")
    if not fam.trainable:
        raise ValueError(f"{fam.key}: {fam.reason}")
    return CTCRecipe(key=fam.key)


def _no_layerdrop(config: Any) -> None:
    """LayerDrop off, in the config and in its sub-configs (Parakeet keeps it in
    `encoder_config`, 0.1 by default): with 10-300 clips a randomly skipped layer is noise the
    run cannot afford, and the estimate assumes every layer runs."""
    from transformers import PretrainedConfig

    if hasattr(config, "layerdrop"):
        config.layerdrop = 0.0
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            _no_layerdrop(value)

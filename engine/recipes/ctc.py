"""w2v-BERT 2.0 with a CTC head (`Wav2Vec2BertForCTC`): a pretrained speech encoder plus a
new character classifier whose alphabet comes from the user's own clean transcripts.

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

Default LoRA targets: the attention projections `linear_q`, `linear_v`; the new `lm_head`
is always fully trained (`modules_to_save`) and never quantised, since it starts random
(nor is the small feature projection: see NOT_QUANTIZED).

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

from engine.recipes.base import Example, Loaded
from engine.recipes.windowed import WindowedFeatureRecipe

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
        transcribe --run). Every checkpoint of a run has the same alphabet."""
        self.vocab_dir = None
        ref = config.get("model_ref") or config.get("model")
        candidates = [Path(str(ref))] if ref else []
        if config.get("workspace") and config.get("run_id"):
            ckpts = Path(str(config.get("workspace"))) / "runs" / str(config.get("run_id")) / "checkpoints"
            candidates += sorted(ckpts.glob("checkpoint-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for folder in candidates:
            if (folder / "vocab.json").is_file():
                self.vocab_dir = str(folder)
                return

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        from transformers import (AutoConfig, SeamlessM4TFeatureExtractor, Wav2Vec2BertForCTC,
                                  Wav2Vec2BertProcessor, Wav2Vec2CTCTokenizer)
        import tempfile

        tokenizer = None
        config = AutoConfig.from_pretrained(model_ref, trust_remote_code=trust_remote_code)
        for folder in (self.vocab_dir, model_ref):
            if folder and (Path(folder) / "vocab.json").is_file():
                tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(folder)
                break
        # the checkpoint's own head fits this alphabet: keep it (a finished run); else a new head
        new_head = tokenizer is None or getattr(config, "vocab_size", None) != len(tokenizer) \
            or "ForCTC" not in " ".join(getattr(config, "architectures", None) or [])
        if tokenizer is None:
            if not train_texts:
                raise ValueError(
                    f"{model_ref} has no CTC head or alphabet yet (a base w2v-BERT 2.0 is only the encoder; "
                    "the head is built from the training texts), so it cannot transcribe before training. "
                    "Train a run first, then evaluate or transcribe that run's model")
            tokenizer = make_tokenizer(build_vocab(train_texts), tempfile.mkdtemp(prefix="voxtune-ctc-vocab-"))
        feature_extractor = SeamlessM4TFeatureExtractor.from_pretrained(model_ref)
        processor = Wav2Vec2BertProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        keep_unquantized(quantization_config, NOT_QUANTIZED)
        model = Wav2Vec2BertForCTC.from_pretrained(
            model_ref, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            ctc_loss_reduction="mean", ctc_zero_infinity=True, layerdrop=0.0,
            ignore_mismatched_sizes=new_head, dtype=dtype, quantization_config=quantization_config,
            device_map=device_map, trust_remote_code=trust_remote_code)
        # The encoder takes features, not token embeddings, so transformers raises on
        # get_input_embeddings(); PEFT (saving an adapter after the head changed size) and
        # gradient checkpointing (enable_input_require_grads) both ask for it. The feature
        # projection is the layer in that place.
        model.get_input_embeddings = lambda: model.wav2vec2_bert.feature_projection
        return Loaded(model=model, processor=processor,
                      extra={"vocab": tokenizer.get_vocab(), "new_head": new_head})

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        inputs = self._features(batch, loaded)
        tok = loaded.processor.tokenizer
        enc = tok([unicodedata.normalize("NFC", ex.text) for ex in batch], padding=True, return_tensors="pt")
        inputs["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return inputs

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        inputs = to_model(self._features(batch, loaded), model)
        with torch.no_grad():
            logits = model(**inputs).logits
        ids = logits.argmax(-1)
        # frames past the audio's end are padding: blank them so they decode to nothing
        lengths = unwrap(model)._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]
        ids = ids.masked_fill(mask, loaded.processor.tokenizer.pad_token_id)
        return [t.strip() for t in loaded.processor.tokenizer.batch_decode(ids.cpu())]

    def audio_encoder(self, model: Any) -> Any:
        return unwrap(model).wav2vec2_bert

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)


def make_recipe(key: str) -> CTCRecipe:
    if key != "ctc":
        raise ValueError(f"engine.recipes.ctc has no recipe {key!r}")
    return CTCRecipe()

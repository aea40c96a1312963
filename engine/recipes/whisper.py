"""Whisper family (Whisper small..large-v3-turbo, Distil-Whisper): encoder-decoder over
30-second log-mel windows.

What differs from the shared driver: a 30 s audio window (longer clips arrive as segments
from engine.segment, never truncated), a 448-token decoder (a target that does not fit is an
error naming the clip, not a silent cut), and prefix tokens that depend on the checkpoint:
multilingual models get <|lang|><|transcribe|>, English-only (.en) models take neither.
"""

from __future__ import annotations

from typing import Any, Sequence

from engine.recipes.base import Example, Loaded
from engine.recipes.registry import Family, register

register(Family(key="whisper", kind="seq2seq", module=__name__, model_types=("whisper",)))

SAMPLE_RATE = 16000
WINDOW_S = 30.0
DEFAULT_LANGUAGE = "english"
WORDS_MAX_TOKENS = 200  # per 30 s window when timing words: ~2x fast speech, bounds a runaway decode


class WhisperRecipe:
    key = "whisper"
    default_lora_targets = ("q_proj", "v_proj")
    long_audio = "segment"

    def __init__(self, language: str | None = None) -> None:
        from engine.decoding import DecodeStats

        self.language = language
        self.decode_stats = DecodeStats()  # loop-guard counts since the caller last reset them

    def configure(self, config: dict) -> None:
        """Run options this family reads: the transcript language (multilingual checkpoints)."""
        self.language = config.get("language") or self.language

    # -- loading ------------------------------------------------------------------------
    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from engine.loading import from_pretrained

        kwargs: dict[str, Any] = {"dtype": dtype}
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        if device_map is not None:
            kwargs["device_map"] = device_map
        model = from_pretrained(WhisperForConditionalGeneration, model_ref, **kwargs)
        processor = from_pretrained(WhisperProcessor, model_ref)
        loaded = Loaded(model=model, processor=processor)
        self._configure_prefix(loaded)
        return loaded

    def is_multilingual(self, loaded: Loaded) -> bool:
        gen = getattr(loaded.model, "generation_config", None)
        flag = getattr(gen, "is_multilingual", None)
        if flag is not None:
            return bool(flag)
        return len(loaded.processor.tokenizer) >= 51865  # .en vocabularies are 51864

    def _configure_prefix(self, loaded: Loaded) -> None:
        """Labels and generation must agree on the prefix the model was trained with."""
        tok = loaded.processor.tokenizer
        if self.is_multilingual(loaded):
            language = self.language or DEFAULT_LANGUAGE
            tok.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)
            loaded.extra["generate_kwargs"] = {"language": language, "task": "transcribe"}
        else:
            if self.language and self.language.lower() not in ("en", "english"):
                raise ValueError(
                    f"this is an English-only Whisper checkpoint (.en); language {self.language!r} "
                    "needs a multilingual one (e.g. openai/whisper-small)")
            tok.set_prefix_tokens(predict_timestamps=False)
            loaded.extra["generate_kwargs"] = {}
        gen = getattr(loaded.model, "generation_config", None)
        if gen is not None:  # fine-tuning data has no timestamps; neither should generation
            gen.return_timestamps = False
        loaded.extra["max_target_tokens"] = int(getattr(loaded.model.config, "max_target_positions", 448))

    # -- data -----------------------------------------------------------------------------
    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        """Short clips whole; long clips cut at pauses into <= 30 s pieces by engine.segment.

        Training pieces carry their slice of the clean transcript (cached per dataset and
        model when the driver passed that context). Evaluation pieces carry no target of their
        own: the driver joins their predictions and scores the whole clip.
        """
        from engine.recipes.windowed import windowed_examples

        out = windowed_examples(rows, loaded, window_s=WINDOW_S, for_training=for_training, model_key="whisper",
                                words_fn=self.words_fn(loaded) if for_training else None)
        if for_training:
            for ex in out:
                self._check_target_length(ex, loaded)
        return out

    def words_fn(self, loaded: Loaded):
        """Timed words of a long clip from the model itself (Whisper's long-form generation
        with segment timestamps), for engine.segment to align the clean transcript to. Called
        before training starts, so this is the base model (fresh LoRA adds nothing yet)."""

        def words(audio) -> list[tuple[str, float, float]]:
            import torch

            from engine import segment

            model = loaded.model
            fe, tok = loaded.processor.feature_extractor, loaded.processor.tokenizer
            inputs = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                        padding="longest", return_attention_mask=True)
            device = next(model.parameters()).device
            try:
                with torch.no_grad():
                    out = model.generate(input_features=inputs.input_features.to(device, self._input_dtype(model)),
                                         attention_mask=inputs.attention_mask.to(device), return_timestamps=True,
                                         return_segments=True, condition_on_prev_tokens=False,
                                         max_new_tokens=WORDS_MAX_TOKENS,
                                         **loaded.extra.get("generate_kwargs", {}))
            except Exception as e:  # e.g. a checkpoint without timestamp tokens: cut at pauses instead
                print(f"voxtune: no model timestamps ({type(e).__name__}: {e}); segmenting at pauses", flush=True)
                return []
            segs = out["segments"][0] if isinstance(out, dict) and out.get("segments") else []
            timed = [{"start": float(x["start"]), "end": float(x["end"]),
                      "text": tok.decode(x["tokens"], skip_special_tokens=True)} for x in segs]
            return list(segment.words_from_segments([t for t in timed if t["text"].strip()]))

        return words

    def _label_ids(self, text: str, loaded: Loaded) -> list[int]:
        return loaded.processor.tokenizer(text).input_ids

    def _check_target_length(self, ex: Example, loaded: Loaded) -> None:
        n = len(self._label_ids(ex.text, loaded))
        limit = loaded.extra.get("max_target_tokens", 448)
        if n > limit:
            raise ValueError(
                f"clip {ex.clip_id} (segment {ex.segment}, {ex.start_s:.1f}-{ex.end_s:.1f} s): its "
                f"transcript is {n} tokens, over Whisper's {limit}-token decoder limit; split it "
                "into shorter clips or segments (nothing was truncated)")

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        import torch

        fe, tok = loaded.processor.feature_extractor, loaded.processor.tokenizer
        features = fe([ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        enc = tok([ex.text for ex in batch], padding=True, return_tensors="pt")
        labels = enc.input_ids.masked_fill(enc.attention_mask.ne(1), -100)
        start = loaded.model.config.decoder_start_token_id
        if labels.shape[1] and bool((labels[:, 0] == start).all()):
            labels = labels[:, 1:]  # the model prepends decoder_start_token_id itself
        return {"input_features": features.to(self._input_dtype(loaded.model)), "labels": labels.to(torch.long)}

    @staticmethod
    def _input_dtype(model: Any):
        import torch

        for p in model.parameters():  # first floating parameter: conv1 of the encoder
            if p.dtype.is_floating_point:
                return p.dtype
        return torch.float32

    # -- evaluation ---------------------------------------------------------------------
    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        fe, tok = loaded.processor.feature_extractor, loaded.processor.tokenizer
        features = fe([ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        device = next(model.parameters()).device
        features = features.to(device=device, dtype=self._input_dtype(model))
        # prefix (<|sot|> [+ lang + task] + <|notimestamps|>) counts against the 448 positions
        limit = loaded.extra.get("max_target_tokens", 448) - 4
        cap = max(1, min(max_new_tokens, limit))
        extra = loaded.extra.get("generate_kwargs", {})
        with torch.no_grad():
            ids = model.generate(input_features=features, max_new_tokens=cap, do_sample=False, num_beams=1, **extra)
        if not torch.is_tensor(ids):  # some versions return a dict-like output
            ids = ids["sequences"]
        texts = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
        return self._guard(model, features, ids, texts, cap, tok, extra)

    def _guard(self, model: Any, features: Any, ids: Any, texts: list[str], cap: int, tok: Any,
               extra: dict) -> list[str]:
        """Loop guard (engine.decoding): pieces whose greedy text loops or that used up the token
        limit are decoded again with transformers' temperature fallback (seeded, the global RNG
        left as it was); text that still loops has its repeats collapsed. Counts go to
        `self.decode_stats`."""
        import torch

        from engine import decoding

        special = set(tok.all_special_ids)
        hit = [sum(1 for t in row.tolist() if t not in special) >= cap - 1 for row in ids]
        suspect = [i for i, t in enumerate(texts) if hit[i] or decoding.is_loop(t)]
        stats = decoding.DecodeStats(pieces=len(texts), token_limit=sum(hit), fallback=len(suspect))
        if suspect:
            devices = [features.device] if features.device.type == "cuda" else []
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                out = model.generate(input_features=features[suspect], max_new_tokens=cap, num_beams=1,
                                     temperature=decoding.FALLBACK_TEMPERATURES,
                                     compression_ratio_threshold=decoding.HF_COMPRESSION_RATIO_THRESHOLD,
                                     logprob_threshold=decoding.LOGPROB_THRESHOLD, **extra)
            seqs = out if torch.is_tensor(out) else out["sequences"]
            for i, text in zip(suspect, tok.batch_decode(seqs, skip_special_tokens=True)):
                text = text.strip()
                if decoding.is_loop(text):
                    stats.collapsed += 1
                    text = decoding.collapse_repeats(text)
                texts[i] = text
        self.decode_stats.add(stats)
        return texts

    def audio_encoder(self, model: Any) -> Any:
        return model.get_encoder()

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)


def make_recipe(key: str, **options: Any) -> WhisperRecipe:
    if key != "whisper":
        raise ValueError(f"engine.recipes.whisper has no recipe {key!r}")
    return WhisperRecipe(**options)

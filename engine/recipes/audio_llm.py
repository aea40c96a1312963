"""Audio LLMs: a chat model that hears audio. One recipe, one family difference each:
how the prompt with audio placeholders is built, and how the audio becomes features.

Every example is one conversation: the user turn holds the audio and the instruction
`PROMPT`; the assistant turn is the clean transcript. Loss is on the answer tokens (and
the end-of-turn token) only: prompt, audio placeholders and padding are -100. Evaluation
generates greedily from the prompt (left-padded) and decodes only the new tokens.

The number of audio placeholder tokens in input_ids must equal the encoder's output length
(the model raises otherwise); it is computed by each model's own processor code:
- Qwen2-Audio (`qwen2_audio`): Qwen2AudioProcessor expands one `<|AUDIO|>` per audio item
  from the item's mel length (25 tokens/s). Long audio: `multi_item` -- the clip becomes
  several <= 30 s items (the feature extractor's `chunk_length`), cut at pauses, all in one
  prompt, with the whole clean transcript as the answer.
- Voxtral Mini/Small (`voxtral`): mistral-common's Tekken tokenizer encodes the chat request
  and counts `[AUDIO]` tokens (12.5/s, whole 30 s chunks); the mel features are the same
  chunks stacked. Long audio: `native` -- the whole clip as one item (Voxtral takes up to
  ~30 min; longer clips are refused by name).
- Qwen-Audio v1 (`qwen_audio`): not in transformers; needs the model's own code, so it runs
  only with `trust_remote_code: true` in the run config, else a clear refusal.
- Qwen2.5-Omni thinker (`omni`): the thinker alone (no talker/vocoder), Qwen chat layout with
  `<|audio_bos|><|AUDIO|>...<|audio_eos|>`, 25 tokens/s. Long audio: `native` up to the feature
  extractor's window (300 s for the real model); longer clips are segmented, never truncated.
- Granite Speech (`granite`): the installed transformers has the class, but the checkpoint
  carries its own speech LoRA adapter, which clashes with voxtune's adapter handling; it is
  refused with a message (see `UNSUPPORTED`) rather than trained wrongly.

Default LoRA targets (as in data/catalog.json, which the estimator uses): `q_proj`, `k_proj`,
`v_proj`, `o_proj` -- attention in the language model and, by the same names, in the
Whisper-style audio encoder (freeze it with `freeze_audio_encoder`); override with
`lora_targets`.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from engine.recipes.base import Example, Loaded
from engine.recipes.ctc import SAMPLE_RATE, float_dtype, model_device, unwrap

PROMPT = ("Transcribe this recording and clean it up: remove fillers, false starts and repetitions; "
          "fix punctuation.")

UNSUPPORTED = {
    "granite": "Granite Speech: voxtune cannot train it yet. Its checkpoint ships its own speech LoRA "
               "adapter (adapter_config.json next to the weights, switched on only when audio is present), "
               "which voxtune's loader would take for a run's adapter and its LoRA would stack on; that "
               "path is not built or tested. Use Qwen2.5-Omni, Qwen2-Audio or Voxtral",
}


def _pad(seqs: list[list[int]], value: int, left: bool) -> "Any":
    import torch

    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if left:
                out[i, width - len(s):] = torch.tensor(s)
            else:
                out[i, :len(s)] = torch.tensor(s)
    return out


@dataclass
class AudioLLMRecipe:
    """Shared logic; subclasses build one example's prompt ids and audio features."""

    key: str = ""
    default_lora_targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    long_audio: str = "native"
    prompt: str = PROMPT

    # -- family hooks --------------------------------------------------------------------------
    def _prompt(self, ex: Example, loaded: Loaded) -> tuple[list[int], dict]:
        """Prompt token ids (audio placeholders expanded) and this example's feature tensors."""
        raise NotImplementedError

    def _answer(self, text: str, loaded: Loaded) -> list[int]:
        raise NotImplementedError

    def _cat_features(self, feats: list[dict]) -> dict:
        import torch

        return {k: torch.cat([f[k] for f in feats]) for k in feats[0]}

    # -- Recipe interface ----------------------------------------------------------------------
    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        seqs, labels, feats = [], [], []
        for ex in batch:
            prompt_ids, f = self._prompt(ex, loaded)
            answer = self._answer(ex.text, loaded)
            seqs.append(prompt_ids + answer)
            labels.append([-100] * len(prompt_ids) + answer)
            feats.append(f)
        pad_id = loaded.extra["pad_id"]
        input_ids = _pad(seqs, pad_id, left=False)
        mask = _pad([[1] * len(s) for s in seqs], 0, left=False)
        out = {"input_ids": input_ids, "attention_mask": mask, "labels": _pad(labels, -100, left=False)}
        out.update(self._cat_features(feats))
        return out

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        prompts, feats = zip(*(self._prompt(ex, loaded) for ex in batch))
        dev, dt = model_device(model), float_dtype(model)
        inputs = {"input_ids": _pad(list(prompts), loaded.extra["pad_id"], left=True).to(dev),
                  "attention_mask": _pad([[1] * len(p) for p in prompts], 0, left=True).to(dev)}
        for k, v in self._cat_features(list(feats)).items():
            inputs[k] = v.to(dev, dtype=dt) if v.is_floating_point() else v.to(dev)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 eos_token_id=loaded.extra["eos_ids"], pad_token_id=loaded.extra["pad_id"])
        new = out[:, inputs["input_ids"].shape[1]:].cpu().tolist()
        return [self._decode(ids, loaded).strip() for ids in new]

    def _decode(self, ids: list[int], loaded: Loaded) -> str:
        return loaded.processor.tokenizer.decode(ids, skip_special_tokens=True)

    def audio_encoder(self, model: Any) -> Any:
        m = unwrap(model)
        tower = getattr(m, "audio_tower", None)
        return tower if tower is not None else m.model.audio_tower

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)


# ---- Qwen2-Audio ------------------------------------------------------------------------------

def qwen_chat_answer(text: str, loaded: Loaded) -> list[int]:
    """The answer turn of Qwen's chat template (Qwen2-Audio and the Omni thinker): text, <|im_end|>."""
    return loaded.processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [loaded.extra["im_end"]]


@dataclass
class Qwen2AudioRecipe(AudioLLMRecipe):
    key: str = "qwen2_audio"
    long_audio: str = "multi_item"

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        processor = AutoProcessor.from_pretrained(model_ref)
        model = Qwen2AudioForConditionalGeneration.from_pretrained(
            model_ref, dtype=dtype, quantization_config=quantization_config, device_map=device_map)
        tok = processor.tokenizer
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        eos = {im_end, tok.eos_token_id} - {None}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        fe = processor.feature_extractor
        return Loaded(model=model, processor=processor,
                      extra={"pad_id": pad, "eos_ids": sorted(eos), "im_end": im_end,
                             "window_s": fe.n_samples / fe.sampling_rate})

    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        from engine.segment import multi_item_example

        return [multi_item_example(r, loaded.extra["window_s"]) for r in rows]

    def _items(self, ex: Example) -> list[np.ndarray]:
        return list(ex.audio) if isinstance(ex.audio, (list, tuple)) else [ex.audio]

    def _prompt(self, ex: Example, loaded: Loaded) -> tuple[list[int], dict]:
        p = loaded.processor
        items = self._items(ex)
        # "audio_url" too: released chat templates test for that key, not for the type
        audio = [{"type": "audio", "audio_url": f"item{i}"} for i in range(len(items))]
        conv = [{"role": "user", "content": audio + [{"type": "text", "text": self.prompt}]}]
        text = p.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        enc = p(text=text, audio=items, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return enc["input_ids"][0].tolist(), {"input_features": enc["input_features"],
                                              "feature_attention_mask": enc["feature_attention_mask"]}

    def _answer(self, text: str, loaded: Loaded) -> list[int]:
        return qwen_chat_answer(text, loaded)


# ---- Voxtral ----------------------------------------------------------------------------------

@dataclass
class VoxtralRecipe(AudioLLMRecipe):
    key: str = "voxtral"
    long_audio: str = "native"
    max_audio_s: float = 30 * 60.0  # Voxtral's documented limit for one clip

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        from transformers import AutoProcessor, VoxtralForConditionalGeneration

        try:
            processor = AutoProcessor.from_pretrained(model_ref)
        except ImportError as e:  # mistral-common missing
            raise RuntimeError(f"Voxtral's processor needs the mistral-common package: pip install "
                               f"'mistral-common[audio]' ({e})") from e
        model = VoxtralForConditionalGeneration.from_pretrained(
            model_ref, dtype=dtype, quantization_config=quantization_config, device_map=device_map)
        mt = processor.tokenizer.tokenizer  # mistral_common MistralTokenizer
        audio_cfg = mt.instruct_tokenizer.audio_encoder.audio_config
        if audio_cfg is None or not audio_cfg.chunk_length_s:
            raise ValueError(f"{model_ref}: its tekken.json has no audio section with chunk_length_s; "
                             "this is not a Voxtral tokenizer")
        tekken = mt.instruct_tokenizer.tokenizer
        return Loaded(model=model, processor=processor,
                      extra={"pad_id": tekken.pad_id, "eos_ids": [tekken.eos_id], "eos": tekken.eos_id,
                             "chunk_s": float(audio_cfg.chunk_length_s)})

    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        from engine.segment import native_example

        too_long = [r for r in rows if float(r.get("duration") or 0) > self.max_audio_s]
        if too_long:
            names = ", ".join(f"{r['id']} ({float(r['duration']) / 60:.0f} min)" for r in too_long[:5])
            raise ValueError(f"Voxtral takes clips up to {self.max_audio_s / 60:.0f} min; split these first: {names}")
        return [native_example(r) for r in rows]

    def _prompt(self, ex: Example, loaded: Loaded) -> tuple[list[int], dict]:
        import soundfile as sf
        import torch
        from mistral_common.protocol.instruct.chunk import AudioChunk, TextChunk
        from mistral_common.protocol.instruct.messages import UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        audio = np.concatenate(ex.audio) if isinstance(ex.audio, (list, tuple)) else ex.audio
        buf = io.BytesIO()
        sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
        chunk = AudioChunk(input_audio=base64.b64encode(buf.getvalue()).decode("ascii"))
        req = ChatCompletionRequest(messages=[UserMessage(content=[chunk, TextChunk(text=self.prompt)])])
        tokenized = loaded.processor.tokenizer.tokenizer.encode_chat_completion(req)
        # the same 30 s chunks mistral-common counted tokens for, as stacked mel windows
        fe = loaded.processor.feature_extractor
        chunk_samples = int(round(loaded.extra["chunk_s"] * SAMPLE_RATE))
        frames = chunk_samples // fe.hop_length
        feats = []
        for a in tokenized.audios:
            arr = np.asarray(a.audio_array, dtype=np.float32)
            f = fe(arr, sampling_rate=SAMPLE_RATE, padding=True, truncation=False, pad_to_multiple_of=chunk_samples,
                   return_attention_mask=False, return_tensors="pt")["input_features"]
            feats.append(f.reshape(fe.feature_size, -1, frames).transpose(0, 1))
        return list(tokenized.tokens), {"input_features": torch.cat(feats)}

    def _answer(self, text: str, loaded: Loaded) -> list[int]:
        tekken = loaded.processor.tokenizer.tokenizer.instruct_tokenizer.tokenizer
        return tekken.encode(text, bos=False, eos=False) + [loaded.extra["eos"]]

    def _decode(self, ids: list[int], loaded: Loaded) -> str:
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        tekken = loaded.processor.tokenizer.tokenizer.instruct_tokenizer.tokenizer
        return tekken.decode(ids, special_token_policy=SpecialTokenPolicy.IGNORE)


# ---- Qwen2.5-Omni thinker -----------------------------------------------------------------------

OMNI_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
               "auditory and visual inputs, as well as generating text and speech.")
# processor-side files of an Omni checkpoint, copied next to saved weights so AutoProcessor works
OMNI_PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                        "chat_template.json", "chat_template.jinja", "spk_dict.pt")


@dataclass
class OmniParts:
    """The parts of Qwen2_5OmniProcessor that speech needs. The full processor also builds an
    image and a video processor, and the video one requires torchvision, which a speech box
    need not have; the audio token count uses the processor's own formula."""

    feature_extractor: Any
    tokenizer: Any
    source: str = ""

    def save_pretrained(self, out_dir: str) -> None:
        import shutil
        from pathlib import Path

        self.feature_extractor.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        for name in OMNI_PROCESSOR_FILES:
            src = _source_file(self.source, name)
            if src and not (Path(out_dir) / name).exists():
                shutil.copy2(src, Path(out_dir) / name)


def _source_file(ref: str, name: str) -> str | None:
    """A file of a local folder or of a cached hub checkpoint, if it has one."""
    from pathlib import Path

    if not ref:
        return None
    if Path(ref).is_dir():
        path = Path(ref) / name
        return str(path) if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(ref, name)
        return hit if isinstance(hit, str) else None
    except Exception:
        return None


@dataclass
class OmniRecipe(AudioLLMRecipe):
    """Qwen2.5-Omni's thinker (audio/vision encoders + LM): text out only, no talker/vocoder."""

    key: str = "omni"
    long_audio: str = "native"

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        from transformers import (AutoConfig, AutoFeatureExtractor, AutoTokenizer,
                                  Qwen2_5OmniThinkerForConditionalGeneration)

        tok = AutoTokenizer.from_pretrained(model_ref)
        fe = AutoFeatureExtractor.from_pretrained(model_ref)
        config = AutoConfig.from_pretrained(model_ref)
        kwargs: dict[str, Any] = {}
        if getattr(config, "model_type", "") == "qwen2_5_omni":  # the full model: take its thinker
            kwargs["config"] = config.thinker_config
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            model_ref, dtype=dtype, quantization_config=quantization_config, device_map=device_map, **kwargs)
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        pad = tok.pad_token_id if tok.pad_token_id is not None else im_end
        return Loaded(model=model, processor=OmniParts(fe, tok, model_ref),
                      extra={"pad_id": pad, "eos_ids": sorted({im_end, tok.eos_token_id} - {None}),
                             "im_end": im_end, "window_s": fe.n_samples / fe.sampling_rate})

    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        """Whole clips up to the feature extractor's window (300 s for the real model); a longer
        clip is segmented like a windowed family's, never truncated."""
        from engine.recipes.windowed import windowed_examples
        from engine.segment import native_example

        window = loaded.extra["window_s"]
        long_ids = {r["id"] for r in rows if float(r.get("duration") or 0) > window}
        long_ex = windowed_examples([r for r in rows if r["id"] in long_ids], loaded, window_s=window,
                                    for_training=for_training, model_key=self.key) if long_ids else []
        out = []
        for r in rows:
            out.extend([e for e in long_ex if e.clip_id == r["id"]] if r["id"] in long_ids else [native_example(r)])
        return out

    def _prompt(self, ex: Example, loaded: Loaded) -> tuple[list[int], dict]:
        from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

        fe, tok = loaded.processor.feature_extractor, loaded.processor.tokenizer
        audio = np.concatenate(ex.audio) if isinstance(ex.audio, (list, tuple)) else ex.audio
        feats = fe([audio], sampling_rate=SAMPLE_RATE, padding="max_length", return_attention_mask=True,
                   return_tensors="pt")
        mask = feats["attention_mask"]
        n = int(_get_feat_extract_output_lengths(mask.sum(-1))[0])
        text = (f"<|im_start|>system\n{OMNI_SYSTEM}<|im_end|>\n<|im_start|>user\n"
                f"<|audio_bos|>{'<|AUDIO|>' * n}<|audio_eos|>{self.prompt}<|im_end|>\n<|im_start|>assistant\n")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids, {"input_features": feats["input_features"], "feature_attention_mask": mask}

    def _answer(self, text: str, loaded: Loaded) -> list[int]:
        return qwen_chat_answer(text, loaded)


# ---- Qwen-Audio v1 (remote code only) ---------------------------------------------------------

@dataclass
class RemoteCodeRefusal(AudioLLMRecipe):
    """Qwen-Audio v1 lives in the checkpoint's own Python code, not in transformers."""

    key: str = "qwen_audio"
    long_audio: str = "segment"

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        if not trust_remote_code:
            raise PermissionError(
                f"{model_ref} (Qwen-Audio v1) is not part of transformers: loading it runs Python code "
                "downloaded with the checkpoint. voxtune does this only when you opt in for this run: "
                "queue it with --trust-remote-code (config `trust_remote_code: true`)")
        raise NotImplementedError(
            f"{model_ref}: Qwen-Audio v1's remote code pins an old transformers (4.3x) and its own "
            "audio prompt format; voxtune cannot train it with the installed transformers. "
            "Use Qwen2-Audio-7B-Instruct (same family, supported natively)")


@dataclass
class Unsupported(AudioLLMRecipe):
    def load(self, model_ref: str, **kwargs: Any) -> Loaded:
        raise NotImplementedError(f"{model_ref}: {UNSUPPORTED[self.key]}")


def make_recipe(key: str) -> AudioLLMRecipe:
    if key == "qwen2_audio":
        return Qwen2AudioRecipe()
    if key == "voxtral":
        return VoxtralRecipe()
    if key == "omni":
        return OmniRecipe()
    if key == "qwen_audio":
        return RemoteCodeRefusal()
    if key in UNSUPPORTED:
        return Unsupported(key=key)
    raise ValueError(f"engine.recipes.audio_llm has no recipe {key!r}")

"""Audio LLMs: a chat model that hears audio. One generic recipe driven by each model's own
processor (`ChatTemplateRecipe`), plus two named exceptions.

Every example is one conversation: the user turn holds the audio item(s) and the instruction
`PROMPT`; the assistant turn is the clean transcript. The processor's chat template renders it
(`apply_chat_template(..., tokenize=False)`: the generation prompt, and the whole conversation,
whose text after the prompt is the answer), and the processor itself tokenises the text and
expands the audio placeholders by the model's own audio-length rule, so the placeholder count
always equals the encoder's output. Loss is on the answer tokens and the end-of-turn token
only: system/user turns, audio placeholders, an answer prefix the prompt supplies, trailing
template whitespace and padding are -100. Evaluation generates greedily from the prompt
(left-padded) and decodes only the new tokens.

Per family (`AudioRule`, registered below; the exceptions are small and named):
- Qwen2-Audio (`qwen2_audio`): `multi_item` -- a clip becomes several <= 30 s items (the feature
  extractor's window), cut at pauses, all in one prompt, the whole clean transcript as answer.
- Qwen3-ASR (`qwen3_asr`): whole clips up to 20 min; audio-only user turn (as trained); the
  forced language `language English<asr_text>` is an unscored prefix of the answer.
- Granite Speech (`granite`): its checkpoint ships a speech LoRA adapter that transformers loads
  with the model and switches on whenever audio is present; every voxtune example has audio, so
  it is merged into the weights at load (`merge_shipped_adapter`) and a run's own LoRA goes on a
  plain model. Exports are plain models (`has_lora_adapter: false`).
- GLM-ASR (`glmasr`), Audio Flamingo 3 (`audioflamingo3`): whole clips up to the processor's
  `max_audio_len` (655 s / 600 s), past which it would truncate; longer clips are segmented.
- Voxtral (`voxtral`, exception): mistral-common's Tekken tokenizer encodes the chat request
  and counts `[AUDIO]` tokens (12.5/s, whole 30 s chunks). Whole clips up to 30 min.
- Qwen2.5-Omni thinker (`omni`, exception): the full processor needs torchvision (video), so the
  prompt is built here from the feature extractor + tokenizer with the processor's own length
  formula; whole clips up to 300 s, longer ones segmented.
- Qwen-Audio v1 (`qwen_audio`): not in transformers; runs only with `trust_remote_code: true`,
  else a clear refusal. SALMONN (`salmonn`): estimates only.

Default LoRA targets: the catalog's for the run's model (`q_proj`, `k_proj`, `v_proj`, `o_proj`
for these models: attention in the language model and, by the same names, in Whisper-style
audio encoders; freeze those with `freeze_audio_encoder`); override with `lora_targets`.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from engine.recipes.base import Example, Loaded
from engine.recipes.ctc import SAMPLE_RATE, float_dtype, model_device, unwrap
from engine.recipes.registry import Family, register

PROMPT = ("Transcribe this recording and clean it up: remove fillers, false starts and repetitions; "
          "fix punctuation.")



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


def qwen_chat_answer(text: str, loaded: Loaded) -> list[int]:
    """The answer turn of Qwen's chat template (the Omni thinker): text, <|im_end|>."""
    return loaded.processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [loaded.extra["im_end"]]


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



# ---- the generic path: the processor's own chat template -------------------------------------

@dataclass(frozen=True)
class AudioRule:
    """What differs between chat-template audio LLMs, per architecture (the named exceptions).

    model_class   transformers class trained (a full Omni checkpoint: its thinker)
    long_audio    native: the whole clip as one audio item, up to `max_s` (longer clips are
                  segmented, never truncated); multi_item: the clip as several <= `max_s` items
                  in one prompt (the processor truncates an item past its window)
    max_s         seconds (see long_audio); `max_s_attr` names a processor attribute holding it
                  (e.g. GLM-ASR's `max_audio_len`, past which its processor truncates)
    instruction   the user turn carries `PROMPT`; False: audio only, as the model was trained
    answer_prefix assistant text given in the prompt and never scored (Qwen3-ASR's forced
                  language, "language English<asr_text>"); `{language}` is the run's language
    merge_shipped_adapter  the checkpoint ships a LoRA adapter next to its weights that is on
                  whenever audio is present (Granite Speech): merged into the weights at load,
                  since every voxtune example has audio, so a run's own LoRA goes on a plain model
    """

    model_class: str
    long_audio: str = "native"
    max_s: float = 30.0
    max_s_attr: str | None = None
    instruction: bool = True
    answer_prefix: str = ""
    merge_shipped_adapter: bool = False
    needs: tuple[str, ...] = ()  # Python packages the model class needs beyond voxtune's own


LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "zh": "Chinese", "ja": "Japanese", "ko": "Korean"}

RULES: dict[str, AudioRule] = {}


def _resample(audio: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return audio
    from engine.audio import resample

    return resample(audio, SAMPLE_RATE, sr)


def merge_shipped_adapter(model: Any) -> int:
    """Fold a LoRA adapter that transformers loaded with the checkpoint (its PEFT integration)
    into the weights it sits on, and drop the adapter. Returns how many layers were merged.
    Works on 16/32-bit and on bitsandbytes 4/8-bit layers (PEFT dequantises, adds, requantises)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
            merged += 1
    if getattr(model, "_hf_peft_config_loaded", False):
        model._hf_peft_config_loaded = False
        if hasattr(model, "peft_config"):
            del model.peft_config
    if merged:
        # loading the adapter replaced the key renamings save_pretrained reverses with PEFT's
        # (adapter-prefixed) ones; without this, a saved checkpoint's keys come out mangled
        model._weight_conversions = None
    if hasattr(model.config, "has_lora_adapter"):
        model.config.has_lora_adapter = False  # the export is a plain model: nothing to switch on
    if merged:  # loading the adapter froze the base weights; the driver decides what trains
        for p in model.parameters():
            if p.is_floating_point():
                p.requires_grad_(True)
    return merged


@dataclass
class ChatTemplateRecipe:
    """One conversation per example: user turn = audio item(s) (+ instruction), assistant turn =
    the clean transcript. The processor renders it with its own chat template and expands the
    audio placeholders by its own audio-length rule; labels are -100 everywhere except the
    answer's tokens (its text and the template's end of turn)."""

    key: str
    rule: AudioRule
    default_lora_targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    prompt: str = PROMPT
    language: str = "en"

    @property
    def long_audio(self) -> str:
        return self.rule.long_audio

    def configure(self, config: dict) -> None:
        """The run's `language` (answer prefix) and the catalog's LoRA targets for this model."""
        self.language = str(config.get("language") or "en")
        self.default_lora_targets = _catalog_lora_targets(config) or self.default_lora_targets

    # -- loading ---------------------------------------------------------------------------
    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        import transformers
        from transformers import AutoConfig, AutoProcessor

        from engine.loading import from_pretrained

        import importlib.util

        missing = [p for p in self.rule.needs if importlib.util.find_spec(p) is None]
        if missing:
            raise ModuleNotFoundError(f"{self.key}: {self.rule.model_class} needs the Python package(s) "
                                      f"{', '.join(missing)}: pip install 'voxtune[{self.key}]' (or {' '.join(missing)})")
        config = from_pretrained(AutoConfig, model_ref, trust_remote_code=trust_remote_code)
        cls = getattr(transformers, self.rule.model_class)
        kwargs: dict[str, Any] = {}
        thinker = getattr(config, "thinker_config", None)
        if thinker is not None and "Thinker" in self.rule.model_class:  # a full Omni checkpoint
            kwargs["config"] = thinker
        processor = from_pretrained(AutoProcessor, model_ref, trust_remote_code=trust_remote_code)
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"{model_ref}: its processor has no chat template (chat_template.jinja); "
                             "voxtune builds prompts with it")
        model = from_pretrained(cls, model_ref, dtype=dtype, quantization_config=quantization_config,
                                device_map=device_map, trust_remote_code=trust_remote_code, **kwargs)
        if self.rule.merge_shipped_adapter:
            n = merge_shipped_adapter(model)
            if n:
                print(f"voxtune: merged the checkpoint's own speech LoRA adapter into {n} layers", flush=True)
        tok = processor.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos_ids = sorted({*(eos if isinstance(eos, (list, tuple)) else [eos]), tok.eos_token_id} - {None})
        fe = getattr(processor, "feature_extractor", None) or getattr(processor, "audio_processor", None)
        max_s = self.rule.max_s
        if self.rule.max_s_attr and getattr(processor, self.rule.max_s_attr, None):
            max_s = float(getattr(processor, self.rule.max_s_attr))
        if self.rule.long_audio == "multi_item" and getattr(fe, "n_samples", None):
            max_s = min(max_s, fe.n_samples / fe.sampling_rate)  # its extractor cuts an item there
        return Loaded(model=model, processor=processor,
                      extra={"pad_id": pad, "eos_ids": eos_ids, "max_s": max_s,
                             "sampling_rate": int(getattr(fe, "sampling_rate", SAMPLE_RATE) or SAMPLE_RATE)})

    # -- data --------------------------------------------------------------------------------
    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        """native: whole clips up to max_s, longer ones segmented like a windowed family's;
        multi_item: every clip as <= max_s items in one prompt. Nothing is truncated."""
        from engine.recipes.windowed import windowed_examples
        from engine.segment import multi_item_example, native_example

        max_s = float(loaded.extra["max_s"])
        if self.rule.long_audio == "multi_item":
            return [multi_item_example(r, max_s) for r in rows]
        long_ids = {r["id"] for r in rows if float(r.get("duration") or 0) > max_s}
        long_ex = windowed_examples([r for r in rows if r["id"] in long_ids], loaded, window_s=max_s,
                                    for_training=for_training, model_key=self.key) if long_ids else []
        out: list[Example] = []
        for r in rows:
            out.extend([e for e in long_ex if e.clip_id == r["id"]] if r["id"] in long_ids else [native_example(r)])
        return out

    def _answer_prefix(self) -> str:
        lang = LANGUAGE_NAMES.get(self.language.lower(), self.language)
        return self.rule.answer_prefix.format(language=lang)

    def conversation(self, ex: Example, loaded: Loaded, answer: str | None) -> list[dict]:
        """The chat for one example; `answer` None: the prompt to generate from."""
        sr = loaded.extra["sampling_rate"]
        items = list(ex.audio) if isinstance(ex.audio, (list, tuple)) else [ex.audio]
        content: list[dict] = [{"type": "audio", "audio": _resample(np.asarray(a, dtype=np.float32), sr)}
                               for a in items]
        if self.rule.instruction:
            content.append({"type": "text", "text": self.prompt})
        conv = [{"role": "user", "content": content}]
        prefix = self._answer_prefix()
        if answer is not None or prefix:
            conv.append({"role": "assistant", "content": [{"type": "text", "text": prefix + (answer or "")}]})
        return conv

    def texts(self, ex: Example, loaded: Loaded) -> tuple[str, str]:
        """(prompt text, answer text) as the chat template renders them: the prompt ends where
        generation starts; prompt + answer is the whole training conversation."""
        p = loaded.processor
        prefill = bool(self._answer_prefix())
        prompt = p.apply_chat_template(self.conversation(ex, loaded, None), tokenize=False,
                                       add_generation_prompt=not prefill, continue_final_message=prefill)
        full = p.apply_chat_template(self.conversation(ex, loaded, ex.text), tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"{self.key}: the chat template renders the answer turn differently from the "
                             f"generation prompt, so the answer cannot be told apart from the prompt "
                             f"(prompt ends {prompt[-40:]!r}, conversation has {full[:len(prompt)][-40:]!r})")
        # the conversation ends at the end-of-turn token: whitespace a template writes after it
        # (a newline) is not part of the answer, and generation stops before it anyway
        return prompt, full[len(prompt):].rstrip()

    def _encode(self, texts: list[str], batch: Sequence[Example], loaded: Loaded, side: str) -> dict:
        """The processor on rendered texts + the batch's audio: placeholders expanded by the
        model's own rule, padded on `side`."""
        p = loaded.processor
        sr = loaded.extra["sampling_rate"]
        audio = [_resample(np.asarray(a, dtype=np.float32), sr)
                 for ex in batch for a in (ex.audio if isinstance(ex.audio, (list, tuple)) else [ex.audio])]
        text_kwargs: dict[str, Any] = {"padding": True, "padding_side": side}
        bos = getattr(p.tokenizer, "bos_token", None)
        if bos and texts[0].startswith(bos):
            text_kwargs["add_special_tokens"] = False  # the template wrote it (apply_chat_template does the same)
        # audio keeps the processor's own padding rule (e.g. Whisper-style 30 s windows)
        kwargs: dict[str, Any] = {"text_kwargs": text_kwargs, "return_tensors": "pt", "sampling_rate": sr}
        out = dict(p(text=texts, audio=audio, **kwargs))
        for name in list(getattr(p, "unused_input_names", None) or []):
            out.pop(name, None)
        return {k: v for k, v in out.items() if hasattr(v, "shape")}

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        import torch

        pairs = [self.texts(ex, loaded) for ex in batch]
        inputs = self._encode([a + b for a, b in pairs], batch, loaded, "right")
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        labels = torch.full_like(ids, -100)
        tok = loaded.processor.tokenizer
        for i, (prompt, answer) in enumerate(pairs):
            stop = int(mask[i].sum())
            want = tok(answer, add_special_tokens=False)["input_ids"]
            if want and ids[i, stop - len(want):stop].tolist() == want:
                start = stop - len(want)
            else:  # the answer tokenises differently inside the conversation: find where the prompt ends
                head = self._encode([prompt], [batch[i]], loaded, "right")["input_ids"][0]
                if ids[i, :len(head)].tolist() != head.tolist():
                    raise ValueError(f"{self.key}: clip {batch[i].clip_id}: the prompt's tokens are not a prefix of "
                                     "the conversation's; cannot tell the answer apart (nothing trained)")
                start = len(head)
            labels[i, start:stop] = ids[i, start:stop]
        inputs["labels"] = labels
        return inputs

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        from engine.recipes.ctc import to_model

        prompts = [self.texts(ex, loaded)[0] for ex in batch]
        inputs = to_model(self._encode(prompts, batch, loaded, "left"), model)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 eos_token_id=loaded.extra["eos_ids"], pad_token_id=loaded.extra["pad_id"])
        ids = out.sequences if hasattr(out, "sequences") else out
        new = ids[:, inputs["input_ids"].shape[1]:].cpu()
        tok = loaded.processor.tokenizer
        return [tok.decode(row, skip_special_tokens=True).strip() for row in new]

    def _decode(self, ids: list[int], loaded: Loaded) -> str:
        return loaded.processor.tokenizer.decode(ids, skip_special_tokens=True)

    def audio_encoder(self, model: Any) -> Any:
        m = unwrap(model)
        for owner in (m, getattr(m, "model", None)):
            for name in ("audio_tower", "encoder", "audio_encoder", "audio_model"):
                tower = getattr(owner, name, None) if owner is not None else None
                if tower is not None:
                    return tower
        raise ValueError(f"{self.key}: no audio encoder module found to freeze")

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)


def _catalog_lora_targets(config: dict) -> list[str] | None:
    """LoRA targets the catalog lists for the run's model (light lookup; None if unknown)."""
    try:
        from engine.catalog import get_model

        return list(get_model(str(config.get("model") or config.get("model_ref"))).lora_targets) or None
    except Exception:  # noqa: BLE001 - a folder or hub id the catalog cannot describe: recipe default
        return None


# ---- who is who: the families this module trains ------------------------------------------------

def _family(key: str, model_types: tuple[str, ...], rule: AudioRule | None = None, *, aliases: tuple[str, ...] = (),
            trainable: bool = True, reason: str | None = None) -> None:
    register(Family(key=key, kind="audio-llm", module=__name__, model_types=model_types, aliases=aliases,
                    trainable=trainable, reason=reason))
    if rule is not None:
        RULES[key] = rule


# Qwen2-Audio: one <= 30 s item per piece (its feature extractor's window), several per prompt.
_family("qwen2_audio", ("qwen2_audio",),
        AudioRule("Qwen2AudioForConditionalGeneration", "multi_item", 30.0))
# Qwen3-ASR: trained on audio-only user turns; the forced language is a prefill of the answer.
# Whole clips up to 20 min (model card: "up to 20 minutes per call").
_family("qwen3_asr", ("qwen3_asr",),
        AudioRule("Qwen3ASRForConditionalGeneration", "native", 1200.0, instruction=False,
                  answer_prefix="language {language}<asr_text>"))
# Granite Speech 3.3: its checkpoint ships the speech LoRA adapter (merged at load, see AudioRule).
_family("granite", ("granite_speech",),
        AudioRule("GraniteSpeechForConditionalGeneration", "native", 300.0, merge_shipped_adapter=True))
# GLM-ASR / Audio Flamingo 3: the processor truncates past `max_audio_len` (655 s / 600 s).
_family("glmasr", ("glmasr",), AudioRule("GlmAsrForConditionalGeneration", "native", 655.0,
                                        max_s_attr="max_audio_len"))
_family("audioflamingo3", ("audioflamingo3",), AudioRule("AudioFlamingo3ForConditionalGeneration", "native", 600.0,
                                                        max_s_attr="max_audio_len"))
# Gemma 3n: its processor gives every audio item a fixed 188 soft tokens and its extractor cuts
# items at 30 s (max_length 480,000 samples): several <= 30 s items per prompt. The model builds
# its (unused here) vision tower with timm.
_family("gemma3n", ("gemma3n",), AudioRule("Gemma3nForConditionalGeneration", "multi_item", 30.0, needs=("timm",)))
# Voxtral and the Qwen2.5-Omni thinker: the named exceptions above (mistral-common's tokenizer;
# Omni's processor needs torchvision for video).
_family("voxtral", ("voxtral",))
_family("omni", ("qwen2_5_omni", "qwen2_5_omni_thinker"))
_family("phi4_multimodal", ("phi4_multimodal",), trainable=False,
        reason="its checkpoint ships separate speech and vision LoRA adapters that transformers switches per input "
               "modality; merging the speech one like Granite's is not built or tested yet; estimates only")
_family("qwen_audio", ("qwen",), trainable=False,
        reason="not in transformers: needs Qwen's own code; opt in with --trust-remote-code (runs code from the hub)")
_family("salmonn", (), trainable=False,
        reason="own research code pinned to transformers 4.28; not loadable with the installed transformers")

EXCEPTIONS = {"voxtral": VoxtralRecipe, "omni": OmniRecipe, "qwen_audio": RemoteCodeRefusal}


def make_recipe(key: str, **options: Any):
    """The recipe for one of this module's families (an older key, e.g. `granite`, works too)."""
    from engine.recipes.registry import family

    fam = family(key)
    if fam.key in EXCEPTIONS:
        return EXCEPTIONS[fam.key](**options)
    if fam.key in RULES:
        return ChatTemplateRecipe(key=fam.key, rule=RULES[fam.key], **options)
    raise ValueError(f"{fam.key}: {fam.reason or 'voxtune has no recipe for it'}")

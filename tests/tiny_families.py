"""Tiny random models of the non-Whisper families, saved to a folder the way the hub ships
them, with REAL tokenizers/processors (built offline), so tests drive the same loading code
as a real checkpoint. 64-wide configs: seconds to build, cheap to train on CPU.

Each `build_*` returns the folder; `FAMILIES` maps a catalog recipe key to its builder.
"""

from __future__ import annotations

import json
from pathlib import Path

# Text the tiny BPE tokenizers learn from: plain English, so clean targets tokenize sanely.
CORPUS = [
    "So I think we should start the meeting now.",
    "The quick brown fox jumps over the lazy dog.",
    "We moved the release to Friday, and the tests pass.",
    "Um, uh, you know, I mean, like, well, okay then.",
    "Please send me the report before noon tomorrow!",
    "Is this the right way? Yes, it is; thank you.",
    "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz",
]


def _seed():
    import torch

    torch.manual_seed(0)


def _train_bpe(vocab_size: int = 400, byte_level: bool = True, special: list[str] | None = None):
    """(vocab, merges) of a small BPE trained on CORPUS with the `tokenizers` library."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted(set("".join(CORPUS)) | {"▁"})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special or [], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    data = json.loads(tok.to_str())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    return data["model"]["vocab"], merges


# ---- CTC: w2v-BERT 2.0 ----------------------------------------------------------------------

def build_ctc(folder: str | Path) -> Path:
    """Like facebook/w2v-bert-2.0: encoder weights + feature extractor, no tokenizer or head
    (the recipe builds the alphabet from the training texts)."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    _seed()
    folder = Path(folder)
    cfg = Wav2Vec2BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                             output_hidden_size=64, conv_depthwise_kernel_size=3, feat_proj_dropout=0.0,
                             hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)
    Wav2Vec2BertModel(cfg).save_pretrained(folder)
    SeamlessM4TFeatureExtractor().save_pretrained(folder)
    return folder


# ---- SeamlessM4T v2 speech-to-text ----------------------------------------------------------

SEAMLESS_LANGS = ["eng", "fra", "deu"]


def build_seamless(folder: str | Path) -> Path:
    from transformers import (GenerationConfig, SeamlessM4TFeatureExtractor, SeamlessM4TProcessor,
                              SeamlessM4TTokenizer, SeamlessM4Tv2Config, SeamlessM4Tv2ForSpeechToText)

    _seed()
    folder = Path(folder)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab, merges = _train_bpe(300, byte_level=False, special=specials)
    lang_tokens = [f"__{lang}__" for lang in SEAMLESS_LANGS]
    tok = SeamlessM4TTokenizer(vocab=vocab, merges=merges, src_lang="eng", tgt_lang="eng",
                               additional_special_tokens=lang_tokens)
    processor = SeamlessM4TProcessor(feature_extractor=SeamlessM4TFeatureExtractor(), tokenizer=tok)
    cfg = SeamlessM4Tv2Config(
        vocab_size=len(tok), t2u_vocab_size=64, char_vocab_size=64, hidden_size=64,
        encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128, speech_encoder_layers=2, speech_encoder_attention_heads=2,
        speech_encoder_intermediate_size=128, t2u_encoder_layers=1, t2u_decoder_layers=1,
        t2u_encoder_attention_heads=2, t2u_decoder_attention_heads=2, t2u_encoder_ffn_dim=64,
        t2u_decoder_ffn_dim=64, conv_depthwise_kernel_size=3, adaptor_kernel_size=2, adaptor_stride=2,
        dropout=0.0, attention_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        speech_encoder_layerdrop=0.0, speech_encoder_dropout=0.0, adaptor_dropout=0.0,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, max_position_embeddings=512,
    )
    model = SeamlessM4Tv2ForSpeechToText(cfg)
    gen = GenerationConfig(decoder_start_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, max_new_tokens=32)
    gen.text_decoder_lang_to_code_id = {lang: tok.convert_tokens_to_ids(f"__{lang}__") for lang in SEAMLESS_LANGS}
    model.generation_config = gen
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- Qwen2-Audio ----------------------------------------------------------------------------

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
TINY_WINDOW_S = 4  # tiny audio LLMs hear 4 s per audio item (real ones: 30 s), so tests stay fast


def qwen_tokenizer():
    """A byte-level BPE with the special tokens and chat template Qwen2-Audio's processor expects."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(500, byte_level=True, special=QWEN_SPECIALS)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    return tok


def build_qwen2_audio(folder: str | Path) -> Path:
    from transformers import (Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, Qwen2Config, WhisperFeatureExtractor)

    _seed()
    folder = Path(folder)
    tok = qwen_tokenizer()
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=TINY_WINDOW_S)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok)
    cfg = Qwen2AudioConfig(
        audio_config=Qwen2AudioEncoderConfig(
            d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, num_mel_bins=80,
            max_source_positions=fe.nb_max_frames // 2),
        text_config=Qwen2Config(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    model = Qwen2AudioForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- Voxtral --------------------------------------------------------------------------------

VOXTRAL_AUDIO_TOKEN, VOXTRAL_BEGIN_AUDIO, VOXTRAL_TRANSCRIBE = 24, 25, 34
TEKKEN_SPECIAL_RANKS = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]",
                        6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]",
                        10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]",
                        15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
                        19: "[TOOL_CONTENT]", 20: "[ARGS]", 21: "[CALL_ID]", VOXTRAL_AUDIO_TOKEN: "[AUDIO]",
                        VOXTRAL_BEGIN_AUDIO: "[BEGIN_AUDIO]", VOXTRAL_TRANSCRIBE: "[TRANSCRIBE]"}


def write_tekken(path: str | Path, *, n_text_tokens: int = 1000, chunk_length_s: float = TINY_WINDOW_S,
                 num_mel_bins: int = 80) -> Path:
    """mistral-common's shipped Tekken vocabulary, cut to its first `n_text_tokens` ranks (all
    256 bytes come first, so any text still encodes) and given Voxtral's special tokens and an
    audio section (12.5 audio tokens/s, `chunk_length_s` windows)."""
    import mistral_common

    src = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    data = json.loads(src.read_text(encoding="utf-8"))
    n_special = 1000
    data["vocab"] = data["vocab"][:n_text_tokens]
    data["config"].update(version="v7", num_vocab_tokens=n_text_tokens, default_vocab_size=n_special + n_text_tokens,
                          default_num_special_tokens=n_special)
    data["special_tokens"] = [{"rank": i, "token_str": TEKKEN_SPECIAL_RANKS.get(i, f"<SPECIAL_{i}>"),
                               "is_control": True} for i in range(n_special)]
    data.pop("image", None)
    data["audio"] = {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": chunk_length_s,
                     "audio_encoding_config": {"num_mel_bins": num_mel_bins, "hop_length": 160, "window_size": 400}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def build_voxtral(folder: str | Path) -> Path:
    from transformers import (LlamaConfig, VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration,
                              WhisperFeatureExtractor)

    _seed()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tekken(folder / "tekken.json")
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=TINY_WINDOW_S)
    fe.save_pretrained(folder)  # preprocessor_config.json; the tokenizer is tekken.json
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "VoxtralProcessor"}))
    cfg = VoxtralConfig(
        audio_config=VoxtralEncoderConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                          num_attention_heads=2, num_mel_bins=80,
                                          max_source_positions=fe.nb_max_frames // 2),
        text_config=LlamaConfig(vocab_size=2000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=11,
                                tie_word_embeddings=False),
        audio_token_id=VOXTRAL_AUDIO_TOKEN,
    )
    model = VoxtralForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 11
    model.generation_config.bos_token_id = 1
    model.save_pretrained(folder)
    return folder


# ---- Qwen2.5-Omni thinker ---------------------------------------------------------------------

OMNI_SPECIALS = QWEN_SPECIALS + ["<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
OMNI_WINDOW_S = 8  # the tiny thinker hears 8 s per item (the real one: 300 s)


def build_omni(folder: str | Path) -> Path:
    """A thinker-only checkpoint (what voxtune trains) with a Qwen tokenizer carrying Omni's
    special-token attributes and a Whisper-style feature extractor."""
    from transformers import (Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration, Qwen2Tokenizer,
                              WhisperFeatureExtractor)

    _seed()
    folder = Path(folder)
    vocab, merges = _train_bpe(500, byte_level=True, special=OMNI_SPECIALS)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         extra_special_tokens={"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>",
                                               "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
                                               "vision_eos_token": "<|vision_eos|>", "audio_bos_token": "<|audio_bos|>",
                                               "audio_eos_token": "<|audio_eos|>"})
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=OMNI_WINDOW_S)
    ids = {t: tok.convert_tokens_to_ids(t) for t in OMNI_SPECIALS}
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config={"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128,
                      "num_mel_bins": 80, "max_source_positions": fe.nb_max_frames // 2, "n_window": 50,
                      "output_dim": 64},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "fullatt_block_indexes": [0]},
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]},
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"], vision_end_token_id=ids["<|vision_eos|>"],
    )
    model = Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    fe.save_pretrained(folder)
    return folder


FAMILIES = {
    "ctc": build_ctc,
    "seamless": build_seamless,
    "qwen2_audio": build_qwen2_audio,
    "voxtral": build_voxtral,
    "omni": build_omni,
}


def build(recipe_key: str, folder: str | Path) -> Path:
    return FAMILIES[recipe_key](folder)


# ==== 2026 families: the generic chat-template, seq2seq and CTC recipes ===========================

QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m.role != 'system' %}<|im_start|>system\n<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'audio' %}{{ audio_markup }}{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_chat_template(audio_markup: str) -> str:
    """Qwen's ChatML layout with one audio placeholder per audio item (as the released
    Qwen3-ASR / GLM-ASR / Audio Flamingo 3 templates render it)."""
    return QWEN_CHAT_TEMPLATE.replace("{{ audio_markup }}", audio_markup)


def _qwen_tok(specials: list[str], extra: dict | None = None, eos: str = "<|im_end|>"):
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(500, byte_level=True, special=specials)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token=eos, pad_token="<|endoftext|>",
                         extra_special_tokens=extra or {})
    tok.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in (eos, "<|endoftext|>")]})
    return tok


def _tiny_qwen3_text(vocab_size: int, eos: int, pad: int, **kw) -> dict:
    return dict({"model_type": "qwen3", "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
                 "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                 "max_position_embeddings": 4096, "eos_token_id": eos, "pad_token_id": pad,
                 "tie_word_embeddings": True}, **kw)


def _finish_lm(model, tok, folder: Path, processor) -> Path:
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- Qwen3-ASR --------------------------------------------------------------------------------

def build_qwen3_asr(folder: str | Path) -> Path:
    from transformers import Qwen3ASRConfig, Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    _seed()
    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>",
                "<asr_text>"]
    tok = _qwen_tok(specials, {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                               "audio_eos_token": "<|audio_end|>"})
    fe = Qwen3ASRFeatureExtractor(feature_size=128)
    processor = Qwen3ASRProcessor(feature_extractor=fe, tokenizer=tok,
                                  chat_template=qwen_chat_template("<|audio_start|><|audio_pad|><|audio_end|>"))
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Qwen3ASRConfig(
        audio_config={"model_type": "qwen3_asr_encoder", "d_model": 64, "encoder_layers": 2,
                      "encoder_attention_heads": 2, "encoder_ffn_dim": 128, "num_mel_bins": 128, "output_dim": 64,
                      "downsample_hidden_size": 16, "n_window": 50, "n_window_infer": 400},
        text_config=_tiny_qwen3_text(len(tok), ids["<|im_end|>"], ids["<|endoftext|>"]),
        audio_token_id=ids["<|audio_pad|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]])
    return _finish_lm(Qwen3ASRForConditionalGeneration(cfg), tok, folder, processor)


# ---- Granite Speech (with the speech LoRA adapter its checkpoints ship) -------------------------

GRANITE_TEMPLATE = (
    "{% for m in messages %}<|start_of_role|>{{ m.role }}<|end_of_role|>"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'audio' %}<|audio|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<|end_of_text|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)


def build_granite(folder: str | Path, *, shipped_adapter: bool = True) -> Path:
    """Like ibm-granite/granite-speech-3.3: conformer encoder + Q-Former projector + Granite LM,
    and (`shipped_adapter`) a LoRA adapter on the LM's q/v projections saved next to the weights
    (adapter_config.json + adapter_model.safetensors), which transformers loads with the model."""
    import torch
    from transformers import (GPT2TokenizerFast, GraniteSpeechConfig, GraniteSpeechFeatureExtractor,
                              GraniteSpeechForConditionalGeneration, GraniteSpeechProcessor)

    _seed()
    folder = Path(folder)
    specials = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>", "<|pad|>"]
    vocab, merges = _train_bpe(500, byte_level=True, special=specials)
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, unk_token=None, bos_token="<|end_of_text|>",
                            eos_token="<|end_of_text|>", pad_token="<|pad|>", add_prefix_space=False)
    tok.add_special_tokens({"additional_special_tokens": ["<|start_of_role|>", "<|end_of_role|>", "<|audio|>"]})
    fe = GraniteSpeechFeatureExtractor()
    processor = GraniteSpeechProcessor(audio_processor=fe, tokenizer=tok, chat_template=GRANITE_TEMPLATE)
    eos = tok.convert_tokens_to_ids("<|end_of_text|>")
    cfg = GraniteSpeechConfig(
        encoder_config={"input_dim": 160, "num_layers": 2, "hidden_dim": 64, "feedforward_mult": 2, "num_heads": 2,
                        "dim_head": 32, "output_dim": 16, "context_size": 50, "dropout": 0.0, "conv_kernel_size": 5},
        projector_config={"model_type": "blip_2_qformer", "hidden_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 128, "encoder_hidden_size": 64,
                          "cross_attention_frequency": 1},
        text_config={"model_type": "granite", "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 4096, "eos_token_id": eos, "bos_token_id": eos,
                     "pad_token_id": tok.pad_token_id, "tie_word_embeddings": True},
        audio_token_index=tok.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=shipped_adapter,
        downsample_rate=5, window_size=15)
    model = GraniteSpeechForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if shipped_adapter:
        from peft import LoraConfig, get_peft_model

        lm = GraniteSpeechForConditionalGeneration.from_pretrained(folder)
        peft = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=False))
        torch.manual_seed(1)
        peft.save_pretrained(folder)  # adapter_config.json + adapter_model.safetensors beside the model
        adapter_cfg = json.loads((folder / "adapter_config.json").read_text())
        adapter_cfg["base_model_name_or_path"] = str(folder)
        (folder / "adapter_config.json").write_text(json.dumps(adapter_cfg))
    return folder


# ---- GLM-ASR and Audio Flamingo 3: Whisper-style encoder + projector + LM, chunked by the processor -

def build_glmasr(folder: str | Path) -> Path:
    from transformers import GlmAsrConfig, GlmAsrForConditionalGeneration, GlmAsrProcessor, WhisperFeatureExtractor

    _seed()
    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_audio|>", "<|pad|>", "<|end_of_audio|>"]
    tok = _qwen_tok(specials)
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=TINY_WINDOW_S)
    processor = GlmAsrProcessor(feature_extractor=fe, tokenizer=tok, audio_token="<|pad|>", max_audio_len=12,
                                chat_template=qwen_chat_template("<|begin_of_audio|><|pad|><|end_of_audio|>"))
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = GlmAsrConfig(
        audio_config={"model_type": "glmasr_encoder", "hidden_size": 64, "intermediate_size": 256,
                      "num_hidden_layers": 2, "num_attention_heads": 2, "num_mel_bins": 128,
                      "max_position_embeddings": fe.nb_max_frames},
        text_config={"model_type": "llama", "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                     "max_position_embeddings": 4096, "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|im_start|>"],
                     "tie_word_embeddings": True},
        audio_token_id=ids["<|pad|>"])
    return _finish_lm(GlmAsrForConditionalGeneration(cfg), tok, folder, processor)


def build_audioflamingo3(folder: str | Path) -> Path:
    from transformers import (AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor,
                              WhisperFeatureExtractor)

    _seed()
    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"]
    tok = _qwen_tok(specials)
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=TINY_WINDOW_S)
    processor = AudioFlamingo3Processor(feature_extractor=fe, tokenizer=tok, audio_token="<sound>", max_audio_len=12,
                                        chat_template=qwen_chat_template("<sound>"))
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = AudioFlamingo3Config(
        audio_config={"model_type": "audioflamingo3_encoder", "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 2, "num_attention_heads": 2, "num_mel_bins": 128,
                      "max_source_positions": fe.nb_max_frames // 2},
        text_config={"model_type": "qwen2", "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 4096, "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": False},
        audio_token_id=ids["<sound>"])
    return _finish_lm(AudioFlamingo3ForConditionalGeneration(cfg), tok, folder, processor)


def _fast_bpe(specials: list[str], **tokens):
    """A PreTrainedTokenizerFast over a tiny byte-level BPE whose first ids are `specials`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train_bpe(400, byte_level=True, special=specials)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, **tokens)
    tok.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in tokens.values()]})
    return tok


# ---- Moonshine (encoder-decoder on raw audio) -------------------------------------------------

def build_moonshine(folder: str | Path) -> Path:
    from transformers import (MoonshineConfig, MoonshineForConditionalGeneration, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Processor)

    _seed()
    folder = Path(folder)
    tok = _fast_bpe(["<unk>", "<s>", "</s>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                                  return_attention_mask=True)
    processor = Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)
    cfg = MoonshineConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, encoder_num_hidden_layers=2,
                          decoder_num_hidden_layers=2, encoder_num_attention_heads=2, decoder_num_attention_heads=2,
                          max_position_embeddings=256, decoder_start_token_id=1, bos_token_id=1, eos_token_id=2,
                          pad_token_id=2)
    model = MoonshineForConditionalGeneration(cfg)
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 2
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- Parakeet CTC (FastConformer encoder + CTC head, lower-case sentencepiece-style vocabulary) -----

def build_parakeet_ctc(folder: str | Path) -> Path:
    """Like nvidia/parakeet-ctc-0.6b: its own lower-case vocabulary (no capitals, no punctuation)
    and head; the blank is the last id. Clean targets with capitals cannot be written with it, so
    the recipe puts a character head from the training texts in its place."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import (ParakeetCTCConfig, ParakeetFeatureExtractor, ParakeetForCTC, ParakeetProcessor,
                              PreTrainedTokenizerFast)

    _seed()
    folder = Path(folder)
    chars = sorted(set("".join(CORPUS).lower()) - {" "} - set(".,?!;:'\"0123456789"))
    vocab = {"<unk>": 0, "▁": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    vocab["<blank>"] = len(vocab)
    wl = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    wl.normalizer = normalizers.Replace(" ", "▁")
    wl.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    wl.decoder = decoders.Replace("▁", " ")
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="<unk>", pad_token="<blank>")
    fe = ParakeetFeatureExtractor(feature_size=80)
    processor = ParakeetProcessor(feature_extractor=fe, tokenizer=tok, blank_token="<blank>", decoder_type="ctc")
    cfg = ParakeetCTCConfig(
        encoder_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                        "conv_kernel_size": 3, "subsampling_conv_channels": 16, "num_mel_bins": 80, "dropout": 0.0,
                        "layerdrop": 0.0, "activation_dropout": 0.0, "attention_dropout": 0.0},
        vocab_size=len(vocab), pad_token_id=vocab["<blank>"])
    model = ParakeetForCTC(cfg)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- Gemma 3n (text + audio + vision towers; the vision tower is a timm model) ------------------

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'audio' %}<audio_soft_token>{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GEMMA_TEXT_VOCAB = 512  # ids >= this are multimodal soft tokens, as 262144 is in the real model


def build_gemma3n(folder: str | Path) -> Path:
    """Like google/gemma-3n-E2B-it with every width cut down: the audio conformer, a tiny timm
    vision model in the MobileNetV5's place (the speech path never runs it; needs timm), and a
    Gemma-style tokenizer whose image/audio soft tokens sit above the text vocabulary."""
    from transformers import (Gemma3nAudioFeatureExtractor, Gemma3nConfig, Gemma3nForConditionalGeneration,
                              Gemma3nProcessor)
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    _seed()
    folder = Path(folder)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_audio>",
                "<end_of_audio>", "<start_of_image>", "<end_of_image>"]
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train_bpe(400, byte_level=True, special=specials)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(t, special=True) for t in specials])

    def fill(upto: int) -> None:
        bpe.add_special_tokens([AddedToken(f"<unused{i}>", special=True) for i in range(bpe.get_vocab_size(), upto)])

    fill(GEMMA_TEXT_VOCAB)
    bpe.add_special_tokens([AddedToken("<image_soft_token>", special=True)])  # id 512: the vision offset
    fill(GEMMA_TEXT_VOCAB + 128)
    bpe.add_special_tokens([AddedToken("<audio_soft_token>", special=True)])  # id 640: the audio offset
    fill(GEMMA_TEXT_VOCAB + 256)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                              "eoi_token": "<end_of_image>", "audio_token": "<audio_soft_token>",
                              "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"})
    fe = Gemma3nAudioFeatureExtractor()
    ip = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    processor = Gemma3nProcessor(feature_extractor=fe, image_processor=ip, tokenizer=tok, chat_template=GEMMA_TEMPLATE,
                                 audio_seq_length=188, image_seq_length=4)
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    cfg = Gemma3nConfig(
        text_config={"model_type": "gemma3n_text", "vocab_size": len(tok), "vocab_size_per_layer_input": GEMMA_TEXT_VOCAB,
                     "hidden_size": 64, "hidden_size_per_layer_input": 8, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                     "num_kv_shared_layers": 0, "laurel_rank": 4, "altup_num_inputs": 2,
                     "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 64,
                     "activation_sparsity_pattern": [0.0, 0.0], "max_position_embeddings": 4096,
                     "pad_token_id": tok.pad_token_id, "eos_token_id": [tok.eos_token_id, eot],
                     "bos_token_id": tok.bos_token_id},
        audio_config={"model_type": "gemma3n_audio", "vocab_size": 128, "vocab_offset": GEMMA_TEXT_VOCAB + 128,
                      "input_feat_size": 128, "hidden_size": 64, "conf_num_attention_heads": 2,
                      "conf_num_hidden_layers": 2, "sscp_conv_channel_size": [16, 8], "conf_attention_chunk_size": 12,
                      "conf_attention_context_left": 13},
        vision_config={"model_type": "gemma3n_vision", "architecture": "test_vit", "hidden_size": 64,
                       "vocab_size": 128, "vocab_offset": GEMMA_TEXT_VOCAB, "label_names": ["x"]},
        audio_soft_tokens_per_image=188, vision_soft_tokens_per_image=4,
        audio_token_id=tok.convert_tokens_to_ids("<audio_soft_token>"),
        image_token_id=tok.convert_tokens_to_ids("<image_soft_token>"),
        boa_token_id=tok.convert_tokens_to_ids("<start_of_audio>"), eoa_token_id=tok.convert_tokens_to_ids("<end_of_audio>"),
        boi_token_id=tok.convert_tokens_to_ids("<start_of_image>"), eoi_token_id=tok.convert_tokens_to_ids("<end_of_image>"))
    model = Gemma3nForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = [tok.eos_token_id, eot]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

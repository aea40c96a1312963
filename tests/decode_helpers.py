"""Greedy Whisper decoding in Transformers and in faster-whisper (a CTranslate2 export), set up
so that both decode the same way, for tests that compare the two runtimes. English-only
(.en) vocabularies: the prefix carries no language or task token."""

from __future__ import annotations

from pathlib import Path

# Both sides decode the same way: prefix <|startoftranscript|><|notimestamps|> (an English-only
# vocabulary: no language/task tokens), greedy, no temperature fallback, no VAD, no quality
# filters that could drop a window, the generation config's suppress lists on both sides.
FW_GREEDY = dict(beam_size=1, best_of=1, temperature=0.0, without_timestamps=True, condition_on_previous_text=False,
                 no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None,
                 vad_filter=False, suppress_blank=True, suppress_tokens=[-1])
PREFIX_LEN = 2


def fw_max_new_tokens(n: int) -> int:
    """faster-whisper's max_new_tokens that lets CTranslate2 generate `n` tokens: CTranslate2's
    Whisper decodes at most max_length // 2 tokens (openai-whisper's sample_len = n_ctx // 2) and
    faster-whisper passes max_length = prompt length + max_new_tokens."""
    return 2 * n - PREFIX_LEN


def hf_greedy(folder: Path, audio, max_new_tokens: int) -> list[int]:
    """The Transformers model's own greedy tokens after the prefix, without <|endoftext|>."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(input_features=feats, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             return_timestamps=False)[0].tolist()
    start = model.config.decoder_start_token_id
    if ids and ids[0] == start:  # some versions return the prefix, some only the new tokens
        ids = ids[PREFIX_LEN:]
    return [t for t in ids if t != model.generation_config.eos_token_id]


WINDOW_SAMPLES = 30 * 16000


def pad_to_window(audio):
    """The clip followed by silence up to Whisper's 30 s window.

    Transformers (like openai-whisper) pads the waveform and computes the log-mel of the
    silence; faster-whisper computes the log-mel of the clip alone and pads the features with
    zeros, a different encoder input for any clip shorter than 30 s (whisper-tiny.en on the
    demo's short clips: WER 0.105 between the two runtimes, 0 with padded input). Padding
    the waveform first gives both runtimes the same input, so that a comparison measures the
    export, not the front ends."""
    import numpy as np

    return np.pad(audio, (0, max(0, WINDOW_SAMPLES - len(audio))))


def fw_greedy(folder: Path, audio, max_new_tokens: int | None, compute_type: str = "float32"):
    """faster-whisper's tokens and text for `audio` (padded to the 30 s window, see pad_to_window)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=1)
    segments, _ = model.transcribe(pad_to_window(audio), max_new_tokens=max_new_tokens, **FW_GREEDY)
    segments = list(segments)
    return [t for s in segments for t in s.tokens], "".join(s.text for s in segments)

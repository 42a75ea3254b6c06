"""Whisper's byte-level BPE tokenizer (the model's tokenizer.json, via the `tokenizers` package).

Special tokens are looked up by name. English transcription without timestamps is the only task:
    multilingual model:  [<|startoftranscript|>, <|en|>, <|transcribe|>, <|notimestamps|>]
    English-only model:  [<|startoftranscript|>, <|notimestamps|>]
English-only models (vocabulary < 51865, Whisper's own rule) have the language tokens in their
vocabulary but were never trained with them.
"""
from __future__ import annotations

from functools import cached_property


class WhisperTokenizer:
    def __init__(self, tokenizer_json: str, multilingual: bool):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError("the Whisper backbone needs the `tokenizers` package (pip install tokenizers)") from None
        self.json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        self.eot = self._id("<|endoftext|>")
        self.sot = self._id("<|startoftranscript|>")
        self.transcribe = self._id("<|transcribe|>")
        self.translate = self._id("<|translate|>")
        self.sot_lm = self._id("<|startoflm|>")
        self.sot_prev = self._id("<|startofprev|>")
        self.no_timestamps = self._id("<|notimestamps|>")
        nospeech = self._tok.token_to_id("<|nospeech|>")
        self.no_speech = nospeech if nospeech is not None else self._id("<|nocaptions|>")
        self.multilingual = multilingual
        self.timestamp_begin = self.no_timestamps + 1

    def _id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer has no {token} token: not a Whisper tokenizer")
        return i

    @property
    def prompt(self) -> list[int]:
        """English transcription, no timestamps."""
        lang = [self._id("<|en|>"), self.transcribe] if self.multilingual else []
        return [self.sot, *lang, self.no_timestamps]

    def prompt_with_previous(self, text: str, max_tokens: int) -> list[int]:
        """``<|startofprev|>``, the last ``max_tokens`` tokens of `` text``, then `prompt`: the decoder
        reads the text as what was said before (openai/whisper's ``initial_prompt``), which biases it
        towards those words and spellings."""
        previous = self.encode(" " + " ".join(text.split()))[-max_tokens:] if max_tokens > 0 else []
        return [self.sot_prev, *previous, *self.prompt]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i < self.eot])

    def token_bytes(self, i: int) -> str:
        """The text piece of one token (for splitting into words)."""
        return self._tok.decode([i]) if i < self.eot else ""

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of speaker tags, music notes and bracketed annotations (as Whisper suppresses them)."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        misc = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(misc):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in misc:
                    result.add(tokens[0])
        return tuple(sorted(result))

    @cached_property
    def suppress(self) -> tuple[int, ...]:
        """Never generated: non-speech symbols and the task/special tokens (faster-whisper's default)."""
        return tuple(sorted(set(self.non_speech_tokens) | {self.transcribe, self.translate, self.sot,
                                                          self.sot_prev, self.sot_lm, self.no_speech}))

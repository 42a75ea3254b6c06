"""The Whisper backbone (final pass): PyTorch model, CTranslate2 converter, decoding, per-caller adaptation.

See asr_core/WHISPER.md. Entry point: `WhisperRecognizer.load(path).transcribe(audio, sample_rate, params)`.
"""

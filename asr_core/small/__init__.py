"""The small streaming CTC model (the live partials' backbone and the model the deployment
meta-trains): model, checkpoint format, CTC decoding, recognizer, n-gram LM, training, decoder
tuning, meta-training and evaluation, and meta-training from customers (``caller_meta``).

See asr_core/MODEL_CARD.md. Entry point: ``Recognizer.load(path).transcribe(audio, sample_rate, params)``.
"""

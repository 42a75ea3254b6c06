"""asr_core: a framework-free PyTorch telephone-speech recognizer.

Imports nothing from Django, Channels, Celery, `callcenter` or `tasks`.
"""

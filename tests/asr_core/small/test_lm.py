from asr_core.small.lm import build_arpa, lexicon_words, training_text
from asr_core.small.recognizer import DEFAULT_LM_DIR


def _unigrams(path):
    out, section = {}, None
    for line in open(path):
        line = line.strip()
        if line.startswith("\\"):
            section = line
        elif section == "\\1-grams:" and line:
            parts = line.split("\t")
            out[parts[1]] = float(parts[0])
    return out


def test_arpa_unigrams_form_a_distribution_over_a_large_lexicon(tmp_path):
    words = lexicon_words({"hello"})
    assert len(words) > 30000 and "refund" in words and "hello" in words
    path = tmp_path / "lm.arpa"
    build_arpa(training_text(200, seed=1), words, str(path))
    uni = _unigrams(path)
    total = sum(10 ** p for w, p in uni.items() if w != "<s>")
    assert abs(total - 1.0) < 0.01
    assert uni["refund"] > uni["aardvark"]   # seen in the text vs. only in the lexicon


def test_shipped_lexicon_covers_unforeseen_words():
    lex = {line.split("\t")[0] for line in open(f"{DEFAULT_LM_DIR}/lexicon.txt")}
    for w in ("refrigerator", "warranty", "mortgage", "pharmacy", "insurance"):
        assert w in lex

import pytest

from asr_core.manifest import ManifestError, read_manifest, write_manifest


def test_round_trip_with_relative_paths(tmp_path):
    p = tmp_path / "m.tsv"
    write_manifest(str(p), [("s1", "train", "audio/a.wav", "hello there"), ("s2", "test", "b.flac", "yes")])
    rows = read_manifest(str(p))
    assert [r.speaker for r in rows] == ["s1", "s2"]
    assert rows[0].audio == str(tmp_path / "audio" / "a.wav")
    assert [r.text for r in read_manifest(str(p), ("test",))] == ["yes"]


def test_speakers_are_selected_by_a_regular_expression(tmp_path):
    p = tmp_path / "m.tsv"
    write_manifest(str(p), [("test0001", "test", "a.wav", "one"), ("testacc0001", "test", "b.wav", "two"),
                            ("testacc0002", "adapt", "c.wav", "three")])
    assert [r.text for r in read_manifest(str(p), speakers="^testacc")] == ["two", "three"]
    assert [r.text for r in read_manifest(str(p), ("test",), "acc")] == ["two"]
    assert read_manifest(str(p), speakers="nobody") == []
    with pytest.raises(ManifestError, match="bad speaker pattern '\\(': missing \\)"):
        read_manifest(str(p), speakers="(")


@pytest.mark.parametrize("content, message", [
    ("", "expected header"),
    ("speaker\tsplit\taudio\ttext\ns1\tbogus\ta.wav\thi\n", "split must be one of"),
    ("speaker\tsplit\taudio\ttext\ns1\ttrain\ta.wav\n", "expected 4 tab-separated fields"),
    ("speaker\tsplit\taudio\ttext\n\ttrain\ta.wav\thi\n", "empty speaker"),
])
def test_malformed_manifests(tmp_path, content, message):
    p = tmp_path / "m.tsv"
    p.write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(str(p))


def test_fields_with_tabs_are_refused(tmp_path):
    with pytest.raises(ManifestError, match="tab or newline"):
        write_manifest(str(tmp_path / "m.tsv"), [("s", "train", "a.wav", "bad\ttext")])


def test_empty_text_non_utf8_and_a_byte_order_mark(tmp_path):
    from asr_core.manifest import ManifestError, read_manifest
    (tmp_path / "a.wav").write_bytes(b"")
    empty = tmp_path / "empty.tsv"
    empty.write_text("speaker\tsplit\taudio\ttext\ns1\ttest\ta.wav\t \n")
    with pytest.raises(ManifestError, match=r"empty.tsv:2: empty text"):
        read_manifest(str(empty))
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("speaker\tsplit\taudio\ttext\ns1\ttest\ta.wav\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin.tsv: not UTF-8 text"):
        read_manifest(str(latin))
    bom = tmp_path / "bom.tsv"
    bom.write_bytes("\ufeffspeaker\tsplit\taudio\ttext\ns1\ttest\ta.wav\thello\n".encode("utf-8"))
    assert [u.text for u in read_manifest(str(bom))] == ["hello"]

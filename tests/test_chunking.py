from ragtune.chunking import chunk_document, split_sentences, whitespace_tokens
from ragtune.config import ChunkConfig
from ragtune.documents import Document


def test_sentence_split_keeps_abbreviations_and_all_text():
    text = "Dr. Smith went to Washington. He met Mr. Jones at 5 p.m. on Monday! Did it rain? Yes."
    sents = split_sentences(text)
    assert sents[0] == "Dr. Smith went to Washington."
    assert "".join(sents).replace(" ", "") == text.replace(" ", "")


def test_no_sentence_ends_inside_a_bracket_just_opened():
    """A date with its old-style twin was cut after "[O.S." and the reader answered "10" for a birth date."""
    text = "Tesla was born on 10 July [O.S. 28 June] 1856 into a Serb family. His father (see below.) was a priest."
    assert split_sentences(text) == [
        "Tesla was born on 10 July [O.S. 28 June] 1856 into a Serb family.",
        "His father (see below.) was a priest.",
    ]
    # a bracket closed before the stop does not hold the sentence open
    assert split_sentences("He left (for good.) Then it rained.") == ["He left (for good.)", "Then it rained."]


def test_a_markdown_heading_line_is_a_sentence_of_its_own():
    """A slide's title ran into its first sentence: "Nikola Tesla Tesla was ..." became an answer candidate."""
    text = "## Slide 1: Nikola Tesla\nTesla was renowned. He won.\n# Two\nMore text here"
    assert split_sentences(text) == ["## Slide 1: Nikola Tesla", "Tesla was renowned.", "He won.", "# Two",
                                     "More text here"]  # fmt: skip
    assert split_sentences("Item #1 is good. Next.") == ["Item #1 is good.", "Next."]


def test_chunks_respect_size_overlap_and_paragraphs():
    paras = [" ".join(f"Para{p} sentence{s} has some words here." for s in range(6)) for p in range(3)]
    doc = Document(id="d", text="\n\n".join(paras))
    cfg = ChunkConfig(chunk_tokens=30, overlap_tokens=6)
    chunks = chunk_document(doc, cfg, whitespace_tokens)
    assert [c.id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]
    for c in chunks:
        assert sum(whitespace_tokens([c.text])) <= 30
        # Where a chunk holds two paragraphs, the paragraph break is kept between them.
        for part in c.text.split("\n\n"):
            assert len({w[:5] for w in part.split() if w.startswith("Para")}) == 1
    # Every sentence is in some chunk, and consecutive chunks of one paragraph overlap by a sentence.
    all_sents = {s for p in paras for s in split_sentences(p)}
    assert all_sents <= {s for c in chunks for s in split_sentences(c.text)}
    same_para = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.text.split()[0][:5] == b.text.split()[0][:5]]
    assert same_para and all(split_sentences(a.text)[-1] == split_sentences(b.text)[0] for a, b in same_para)


def test_small_paragraphs_share_a_chunk_and_ids_are_stable():
    doc = Document(id="x", text="One short.\n\nTwo short.\n\nThree short.")
    chunks = chunk_document(doc, ChunkConfig(chunk_tokens=50, overlap_tokens=5), whitespace_tokens)
    assert len(chunks) == 1 and chunks[0].text == "One short.\n\nTwo short.\n\nThree short."
    assert chunk_document(doc, ChunkConfig(chunk_tokens=50, overlap_tokens=5), whitespace_tokens) == chunks


def test_overlong_sentence_is_cut():
    doc = Document(id="y", text=" ".join(["word"] * 100) + ".")
    chunks = chunk_document(doc, ChunkConfig(chunk_tokens=30, overlap_tokens=0), whitespace_tokens)
    assert all(whitespace_tokens([c.text])[0] <= 30 for c in chunks)
    assert sum(whitespace_tokens([c.text])[0] for c in chunks) == 100

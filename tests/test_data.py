import pytest
import torch

from tritonlab.data import (
    Vocab,
    default_genome_path,
    get_batch,
    iter_batches,
    load_encoded,
    load_sequence,
    split,
)

GENOME_START = "ATGGGCGAACGACGGGAATTGAACCCGCGATGGTGAATTCACAATCC"
SEQ = "ACGTTGCAAGGCTTAACCGGTTACGATCGATCGGGATTACA"  # 41 bases


def write(tmp_path, text, name="x.fa", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def wrap(seq, width):
    return "\n".join(seq[i : i + width] for i in range(0, len(seq), width))


# --- the real genome ----------------------------------------------------------------


def test_genome_loads_exactly():
    seq = load_sequence(default_genome_path())
    assert len(seq) == 154_478
    assert set(seq) == set("ACGT")
    assert seq.startswith(GENOME_START)


def test_default_genome_path_is_the_checkouts_data_folder():
    path = default_genome_path()
    assert path.name == "NC_000932.fasta" and path.parent.name == "data" and path.is_file()


# --- vocabulary ---------------------------------------------------------------------


def test_dna_vocab_is_sorted_bases():
    vocab = Vocab.dna()
    assert vocab.itos == ("A", "C", "G", "T")
    assert vocab.stoi == {"A": 0, "C": 1, "G": 2, "T": 3}
    assert len(vocab) == 4
    assert vocab.encode("ACGT").tolist() == [0, 1, 2, 3]
    assert vocab == Vocab.from_text("TTGCA") == Vocab(["A", "C", "G", "T"])


def test_encode_decode_round_trip():
    vocab = Vocab.dna()
    ids = vocab.encode(SEQ)
    assert ids.dtype == torch.long and ids.shape == (len(SEQ),)
    assert vocab.decode(ids) == SEQ
    assert vocab.decode(ids.tolist()) == SEQ


def test_encode_and_decode_reject_what_is_not_in_the_vocab():
    vocab = Vocab.dna()
    with pytest.raises(ValueError, match=r"'N' at index 2"):
        vocab.encode("ACNGT")
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([0, 4])
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([-1])


@pytest.mark.parametrize("itos,message", [(("A", "A"), "distinct, got 'AA'"), (("AB",), "single characters, got 'AB'"),
                                          ((), "at least one character")])
def test_vocab_rejects_bad_itos(itos, message):
    with pytest.raises(ValueError, match=message):
        Vocab(itos)


# --- FASTA and plain text -----------------------------------------------------------


def test_lowercase_is_upper_cased(tmp_path):
    path = write(tmp_path, ">r\n" + SEQ.lower()[:20] + "\n" + SEQ[20:] + "\n")
    assert load_sequence(path) == SEQ


def test_line_width_does_not_matter(tmp_path):
    ragged = "\n".join([SEQ[:3], SEQ[3:30], SEQ[30:31], SEQ[31:]])
    for i, body in enumerate([SEQ, wrap(SEQ, 7), wrap(SEQ, 10), ragged]):
        assert load_sequence(write(tmp_path, f">r\n{body}\n", f"{i}.fa")) == SEQ


def test_records_are_concatenated_in_file_order(tmp_path):
    path = write(tmp_path, f">one\n{SEQ[:10]}\n>two\n{wrap(SEQ[10:30], 6)}\n>three\n{SEQ[30:]}\n")
    assert load_sequence(path) == SEQ


def test_blank_lines_crlf_comments_and_inner_whitespace(tmp_path):
    text = (
        f"\n\n>r desc\n; a comment\n{SEQ[:10]}\n\n{SEQ[10:20]} \t{SEQ[20:25]}\n  \n{SEQ[25:]}\n\n"
    )
    for newline in ["\n", "\r\n", "\r"]:
        assert load_sequence(write(tmp_path, text, newline=newline)) == SEQ


def test_plain_text_dna(tmp_path):
    path = write(tmp_path, wrap(SEQ.lower(), 9) + "\n", "x.txt")
    assert load_sequence(path) == SEQ


@pytest.mark.parametrize("bad", list("NRYnx0-*."))
def test_bad_letter_names_file_line_and_char(tmp_path, bad):
    path = write(tmp_path, f">r\n\n{SEQ[:10]}\nAC{bad}GT\n", newline="\r\n")
    with pytest.raises(ValueError) as info:
        load_sequence(path)
    msg = str(info.value)
    assert str(path) in msg and "line 4, column 3" in msg and repr(bad) in msg


def test_drop_policy(tmp_path):
    path = write(tmp_path, f">r\n{SEQ[:10]}NNn\n-RY{SEQ[10:]}\n")
    assert load_sequence(path, unknown="drop") == SEQ


def test_map_to_a_base(tmp_path):
    path = write(tmp_path, ">r\nACNGT\nrA\n")
    assert load_sequence(path, unknown="map", map_to="G") == "ACGGTGA"
    assert load_sequence(path, unknown="map", map_to="t") == "ACTGTTA"


def test_map_to_random_is_reproducible(tmp_path):
    path = write(tmp_path, ">r\nAC" + "N" * 60 + "GT\n" + "Y" * 40 + "\n")
    seq = load_sequence(path, unknown="map")
    assert len(seq) == 104 and set(seq) <= set("ACGT")
    assert seq[:2] == "AC" and seq[62:64] == "GT"
    assert load_sequence(path, unknown="map", seed=0) == seq
    assert load_sequence(path, unknown="map", seed=1) != seq
    assert len(set(seq[2:62])) == 4  # uniform over A/C/G/T, not one base


def test_bad_options(tmp_path):
    path = write(tmp_path, f">r\n{SEQ}\n")
    with pytest.raises(ValueError, match="alphabet"):
        load_sequence(path, alphabet="protein")
    with pytest.raises(ValueError, match="unknown"):
        load_sequence(path, unknown="ignore")
    with pytest.raises(ValueError, match="map_to"):
        load_sequence(path, unknown="map", map_to="N")


def test_chars_mode_on_english(tmp_path):
    text = "To be, or not to be:\r\nthat is the question.\r\n"
    path = write(tmp_path, text, "x.txt")
    seq = load_sequence(path, alphabet="chars")
    assert seq == text.replace("\r\n", "\n")
    ids, vocab = load_encoded(path, alphabet="chars")
    assert vocab.itos == tuple(sorted(set(seq)))
    assert vocab.decode(ids) == seq


def test_chars_mode_on_protein_fasta(tmp_path):
    path = write(tmp_path, ">sp|P1\nMKTAyIAK\nQRQISF*\n>sp|P2\nMVLS PADK\n")
    ids, vocab = load_encoded(path, alphabet="chars")
    assert vocab.decode(ids) == "MKTAyIAKQRQISF*MVLSPADK"
    assert "".join(vocab.itos) == "*ADFIKLMPQRSTVy"


def test_load_encoded_dna(tmp_path):
    ids, vocab = load_encoded(write(tmp_path, f">r\n{SEQ}\n"))
    assert vocab == Vocab.dna() and vocab.decode(ids) == SEQ


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty"),
        (b"\n  \r\n\t\n", "only whitespace"),
        (b">one\n>two\n\n", "no sequence"),
        (b">r\nACGT\x00\x01\x02\n", "NUL"),
        (b">r\nAC\xff\xfeGT\n", "UTF-8"),
    ],
    ids=["empty", "whitespace", "header-only", "nul", "not-utf8"],
)
@pytest.mark.parametrize("alphabet", ["dna", "chars"])
def test_unreadable_files(tmp_path, content, reason, alphabet):
    path = tmp_path / "x.fa"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as info:
        load_sequence(path, alphabet=alphabet)
    assert str(path) in str(info.value)


def test_nothing_left_after_drop(tmp_path):
    path = write(tmp_path, ">r\nNNNN\n")
    with pytest.raises(ValueError, match="no A/C/G/T") as info:
        load_sequence(path, unknown="drop")
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.fa"
    with pytest.raises(FileNotFoundError, match="nope.fa"):
        load_sequence(path)


# --- split --------------------------------------------------------------------------


def test_split_is_a_contiguous_tail():
    data = torch.arange(100)
    train, val = split(data)
    assert len(train) == 90 and len(val) == 10
    assert torch.equal(torch.cat([train, val]), data)
    train, val = split(data, val_fraction=0.25)
    assert val.tolist() == list(range(75, 100))


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.1"])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split(torch.arange(100), val_fraction=fraction)


@pytest.mark.parametrize("n,fraction", [(1, 0.5), (4, 0.1), (4, 0.9)])
def test_split_rejects_an_empty_part(n, fraction):
    with pytest.raises(ValueError, match="empty"):
        split(torch.arange(n), val_fraction=fraction)


# --- batches ------------------------------------------------------------------------


def test_get_batch_shapes_and_shift():
    data = torch.arange(1000)
    x, y = get_batch(data, batch_size=8, seq_len=16)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # on arange data: y is the next id of every position
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(8, 16))  # contiguous windows
    assert x.min() >= 0 and y.max() <= 999


def test_get_batch_is_reproducible_with_a_generator():
    data = Vocab.dna().encode(SEQ * 10)
    x1, y1 = get_batch(data, 4, 12, generator=torch.Generator().manual_seed(7))
    x2, y2 = get_batch(data, 4, 12, generator=torch.Generator().manual_seed(7))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])


def test_get_batch_reaches_the_last_id():
    data = torch.arange(6)
    x, y = get_batch(data, batch_size=1, seq_len=5)  # only one window fits
    assert x.tolist() == [[0, 1, 2, 3, 4]] and y.tolist() == [[1, 2, 3, 4, 5]]


@pytest.mark.parametrize(
    "fn", [lambda d: get_batch(d, 2, 5), lambda d: list(iter_batches(d, 2, 5))], ids=["get", "iter"]
)
def test_too_short_data(fn):
    with pytest.raises(ValueError, match="at least 6"):
        fn(torch.arange(5))


def test_batch_argument_checks():
    with pytest.raises(ValueError, match="seq_len"):
        get_batch(torch.arange(10), 2, 0)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(torch.zeros(2, 10, dtype=torch.long), 2, 3)


def test_iter_batches_covers_the_data_in_order():
    data = torch.arange(23)
    batches = list(iter_batches(data, batch_size=2, seq_len=4))
    assert [x.shape for x, _ in batches] == [(2, 4), (2, 4), (1, 4)]
    x = torch.cat([x for x, _ in batches]).flatten()
    y = torch.cat([y for _, y in batches]).flatten()
    assert torch.equal(x, torch.arange(20)) and torch.equal(y, torch.arange(1, 21))

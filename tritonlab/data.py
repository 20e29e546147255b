"""Text data for character-level language models: FASTA or plain text in, tensors out.

    seq = load_sequence(default_genome_path())      # "ATGGGCGAAC..." (A/C/G/T only)
    vocab = Vocab.dna()                              # A C G T -> 0 1 2 3
    train, val = split(vocab.encode(seq), val_fraction=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(train, batch_size=32, seq_len=256, generator=g)  # y = x shifted by one
    for x, y in iter_batches(val, batch_size=32, seq_len=256): ...   # evaluation, in order

`load_encoded(path, alphabet)` loads, builds the vocabulary and encodes in one call;
with alphabet="chars" the vocabulary is the sorted set of the file's own characters
(protein FASTA, English text).
"""
from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "DNA_BASES",
    "Vocab",
    "default_genome_path",
    "load_sequence",
    "load_encoded",
    "split",
    "get_batch",
    "iter_batches",
]

DNA_BASES = "ACGT"
_BASE_SET = frozenset(DNA_BASES)
ALPHABETS = ("dna", "chars")
UNKNOWN_POLICIES = ("error", "drop", "map")


@dataclass(frozen=True)
class Vocab:
    """A character vocabulary: `itos[i]` is the character of id `i`, `stoi` the inverse.

    Encoding is exact (no case folding): `load_sequence` upper-cases DNA before it
    gets here, and a chars-mode vocabulary keeps case because "a" and "A" differ in
    English text.
    """

    itos: tuple[str, ...]
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        itos = tuple(self.itos)  # accept a list, e.g. one read back from a checkpoint
        bad = [s for s in itos if not isinstance(s, str) or len(s) != 1]
        if bad:
            raise ValueError(f"a Vocab holds single characters, got {bad[0]!r}")
        if len(set(itos)) != len(itos):
            raise ValueError(f"a Vocab's characters must be distinct, got {''.join(itos)!r}")
        if not itos:
            raise ValueError("a Vocab needs at least one character")
        object.__setattr__(self, "itos", itos)
        object.__setattr__(self, "stoi", {s: i for i, s in enumerate(itos)})

    @classmethod
    def dna(cls) -> Vocab:
        """A C G T -> 0 1 2 3, the sorted set of bases (the scratch collection's ids)."""
        return cls(tuple(DNA_BASES))

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """The sorted set of the characters of `text`."""
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """`text` as a 1-D int64 tensor of ids; a ValueError names any unknown character."""
        stoi = self.stoi
        try:
            return torch.tensor([stoi[c] for c in text], dtype=torch.long)
        except KeyError as e:
            i = text.index(e.args[0])
            raise ValueError(
                f"character {e.args[0]!r} at index {i} is not in the vocabulary "
                f"{''.join(self.itos)!r}"
            ) from None

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The string of a 1-D tensor or a list of ids."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects a 1-D tensor, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        n = len(self.itos)
        for i in ids:
            # Python would read a negative id from the end and hand back a wrong character.
            if not 0 <= i < n:
                raise ValueError(f"id {i} is out of range for a vocabulary of {n} characters")
        return "".join(self.itos[i] for i in ids)


def default_genome_path() -> Path:
    """The Arabidopsis chloroplast genome (NC_000932.1, 154,478 bp) in the checkout's
    `data/` folder, found next to the package (`tritonlab/../data`). It exists in a
    source checkout or an editable install, not in an installed wheel."""
    return Path(__file__).resolve().parent.parent / "data" / "NC_000932.fasta"


def load_sequence(
    path: str | Path,
    alphabet: str = "dna",
    unknown: str = "error",
    map_to: str = "random",
    seed: int = 0,
) -> str:
    """Read a FASTA or plain-text file and return its sequence as one string.

    Format: a file whose first non-blank line starts with ">" is FASTA. Its header
    (">") and comment (";") lines are skipped and the sequence lines of all records
    are concatenated in file order, with whitespace inside lines removed; any line
    width, blank lines, Windows or old-Mac line endings and a UTF-8 BOM are accepted.

    alphabet:
      "dna"   -- upper-cased A/C/G/T; a plain-text file is read the same way as FASTA
                 sequence lines (whitespace ignored). Encode with `Vocab.dna()`.
      "chars" -- every character is kept with its case; a plain-text file is returned
                 verbatim (line endings as "\\n"), so newlines and spaces are tokens.
                 Encode with `Vocab.from_text(seq)`. `unknown` does not apply.

    unknown: what to do with a letter that is not a DNA base (IUPAC codes such as N,
    R, Y, digits, "-", "*"):
      "error" -- (default) ValueError naming the file, the 1-based line and column in
                 the file, and the character;
      "drop"  -- leave it out;
      "map"   -- replace it: `map_to` is a base ("A"), or "random" for a base drawn
                 uniformly from A/C/G/T by a torch.Generator seeded with `seed`, one
                 draw per letter in file order, so a file and a seed always give the
                 same sequence.

    Raises FileNotFoundError for a missing file, and ValueError naming the file for an
    empty file, one without sequence, or a binary one (NUL bytes, not UTF-8).
    """
    if alphabet not in ALPHABETS:
        raise ValueError(f"alphabet must be one of {ALPHABETS}, got {alphabet!r}")
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    if unknown == "map" and map_to != "random" and (
        not isinstance(map_to, str) or map_to.upper() not in _BASE_SET
    ):
        raise ValueError(f"map_to must be one of A, C, G, T or 'random', got {map_to!r}")

    text = _read_text(path)
    lines = text.split("\n")
    fasta = _is_fasta(lines)
    if alphabet == "chars" and not fasta:
        return text
    if fasta:
        # Keep (line number, line) so errors point at the line in the original file.
        numbered = [
            (n, line) for n, line in enumerate(lines, 1) if not line.lstrip().startswith((">", ";"))
        ]
    else:
        numbered = list(enumerate(lines, 1))

    if alphabet == "chars":
        seq = "".join("".join(line.split()) for _, line in numbered)
    else:
        seq = _dna_sequence(path, numbered, unknown, map_to, seed)
    if not seq:
        if alphabet == "dna" and any(line.split() for _, line in numbered):
            raise ValueError(f"{path}: no A/C/G/T bases left after dropping unknown letters")
        raise ValueError(f"{path}: FASTA file has header lines but no sequence lines")
    return seq


def load_encoded(
    path: str | Path,
    alphabet: str = "dna",
    unknown: str = "error",
    map_to: str = "random",
    seed: int = 0,
) -> tuple[torch.Tensor, Vocab]:
    """`load_sequence` then encode: the 1-D int64 ids and the vocabulary that made
    them (`Vocab.dna()`, or in "chars" mode the sorted set of the sequence's characters)."""
    seq = load_sequence(path, alphabet, unknown=unknown, map_to=map_to, seed=seed)
    vocab = Vocab.dna() if alphabet == "dna" else Vocab.from_text(seq)
    return vocab.encode(seq), vocab


def split(data: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val): the last `round(len * val_fraction)` ids are the validation part.

    A contiguous tail rather than random positions, so no training window overlaps the
    validation text. Both parts are views of `data`.
    """
    _check_1d(data, "split")
    is_number = isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
    if not (is_number and 0 < val_fraction < 1):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    n = len(data)
    n_val = round(n * val_fraction)
    if n_val == 0 or n_val == n:
        raise ValueError(
            f"split of {n} ids with val_fraction={val_fraction} leaves "
            f"{'validation' if n_val == 0 else 'training'} part empty; use more data or "
            f"another val_fraction"
        )
    return data[: n - n_val], data[n - n_val :]


def get_batch(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` windows at random start positions: x is (batch_size, seq_len) and
    y is x shifted by one (the next character of every position), both on data's device.

    Starts are drawn with `generator` (torch's global generator when None) on the
    generator's device, so a seeded CPU generator gives the same batches for data on
    any device.
    """
    _check_1d(data, "get_batch")
    batch_size = _positive_int(batch_size, "batch_size")
    seq_len = _positive_int(seq_len, "seq_len")
    _check_long_enough(data, seq_len)
    device = generator.device if generator is not None else "cpu"
    starts = torch.randint(
        len(data) - seq_len, (batch_size,), generator=generator, device=device
    ).to(data.device)
    idx = starts[:, None] + torch.arange(seq_len, device=data.device)
    return data[idx], data[idx + 1]


def iter_batches(
    data: torch.Tensor, batch_size: int, seq_len: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows in order, for evaluation: (x, y) as in `get_batch`.

    Window k has x = data[k*seq_len : (k+1)*seq_len], so every id after the first is a
    target exactly once, except a final remainder shorter than seq_len, which is left
    out. The last batch may hold fewer than `batch_size` windows.
    """
    _check_1d(data, "iter_batches")
    batch_size = _positive_int(batch_size, "batch_size")
    seq_len = _positive_int(seq_len, "seq_len")
    _check_long_enough(data, seq_len)
    n = (len(data) - 1) // seq_len
    x = data[: n * seq_len].reshape(n, seq_len)
    y = data[1 : n * seq_len + 1].reshape(n, seq_len)
    for i in range(0, n, batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def _read_text(path: str | Path) -> str:
    """The file's text with line endings as "\\n"; ValueError if empty or binary."""
    raw = Path(path).read_bytes()  # FileNotFoundError carries the path
    if not raw:
        raise ValueError(f"{path}: file is empty")
    if b"\0" in raw:
        raise ValueError(f"{path}: contains NUL bytes; this looks like a binary file, not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not valid UTF-8 text (byte {e.start}); is it a binary or compressed file?"
        ) from None
    if not text.strip():
        raise ValueError(f"{path}: contains only whitespace, no sequence")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _is_fasta(lines: list[str]) -> bool:
    first = next(line for line in lines if line.strip())  # _read_text ruled out all-blank
    return first.lstrip().startswith(">")


def _dna_sequence(path, numbered, unknown: str, map_to: str, seed: int) -> str:
    """Upper-cased bases of the numbered lines, with `unknown` applied to the rest."""
    not_bases = str.maketrans("", "", DNA_BASES)
    # With map_to="random" an unknown letter becomes "\0" (never in text: _read_text
    # rejects NUL) and all of them are drawn at the end in one call, in file order.
    if unknown == "error":
        replacement = None
    elif unknown == "drop":
        replacement = ""
    else:
        replacement = "\0" if map_to == "random" else map_to.upper()
    parts = []
    for n, line in numbered:
        s = "".join(line.split()).upper()
        if not s.translate(not_bases):  # fast path: only bases
            parts.append(s)
            continue
        # Slow path, per character of the original line, so the error can report the
        # column and the character as written in the file.
        for col, ch in enumerate(line, 1):
            if ch.isspace():
                continue
            base = ch.upper()
            if base in _BASE_SET:
                parts.append(base)
            elif replacement is None:
                raise ValueError(
                    f"{path}: line {n}, column {col}: {ch!r} is not a DNA base (A, C, G, T); "
                    f"pass unknown='drop' or unknown='map' (tritonlab train --unknown drop|map) to accept "
                    f"such letters, or alphabet='chars' (--alphabet chars) for text that is not DNA"
                )
            else:
                parts.append(replacement)
    seq = "".join(parts)
    if "\0" in seq:
        pieces = seq.split("\0")
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randint(len(DNA_BASES), (len(pieces) - 1,), generator=generator).tolist()
        seq = "".join(p + DNA_BASES[d] for p, d in zip(pieces, draws)) + pieces[-1]
    return seq


def _check_1d(data, fn: str) -> None:
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{fn} expects a 1-D tensor of ids, got {type(data).__name__}")
    if data.dim() != 1:
        raise ValueError(f"{fn} expects a 1-D tensor of ids, got shape {tuple(data.shape)}")


def _positive_int(value, name: str) -> int:
    value = operator.index(value)  # TypeError for floats and other non-integers
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _check_long_enough(data: torch.Tensor, seq_len: int) -> None:
    # A window needs seq_len inputs plus one more id for the last target.
    if len(data) < seq_len + 1:
        raise ValueError(
            f"data holds {len(data)} ids but seq_len={seq_len} needs at least "
            f"{seq_len + 1} (seq_len inputs plus the next id as the last target)"
        )

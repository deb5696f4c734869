"""Where a text is cut into chunks (``fold_chunks``): never inside what a terminal does not
show. That a text folded a chunk at a time folds as it does whole is ``test_folding_work``'s."""

from __future__ import annotations

from labelgate.classify import fold_chunks, folding


def test_the_sequences_no_cut_falls_in_are_the_terminals() -> None:
    # ``chunk_cuts`` reads ``TERMINAL_SEQUENCES``' escape sequences in bytes: kept the same.
    assert folding.TERMINAL_SEQUENCES.pattern == fold_chunks._ESCAPE_SEQUENCES.decode() + r"|[^\x08]\x08"

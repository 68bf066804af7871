"""The shared corpus of real-world messages, read from MAILHUB_CORPUS_DIR or ../shared/corpus."""
import os
from pathlib import Path

import pytest

DEFAULT_CORPUS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def corpus_dir():
    return Path(os.environ.get("MAILHUB_CORPUS_DIR", DEFAULT_CORPUS_DIR))


def corpus_files():
    """Return the corpus's .eml files sorted by name, or an empty list where it is absent."""
    folder = corpus_dir()
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.eml"))


def to_crlf(raw):
    """Return the bytes with every line end (CRLF, bare LF, bare CR) made CRLF, as SMTP sends them."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def corpus_params():
    """Parametrize values: one per corpus file, or one skipped value that says why."""
    files = corpus_files()
    if not files:
        reason = f"corpus folder {corpus_dir()} is absent; set MAILHUB_CORPUS_DIR to run these tests"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    return [pytest.param(path, id=path.name) for path in files]

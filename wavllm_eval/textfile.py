"""Reading the corpora's text files: UTF-8 or one clear error naming the file, line and byte.

Released transcripts, trial lists, yaml segment lists and manifests are UTF-8 (a BOM is accepted);
a file in another encoding (a manifest re-saved as Latin-1 or UTF-16 by an editor) is a user
mistake, answered with its location rather than a UnicodeDecodeError traceback.
"""

from __future__ import annotations

from pathlib import Path

from wavllm_eval.errors import InputError


def read_text(path: Path) -> str:
    """The whole file as text (BOM stripped, line endings kept)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError as exc:
        raise InputError(path, "is a folder, not a text file", "point at the file itself") from exc
    except FileNotFoundError as exc:
        raise InputError(path, "not found", "check the path") from exc
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})", "check the file and its permissions") from exc
    if data.startswith(b"\xff\xfe") or data.startswith(b"\xfe\xff"):
        raise InputError(path, "is UTF-16 text", "re-save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                         "re-save the file as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)") from exc


def read_lines(path: Path) -> list[str]:
    """Lines without their endings (\\n, \\r\\n or \\r)."""
    return read_text(path).splitlines()

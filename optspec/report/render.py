"""``optspec report``: the HTML page or the Markdown summary of a study.db, written to a file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from optspec.errors import UsageError

if TYPE_CHECKING:
    import optuna

FORMATS = ("html", "md")


def render(study: optuna.Study, fmt: str, source: str | os.PathLike[str]) -> str:
    """The report of ``study`` (read from ``source``) as text in ``fmt``."""
    if fmt == "md":
        from optspec.report.markdown import markdown_summary

        return markdown_summary(study, output=Path(source).parent)
    from optspec.report.html import build_html

    return build_html(study, os.fspath(source))


def report(
    path: str | os.PathLike[str],
    *,
    fmt: str = "html",
    output: str | os.PathLike[str] | None = None,
) -> Path | None:
    """Write the report of the study in ``path`` to ``output`` (default: ``report.html`` or
    ``report.md`` next to it; ``-`` is standard output). Returns the file written."""
    from optspec.report.results import open_study_file

    study = open_study_file(path)
    text = render(study, fmt, path)
    if output is not None and os.fspath(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    target = Path(output) if output is not None else Path(path).with_name(f"report.{fmt}")
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"-o {target}: cannot write it: {exc.strerror or exc}") from None
    return target

"""Class-name lists and prompt templates.

Owns: reading class names from a bundled set (``kinetics400``, ``ucf101``, ``hmdb51``, ``activitynet200``), a CSV
with an ``id,name`` header (the Text4Vis format) or a text file with one name per line; checking prompt templates.
Imports: the standard library only (torch-free).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from vtc_deploy.errors import LabelError

BUNDLED = ("kinetics400", "ucf101", "hmdb51", "activitynet200")
DEFAULT_TEMPLATES: tuple[str, ...] = ("a video of a person {}.",)
PLACEHOLDER = "{}"


def load_class_names(source: str | Path) -> tuple[str, ...]:
    """Class names in index order from a bundled set name, a ``.csv`` (``id,name``) or a text file."""
    text_source = str(source)
    if text_source in BUNDLED and not Path(text_source).exists():
        data = resources.files("vtc_deploy").joinpath("data", "labels", f"{text_source}.csv").read_text("utf-8")
        return _parse_csv(data, f"<bundled {text_source}>")
    path = Path(text_source)
    if not path.exists():
        raise LabelError(
            f"class list not found; give a file (.csv with id,name or .txt with one name per line) "
            f"or one of {', '.join(BUNDLED)}",
            path=path,
        )
    if not path.is_file():
        raise LabelError("class list is not a file", path=path)
    try:
        data = path.read_text("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"class list is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    if path.suffix.lower() == ".csv":
        return _parse_csv(data, str(path))
    return _check_names([line.strip() for line in data.splitlines() if line.strip()], str(path))


def resolve_class_names(classes: str | Path | Sequence[str]) -> tuple[str, ...]:
    """Class names from a list source (``load_class_names``) or given directly, checked either way."""
    if isinstance(classes, (str, Path)):
        return load_class_names(classes)
    return _check_names([str(c) for c in classes], "<class list>")


def _parse_csv(data: str, where: str) -> tuple[str, ...]:
    try:
        rows = list(csv.reader(io.StringIO(data, newline="")))
    except csv.Error as exc:
        raise LabelError(f"not a readable CSV: {exc}", path=where) from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise LabelError("class list is empty", path=where)
    header = [h.strip().lower() for h in rows[0]]
    if "name" not in header:
        raise LabelError(f"CSV header has no 'name' column (found: {', '.join(rows[0]) or 'nothing'})", path=where)
    name_col = header.index("name")
    id_col = header.index("id") if "id" in header else None
    by_id: dict[int, str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) <= max(name_col, id_col if id_col is not None else 0):
            raise LabelError(f"line {line_no} has {len(row)} fields, expected {len(header)}", path=where)
        name = row[name_col].strip()
        if id_col is None:
            idx = len(by_id)
        else:
            try:
                idx = int(row[id_col])
            except ValueError:
                raise LabelError(f"line {line_no}: id {row[id_col]!r} is not an integer", path=where) from None
            if idx in by_id:
                raise LabelError(f"line {line_no}: duplicate id {idx}", path=where)
        by_id[idx] = name
    if not by_id:
        raise LabelError("class list is empty (header only)", path=where)
    expected = list(range(len(by_id)))
    if sorted(by_id) != expected:
        missing = sorted(set(expected) - set(by_id))[:5]
        raise LabelError(f"ids must be 0..{len(by_id) - 1} without gaps; missing {missing}", path=where)
    return _check_names([by_id[i] for i in expected], where)


def _check_names(names: Sequence[str], where: str) -> tuple[str, ...]:
    if not names:
        raise LabelError("class list is empty", path=where)
    for i, name in enumerate(names):
        if not name:
            raise LabelError(f"class {i} has an empty name", path=where)
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise LabelError(f"duplicate class name {name!r} (ids {seen[name]} and {i})", path=where)
        seen[name] = i
    return tuple(names)


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Prompt templates, each with exactly one ``{}`` where the class name goes."""
    if not templates:
        raise LabelError("at least one prompt template is needed, e.g. 'a video of a person {}.'")
    for t in templates:
        if t.count(PLACEHOLDER) != 1:
            raise LabelError(f"prompt template {t!r} must contain exactly one '{{}}' for the class name")
    return tuple(templates)


def fill_template(template: str, name: str) -> str:
    """The prompt for one class (plain substitution: class names are never interpreted as format strings)."""
    return template.replace(PLACEHOLDER, name)

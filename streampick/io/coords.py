"""Pick files: the pipeline's output for RELION, cryoSPARC, Topaz and EMAN users, and its input of
labelled coordinates for training and evaluation.

Writers: a RELION STAR file per micrograph (:func:`write_star`, named by :func:`star_path`), one combined
STAR file (:func:`write_combined_star`), a Topaz-style table (:func:`write_table`) and an EMAN ``.box`` file
(:func:`write_box`).  Every writer is atomic (see :mod:`streampick.io.atomic`), so a program reading the
output directory never sees half a file.  :func:`read_coordinates` reads all of these back into
:class:`~streampick.picks.Picks`, and the pick files of other tools: RELION 3.0 and 3.1+ STAR (with optics
blocks), cryoSPARC ``.cs``, crYOLO ``.cbox`` and ``.box``, Topaz tables and CSV with an x/y header.

All coordinates are particle centres in the original micrograph's pixels: x = column, y = row of the image
array.  EMAN ``.box`` and crYOLO ``.cbox`` files store a corner (centre - box/2) and cryoSPARC fractions of
the micrograph's width and height; the conversions happen here.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from streampick.errors import CoordinateFileError
from streampick.io.atomic import atomic_write_text
from streampick.io.names import micrograph_key
from streampick.picks import Picks

_X, _Y, _FOM, _NAME = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
_TABLE_HEADER = ("image_name", "x_coord", "y_coord", "score")
_CSV_X = ("x", "x-coordinate", "x_coord")
_CSV_Y = ("y", "y-coordinate", "y_coord")
_CSV_SCORE = ("score", "confidence")
_NO_SCORE = -999.0  # what crYOLO, CASSPER and RELION's manual picking write as the figure of merit: none
_NUMPY_MAGIC = b"\x93NUMPY"
_CS_X, _CS_Y = "location/center_x_frac", "location/center_y_frac"
_CS_SHAPE, _CS_PATH = "location/micrograph_shape", "location/micrograph_path"
_CS_SCORES = ("pick_stats/ncc_score",)
_CRYOSPARC_PREFIX = re.compile(r"^\d{17,21}_")  # cryoSPARC's uid prefix on imported and derived file names


# ---------------------------------------------------------------------------------------------- writers


def star_path(micrograph: str | Path, out_dir: str | Path, suffix: str = "autopick") -> Path:
    """Where RELION expects the per-micrograph pick file of ``micrograph``.

    Args:
        micrograph: The micrograph's path or name.
        out_dir: The directory of pick files.
        suffix: RELION's coordinate suffix.

    Returns:
        ``out_dir/<micrograph stem>_<suffix>.star``.
    """
    return Path(out_dir) / f"{Path(micrograph).stem}_{suffix}.star"


def format_star(picks: Picks) -> str:
    """The text of a RELION per-micrograph STAR file (as RELION's autopick writes: a ``data_`` block).

    Coordinates are written with 2 decimals, scores exactly (``nan`` for picks without a score).  Empty picks
    give a valid file with the header and no rows.

    Args:
        picks: The picks of one micrograph.

    Returns:
        The file's text.
    """
    return _star_header((_X, _Y, _FOM)) + "".join(f"{row}\n" for row in _pick_rows(picks, " "))


def write_star(path: str | Path, picks: Picks) -> None:
    """Write :func:`format_star` of ``picks`` to ``path`` atomically.

    Args:
        path: The STAR file (see :func:`star_path`); parent directories are created.
        picks: The picks of one micrograph.

    Raises:
        OSError: The file cannot be written; an existing file is then left intact.
    """
    atomic_write_text(path, format_star(picks))


def write_combined_star(path: str | Path, items: Iterable[tuple[str, Picks]]) -> None:
    """Write the picks of many micrographs as one STAR loop with a ``_rlnMicrographName`` column.

    A micrograph without picks contributes no row, so it does not appear in the file.

    Args:
        path: The STAR file; parent directories are created.
        items: ``(micrograph name, picks)`` pairs; the name is written as given.

    Raises:
        CoordinateFileError: A micrograph name is empty or contains whitespace.
        OSError: The file cannot be written; an existing file is then left intact.
    """
    lines = [_star_header((_NAME, _X, _Y, _FOM))]
    for name, picks in items:
        _check_name(path, name)
        lines.extend(f"{row}\n" for row in _pick_rows(picks, f"{name} "))
    atomic_write_text(path, "".join(lines))


def write_table(path: str | Path, items: Iterable[tuple[str, Picks]]) -> None:
    """Write a Topaz-style tab-separated table ``image_name x_coord y_coord score``.

    ``image_name`` is the micrograph's stem, as Topaz writes it.  Topaz writes integer coordinates; this
    table keeps 2 decimals (Topaz and pandas read them as numbers all the same).  A micrograph without
    picks contributes no row.

    Args:
        path: The table file; parent directories are created.
        items: ``(micrograph name or path, picks)`` pairs.

    Raises:
        CoordinateFileError: A micrograph stem is empty or contains whitespace.
        OSError: The file cannot be written; an existing file is then left intact.
    """
    lines = ["\t".join(_TABLE_HEADER) + "\n"]
    for name, picks in items:
        stem = Path(name).stem
        _check_name(path, stem)
        lines.extend(f"{row}\n" for row in _pick_rows(picks, f"{stem}\t", sep="\t", aligned=False))
    atomic_write_text(path, "".join(lines))


def write_box(path: str | Path, picks: Picks, box_size: int) -> None:
    """Write an EMAN ``.box`` file: one ``x0 y0 box box`` line per pick, tab-separated.

    ``(x0, y0)`` is the box's lower-left corner, centre - box/2 rounded to the nearest integer; the real
    box size is written (Topaz's zero-sized boxes are a known bug).  Scores are not stored.

    Args:
        path: The ``.box`` file; parent directories are created.
        picks: The picks of one micrograph.
        box_size: Box edge in pixels of the same micrograph.

    Raises:
        ValueError: ``box_size`` is not a positive integer.
        OSError: The file cannot be written; an existing file is then left intact.
    """
    if isinstance(box_size, bool) or not isinstance(box_size, (int, np.integer)) or box_size <= 0:
        raise ValueError(f"box_size must be a positive integer, got {box_size!r}")
    box = int(box_size)
    x0 = np.rint(picks.x - box / 2).astype(np.int64).tolist()
    y0 = np.rint(picks.y - box / 2).astype(np.int64).tolist()
    atomic_write_text(path, "".join(f"{x}\t{y}\t{box}\t{box}\n" for x, y in zip(x0, y0)))


def _star_header(columns: tuple[str, ...]) -> str:
    labels = "".join(f"_{name} #{i}\n" for i, name in enumerate(columns, start=1))
    return f"\ndata_\n\nloop_\n{labels}"


def _pick_rows(picks: Picks, prefix: str, sep: str = " ", aligned: bool = True) -> list[str]:
    """``x y score`` per pick: x, y with 2 decimals, the score exactly (the shortest text that reads back as the
    same float), so a threshold chosen at a pick's score selects the same picks from the file as in memory."""
    xy, sc = ("10.2f", ">12") if aligned else (".2f", "")
    return [
        f"{prefix}{x:{xy}}{sep}{y:{xy}}{sep}{s!r:{sc}}"
        for x, y, s in zip(picks.x.tolist(), picks.y.tolist(), picks.score.tolist())
    ]


def _check_name(path: str | Path, name: str) -> None:
    if not name or any(c.isspace() for c in name):
        raise CoordinateFileError(f"{path}: micrograph name {name!r} is empty or contains whitespace")


# ---------------------------------------------------------------------------------------------- reader


def read_coordinates(path: str | Path) -> dict[str, Picks]:
    """Read a pick file into ``{micrograph key: Picks}``.

    The format is told by extension, else by content:

    * RELION STAR (``.star``, or text starting with ``data_``; read with the ``starfile`` package), 3.0 or
      3.1+ (the loop with ``_rlnCoordinateX/Y`` is used; a ``data_optics`` block is skipped).  A file with
      ``_rlnMicrographName`` is keyed by each name (:func:`~streampick.io.names.micrograph_key`: folder and
      image suffix dropped); a per-micrograph file by its own stem, suffix included (``mic_001_autopick``):
      matching it to a micrograph is the caller's job (:func:`~streampick.io.names.match_name`).  A figure of
      merit of -999 in every row (crYOLO, CASSPER, manual picking) means no scores.
    * cryoSPARC ``.cs`` (a numpy structured array): ``location/center_x_frac`` × width and
      ``location/center_y_frac`` × height, the shape from ``location/micrograph_shape`` (height, width),
      keyed by ``location/micrograph_path`` (cryoSPARC's numeric uid prefix dropped); scores from
      ``pick_stats/ncc_score`` when present.
    * crYOLO ``.cbox`` (STAR-style, crYOLO ≥ 1.8: ``_CoordinateX/Y`` corner, ``_Width``, ``_Height``,
      ``_Confidence``; or the older whitespace columns ``x0 y0 w h confidence``), keyed by the file stem.
    * Topaz table (header with ``image_name x_coord y_coord`` and optional ``score``; tab or whitespace
      separated), keyed by ``image_name``.
    * EMAN / crYOLO ``.box`` (``x0 y0 width height`` per line; centre = corner + size/2), keyed by the stem.
    * CSV (``.csv``, or a comma in the first line) with a header naming ``x,y`` or
      ``X-Coordinate,Y-Coordinate`` and optionally ``score``, keyed by the file stem.

    Picks without scores get NaN scores.

    Args:
        path: The pick file.

    Returns:
        Picks per micrograph key, in order of first appearance.

    Raises:
        CoordinateFileError: The file is missing, unreadable, of unknown format, or has a line or value
            that cannot be parsed; the one-line message names the file and the line or column at fault.
    """
    path = Path(path)
    if path.suffix.lower() == ".cs" or _starts_with(path, _NUMPY_MAGIC):
        return _read_cs(path)
    text = _read_text(path)
    kind = _sniff(path, text)
    if kind == "star":
        return _read_star(path)
    if kind == "cbox":
        return _read_cbox(path, text)
    return _TEXT_READERS[kind](path, text)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(len(magic)) == magic
    except OSError:
        return False  # reading the text reports it


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CoordinateFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CoordinateFileError(f"{path}: not a text file (not UTF-8)") from None
    except OSError as err:
        raise CoordinateFileError(f"{path}: cannot read ({err.strerror or err})") from None


def _data_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of every line that is neither blank nor a ``#`` comment."""
    lines = ((n, line.strip()) for n, line in enumerate(text.splitlines(), start=1))
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _sniff(path: Path, text: str) -> str:
    ext = path.suffix.lower()
    lines = _data_lines(text)
    first = lines[0][1] if lines else ""
    if ext == ".cbox" or (first.startswith("data_") and any(line.startswith("_CoordinateX") for _, line in lines)):
        return "cbox"
    if ext == ".star" or first.startswith("data_"):
        return "star"
    if ext == ".box":
        return "box"
    if ext == ".csv" or "," in first:
        return "csv"
    if "image_name" in first.split():
        return "table"
    if len(first.split()) >= 4 and all(_is_number(cell) for cell in first.split()):
        return "box"
    if not first:
        raise CoordinateFileError(f"{path}: empty file; cannot tell its coordinate format")
    raise CoordinateFileError(
        f"{path}: unrecognised coordinate format (expected RELION STAR, a Topaz table, EMAN .box "
        "or CSV with an x,y header; cryoSPARC .cs and crYOLO .cbox by their extension)")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(path: Path, where: str, cell: str, *, finite: bool = True) -> float:
    """``cell`` as a float, or a CoordinateFileError naming ``where`` (line and column)."""
    try:
        value = float(cell)
    except ValueError:
        raise CoordinateFileError(f"{path}: {where}: {cell!r} is not a number") from None
    if finite and not np.isfinite(value):
        raise CoordinateFileError(f"{path}: {where}: {cell!r} is not a finite coordinate")
    return value


def _read_star(path: Path) -> dict[str, Picks]:
    blocks = _star_blocks(path)
    table = next((b for b in blocks.values() if hasattr(b, "columns") and {_X, _Y} <= set(b.columns)), None)
    if table is None:
        if any(hasattr(b, "columns") and "rlnMicrographCoordinates" in b.columns for b in blocks.values()):
            raise CoordinateFileError(f"{path}: a RELION list of coordinate files (_rlnMicrographCoordinates), "
                                      "not picks: pass the *_autopick.star files it lists")
        raise CoordinateFileError(f"{path}: no STAR loop with _{_X} and _{_Y} columns")
    x = _star_column(path, table, _X)
    y = _star_column(path, table, _Y)
    score = _star_column(path, table, _FOM, finite=False) if _FOM in table.columns else None
    if score is not None and len(score) and (score == _NO_SCORE).all():
        score = None
    if _NAME not in table.columns:
        return {path.stem: Picks.from_arrays(x, y, score)}
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(table[_NAME].astype(str).tolist()):
        groups.setdefault(micrograph_key(name), []).append(row)
    return {
        key: Picks.from_arrays(x[rows], y[rows], None if score is None else score[rows])
        for key, rows in groups.items()
    }


def _star_blocks(path: Path) -> dict:
    try:
        import starfile
    except ImportError:
        raise CoordinateFileError(
            f"{path}: reading STAR files needs the 'starfile' package (pip install starfile)") from None
    try:
        return starfile.read(path, always_dict=True)
    except Exception as err:  # noqa: BLE001 - starfile and pandas raise many types for malformed text
        raise CoordinateFileError(f"{path}: not a readable STAR file ({_first_line(err)})") from None


def _read_cbox(path: Path, text: str) -> dict[str, Picks]:
    """crYOLO ``.cbox``: the ``data_cryolo`` loop (corner, width, height, confidence), or old plain columns."""
    if not any(line.startswith("data_") for _, line in _data_lines(text)):
        return _read_box(path, text, score_column=4)
    blocks = _star_blocks(path)
    table = next((b for b in blocks.values() if hasattr(b, "columns") and {"CoordinateX", "CoordinateY"}
                  <= set(b.columns)), None)
    if table is None:
        raise CoordinateFileError(f"{path}: no crYOLO loop with _CoordinateX and _CoordinateY columns")
    missing = [name for name in ("Width", "Height") if name not in table.columns]
    if missing:
        raise CoordinateFileError(f"{path}: crYOLO loop lacks _{' and _'.join(missing)} (the box size: "
                                  "_CoordinateX/Y are the box corner)")
    if "CoordinateZ" in table.columns and np.isfinite(_star_column(path, table, "CoordinateZ", finite=False)).any():
        raise CoordinateFileError(f"{path}: 3-D (tomogram) picks with _CoordinateZ; streampick reads 2-D picks")
    x0, y0 = _star_column(path, table, "CoordinateX"), _star_column(path, table, "CoordinateY")
    width, height = _star_column(path, table, "Width"), _star_column(path, table, "Height")
    score = _star_column(path, table, "Confidence", finite=False) if "Confidence" in table.columns else None
    if score is not None and np.isnan(score).all():
        score = None
    return {path.stem: Picks.from_arrays(x0 + width / 2, y0 + height / 2, score)}


def _read_cs(path: Path) -> dict[str, Picks]:
    """cryoSPARC particles (``.cs``): fractional centres times the micrograph's width and height."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CoordinateFileError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, OSError, UnpicklingError
        raise CoordinateFileError(f"{path}: not a readable cryoSPARC .cs file (numpy array: "
                                  f"{_first_line(err)})") from None
    fields = data.dtype.names or ()
    missing = [name for name in (_CS_PATH, _CS_X, _CS_Y, _CS_SHAPE) if name not in fields]
    if missing or data.ndim != 1:
        raise CoordinateFileError(f"{path}: cryoSPARC .cs file without particle locations (lacks "
                                  f"{', '.join(missing) or 'a 1-D table'}): export picked or extracted particles")
    shape = np.asarray(data[_CS_SHAPE], dtype=np.float64).reshape(len(data), -1)
    if shape.shape[1] != 2:
        raise CoordinateFileError(f"{path}: {_CS_SHAPE} has {shape.shape[1]} values per row, expected 2")
    frac_x, frac_y = (np.asarray(data[name], dtype=np.float64) for name in (_CS_X, _CS_Y))
    x, y = frac_x * shape[:, 1], frac_y * shape[:, 0]  # micrograph_shape is (height, width)
    bad = ~(np.isfinite(x) & np.isfinite(y)) | (shape <= 0).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CoordinateFileError(f"{path}: row {row + 1}: location ({frac_x[row]!r}, {frac_y[row]!r}) on a "
                                  f"micrograph of shape {shape[row].tolist()} is not a finite position")
    score_field = next((name for name in _CS_SCORES if name in fields), None)
    score = np.asarray(data[score_field], dtype=np.float64) if score_field else None
    groups: dict[str, list[int]] = {}
    for row, raw in enumerate(data[_CS_PATH].tolist()):
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        groups.setdefault(_CRYOSPARC_PREFIX.sub("", micrograph_key(name)), []).append(row)
    return {key: Picks.from_arrays(x[rows], y[rows], None if score is None else score[rows])
            for key, rows in groups.items()}


def _star_column(path: Path, table, name: str, *, finite: bool = True) -> np.ndarray:
    values = table[name].tolist()
    try:
        column = np.asarray(values, dtype=np.float64)
        if not finite or np.isfinite(column).all():
            return column
    except (TypeError, ValueError):
        pass
    # Slow path, taken only by a bad file: value by value, so that the message names the first bad row.
    cells = (str(value) for value in values)
    where = (f"loop row {row}, column _{name}" for row in range(1, len(values) + 1))
    return np.array([_number(path, w, cell, finite=finite) for w, cell in zip(where, cells)])


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _read_table(path: Path, text: str) -> dict[str, Picks]:
    lines = _data_lines(text)
    header_no, header_line = lines[0]
    sep = "\t" if "\t" in header_line else None
    header = [cell.strip() for cell in header_line.split(sep)]
    missing = [name for name in _TABLE_HEADER[:3] if name not in header]
    if missing:
        raise CoordinateFileError(f"{path}: line {header_no}: table header lacks {', '.join(missing)}")
    has_score = "score" in header
    groups: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for n, line in lines[1:]:
        cells = [cell.strip() for cell in line.split(sep)]
        if len(cells) != len(header):
            raise CoordinateFileError(f"{path}: line {n}: expected {len(header)} columns, found {len(cells)}")
        row = dict(zip(header, cells))
        xs, ys, scores = groups.setdefault(micrograph_key(row["image_name"]), ([], [], []))
        xs.append(_number(path, f"line {n}, column x_coord", row["x_coord"]))
        ys.append(_number(path, f"line {n}, column y_coord", row["y_coord"]))
        if has_score:
            scores.append(_number(path, f"line {n}, column score", row["score"], finite=False))
    return {
        name: Picks.from_arrays(xs, ys, scores if has_score else None)
        for name, (xs, ys, scores) in groups.items()
    }


def _read_box(path: Path, text: str, score_column: int | None = None) -> dict[str, Picks]:
    """EMAN / crYOLO ``.box`` (``x0 y0 width height``, extra columns ignored); with ``score_column``, that
    column (0-based) is the score (the old crYOLO ``.cbox`` layout)."""
    xs: list[float] = []
    ys: list[float] = []
    scores: list[float] = []
    need = 4 if score_column is None else score_column + 1
    for n, line in _data_lines(text):
        cells = line.split()
        if len(cells) < need:
            raise CoordinateFileError(
                f"{path}: line {n}: expected at least {need} columns (x0 y0 width height"
                f"{'' if score_column is None else ' confidence'}), found {len(cells)}")
        x0, y0, w, h = (
            _number(path, f"line {n}, column {i} ({label})", cell)
            for i, (label, cell) in enumerate(zip(("x0", "y0", "width", "height"), cells), start=1)
        )
        xs.append(x0 + w / 2)
        ys.append(y0 + h / 2)
        if score_column is not None:
            scores.append(_number(path, f"line {n}, column {score_column + 1} (confidence)", cells[score_column],
                                  finite=False))
    return {path.stem: Picks.from_arrays(xs, ys, scores if score_column is not None else None)}


def _read_csv(path: Path, text: str) -> dict[str, Picks]:
    reader = csv.reader(text.splitlines())
    rows = ((reader.line_num, [cell.strip() for cell in row]) for row in reader)
    rows = [(n, row) for n, row in rows if any(row)]
    if not rows:
        raise CoordinateFileError(f"{path}: empty CSV file (no header)")
    header_no, header = rows[0]
    lowered = [cell.lower() for cell in header]
    ix, iy, iscore = (_find_column(lowered, names) for names in (_CSV_X, _CSV_Y, _CSV_SCORE))
    if ix is None or iy is None:
        raise CoordinateFileError(
            f"{path}: line {header_no}: CSV header names no x/y columns "
            f"(expected 'x,y' or 'X-Coordinate,Y-Coordinate'; found {','.join(header)!r})")
    xs, ys, scores = [], [], []
    for n, row in rows[1:]:
        if len(row) != len(header):
            raise CoordinateFileError(f"{path}: line {n}: expected {len(header)} columns, found {len(row)}")
        xs.append(_number(path, f"line {n}, column {header[ix]}", row[ix]))
        ys.append(_number(path, f"line {n}, column {header[iy]}", row[iy]))
        if iscore is not None:
            scores.append(_number(path, f"line {n}, column {header[iscore]}", row[iscore], finite=False))
    return {path.stem: Picks.from_arrays(xs, ys, scores if iscore is not None else None)}


def _find_column(lowered_header: list[str], names: tuple[str, ...]) -> int | None:
    return next((i for i, cell in enumerate(lowered_header) if cell in names), None)


_TEXT_READERS = {"table": _read_table, "box": _read_box, "csv": _read_csv}

"""Micrograph names: how a pick file's micrograph name is matched to a micrograph file.

Pick files name their micrographs in many ways: a RELION STAR by a project-relative path
(``MotionCorr/job002/Movies/mic_001.mrc``), a per-micrograph file by its own name
(``mic_001_autopick.star``, ``mic_001.box``), cryoSPARC by a path with a numeric prefix
(``J3/motioncorrected/012345678901234567890_mic_001_patch_aligned_doseweighted.mrc``), and image files carry
extra suffixes of their own (EMPIAR-10146: ``May08_03.15.02.bin_avg.png`` with ``May08_03.15.02.csv``).

A micrograph's *name* is its file name without the last suffix (``Path.stem``); a pick file's *key* is
reduced by :func:`micrograph_key` (folder and one known image suffix dropped, so a dotted name such as
``May08_03.15.02`` keeps its dots).  :func:`match_name` then pairs a key with a name.
"""
from __future__ import annotations

from collections.abc import Iterable

IMAGE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".eer", ".png", ".jpg", ".jpeg")
"""File suffixes of micrographs and movies, dropped from a key (case-insensitive)."""

_SEPARATORS = ("_", ".", "-")


def micrograph_key(name: str) -> str:
    """The micrograph a pick file names, reduced to compare with micrograph names.

    The folder is dropped (``/`` or ``\\``), then one known image suffix (:data:`IMAGE_SUFFIXES`), and
    nothing else: ``a/b/mic_001.mrc`` → ``mic_001``, ``May08_03.15.02`` → ``May08_03.15.02``,
    ``x.bin_avg.png`` → ``x.bin_avg``.
    """
    base = str(name).strip().replace("\\", "/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot > 0 and base[dot:].lower() in IMAGE_SUFFIXES:
        base = base[:dot]
    return base


def match_candidates(key: str, names: Iterable[str]) -> list[str]:
    """The micrograph names that ``key`` may refer to, best first; :func:`match_name` takes the first unless
    the match is ambiguous (several names that extend the key)."""
    key = micrograph_key(key)
    names = list(names)
    if key in names:
        return [key]
    # The key is a name plus a suffix: mic_001_autopick, mic_001.bin_avg, mic_001-picks (longest name first).
    shorter = [n for n in names if _extends(key, n)]
    if shorter:
        return sorted(shorter, key=len, reverse=True)
    # A name is the key plus a suffix: the image has extra suffixes (May08_03.15.02.bin_avg for the key
    # May08_03.15.02), or the pick file dropped one (mic_001 for mic_001_DW).
    longer = sorted((n for n in names if _extends(n, key)), key=len)
    if longer:
        return longer
    # Both have a suffix of their own: May08_03.15.02_cryolo and May08_03.15.02.bin_avg.  Only a last key
    # segment without digits is dropped (_cryolo, _autopick), so that numbered names never meet.
    cut = max(key.rfind(s) for s in _SEPARATORS)
    if cut > 0 and not any(c.isdigit() for c in key[cut + 1:]):
        return sorted((n for n in names if _extends(n, key[:cut])), key=len)
    return []


def match_name(key: str, names: Iterable[str]) -> str | None:
    """The micrograph name a pick file's key refers to, or None.

    Rules, in order, with the key reduced by :func:`micrograph_key`, and "extends" meaning followed by ``_``,
    ``.`` or ``-`` and more that does not start with a digit (``mic_1_2`` does not extend ``mic_1``: a numbered
    series):

    1. the key equals a name;
    2. the key extends names (``mic_001_autopick`` → ``mic_001``): the longest;
    3. exactly one name extends the key (``May08_03.15.02`` → ``May08_03.15.02.bin_avg``);
    4. the key's last segment has no digits, and exactly one name extends the rest
       (``May08_03.15.02_cryolo`` → ``May08_03.15.02.bin_avg``).

    Several names in rule 3 or 4 are ambiguous: None.
    """
    key = micrograph_key(key)
    candidates = match_candidates(key, names)
    if not candidates:
        return None
    if len(candidates) == 1 or _extends(key, candidates[0]) or candidates[0] == key:
        return candidates[0]
    return None


def _extends(longer: str, shorter: str) -> bool:
    """``longer`` is ``shorter``, a separator, and more that does not start with a digit."""
    n = len(shorter)
    return (len(longer) > n + 1 and longer.startswith(shorter) and longer[n] in _SEPARATORS
            and not longer[n + 1].isdigit())

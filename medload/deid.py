"""De-identification: the operator's key, keyed pseudonyms, and what may leave the hospital.

Patient, study and series keys are HMAC-SHA256 pseudonyms of the DICOM UIDs / IDs (NIfTI:
of the file's path under the scanned folder), keyed by a secret only the operator holds:

1. ``phi_key=`` / ``--phi-key``, else
2. the ``MEDLOAD_PHI_KEY`` environment variable, else
3. the key file ``phi.key`` in the user's config folder (``$MEDLOAD_CONFIG_DIR``, else
   ``$XDG_CONFIG_HOME/medload``, else ``~/.config/medload``), created with 256 random bits
   (mode 0600) on first use.

There is no built-in key: nobody without the operator's key can compute a pseudonym from a
list of MRNs, while the same operator's runs stay linkable. A store records the key's
:func:`fingerprint` (a keyed hash of a fixed text, never the key), so that resuming or
appending with another key is refused. ``docs/deidentification.md`` has the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medload.deidmeta import (
    CODED_TERMS,
    DESCRIPTOR_KEYS,
    IMAGE_TYPE_TERMS,
    META_KEYS,
    MODALITY_TERMS,
    VALUE_KINDS,
    allowed_meta,
    clean_image_type,
    clean_modality,
    shown_value,
)
from medload.phikey import (
    CONFIG_DIR_ENV,
    PHI_KEY_ENV,
    KeyCreatedWarning,
    PhiKey,
    config_dir,
    fingerprint,
    key_created_message,
    key_file,
    read_key_file,
    resolve_key,
)
from medload.problems import Problem, is_problem_record

# fmt: off
__all__ = [
    "pseudonym", "sanitize_key", "PHI_KEY_ENV", "CONFIG_DIR_ENV", "IDENTIFYING_KEYWORDS",
    "PhiKey", "resolve_key", "fingerprint", "config_dir", "key_file", "key_created_message",
    "read_key_file", "KeyCreatedWarning",
    "DESCRIPTOR_KEYS", "relative_paths", "source_roots", "hidden_texts", "named_files", "hide", "scrub_paths",
    "deidentified_meta", "report_summary", "META_KEYS", "allowed_meta", "clean_image_type",
    "SourceNames", "scrub", "file_key", "folder_key", "IMAGE_TYPE_TERMS", "MODALITY_TERMS", "CODED_TERMS",
    "VALUE_KINDS", "clean_modality", "shown_value", "KEYED_HASH_PREFIX", "keyed_source_hash", "is_keyed_source_hash",
    "keyed_form",
]
# fmt: on

#: DICOM keywords of PS3.15's basic profile that medload's meta never carries (unless
#: ``keep_phi``). Listed so tests and the converter can audit output against them.
# fmt: off
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
    "OtherPatientIDs", "OtherPatientNames", "PatientMotherBirthName", "PatientTelephoneNumbers",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician", "StationName",
    "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "AcquisitionTime", "ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "MedicalRecordLocator", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "RequestAttributesSequence", "ResponsiblePerson", "IssuerOfPatientID",
)
# fmt: on


def pseudonym(value: str | None, *, prefix: str = "", secret: str | bytes | PhiKey | None = None, length: int = 16) -> str:
    """Return a stable keyed pseudonym of ``value``.

    Parameters
    ----------
    value : str or None
        The identifying value (a UID, a patient ID). ``None`` or empty gives ``prefix + "none"``.
    prefix : str
        Kept in front, e.g. ``"pat-"``, so keys say what they are.
    secret : str, bytes or PhiKey, optional
        HMAC key; default :func:`resolve_key`'s (``$MEDLOAD_PHI_KEY``, else the key file).
        Callers making many pseudonyms resolve the key once and pass the :class:`PhiKey`.
    length : int
        Hex digits kept (16 = 64 bits).

    Examples
    --------
    >>> pseudonym("12345", prefix="pat-", secret="k")
    'pat-3f5429540988d2d8'
    >>> pseudonym("12345", prefix="pat-", secret="k") == pseudonym("12345", prefix="pat-", secret="k")
    True
    """
    if not value:
        return prefix + "none"
    digest = hmac.new(resolve_key(secret).secret, text_bytes(str(value)), hashlib.sha256).hexdigest()
    return prefix + digest[:length]


#: How a keyed ``source_hash`` starts: :func:`keyed_source_hash`. Stores written by an earlier
#: medload hold the readers' unkeyed digests (``sha256:``, ``nifti-sha256:``, ``nnunet-``).
KEYED_HASH_PREFIX = "src-"


def keyed_source_hash(digest: str, secret: str | bytes | PhiKey | None = None) -> str:
    """The ``source_hash`` a Series, a Volume and a store carry: ``src-`` + HMAC-SHA256 of the
    reader's digest of the source (instance UIDs and file sizes, a file's bytes) under the key.

    A plain digest is a fingerprint of the source: whoever holds the UIDs (the PACS) or the file
    can recompute it and find the stored volume. Keyed, it links only for the key's holder; the
    same key gives the same hash, so re-runs still skip what is converted. A store of an earlier
    medload holds ``digest`` itself; :func:`keyed_form` of it is what this medload computes.

    Examples
    --------
    >>> keyed_source_hash("sha256:0123456789abcdef", "k")
    'src-b27b59bedb67b88e2b3a2a099ac7610c'
    >>> keyed_source_hash("sha256:0123456789abcdef", "k") != keyed_source_hash("sha256:0123456789abcdef", "other")
    True
    """
    return pseudonym(digest, prefix=KEYED_HASH_PREFIX, secret=secret, length=32)


def is_keyed_source_hash(value: str) -> bool:
    """Whether a stored ``source_hash`` is keyed (:func:`keyed_source_hash`), not an earlier medload's digest.

    Examples
    --------
    >>> is_keyed_source_hash("src-b27b59bedb67b88e2b3a2a099ac7610c"), is_keyed_source_hash("sha256:0123456789abcdef")
    (True, False)
    """
    return bool(re.fullmatch(KEYED_HASH_PREFIX + "[0-9a-f]{32}", str(value)))


def keyed_form(stored: str, secret: str | bytes | PhiKey | None = None) -> str:
    """A stored ``source_hash`` as this medload computes it for the same source: itself when
    keyed, else (an earlier medload's unkeyed digest) :func:`keyed_source_hash` of it.

    A resumed store of an earlier medload is matched so: nothing is converted twice.

    Examples
    --------
    >>> keyed_form("sha256:0123456789abcdef", "k") == keyed_source_hash("sha256:0123456789abcdef", "k")
    True
    >>> keyed_form("src-b27b59bedb67b88e2b3a2a099ac7610c", "k")
    'src-b27b59bedb67b88e2b3a2a099ac7610c'
    """
    return stored if is_keyed_source_hash(stored) else keyed_source_hash(stored, secret)


def text_bytes(text: str) -> bytes:
    """UTF-8 bytes of any ``str``, lone surrogates included, for hashing it.

    A path with bytes that are not UTF-8 reaches medload as a ``str`` holding surrogates
    (``os.fsdecode``'s surrogateescape), as does a header value decoded the same way; strict
    UTF-8 refuses them (``UnicodeEncodeError``). ``surrogatepass`` encodes them as they are, so
    every text has its own bytes (different texts, different bytes) and the others keep theirs.

    Examples
    --------
    >>> text_bytes("Ärzte") == "Ärzte".encode("utf-8"), len(text_bytes("scan\\udcff.dcm"))
    (True, 11)
    """
    return text.encode("utf-8", "surrogatepass")


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def sanitize_key(text: str, *, max_length: int = 120) -> str:
    """Make ``text`` safe as an HDF5 group name or a file name.

    No ``/``, no ``..``, no control or space characters; never empty.

    Examples
    --------
    >>> sanitize_key("../T1 MPRAGE/\\x00sag")
    'T1_MPRAGE_sag'
    """
    cleaned = _UNSAFE.sub("_", text).strip("._")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned[:max_length] or "unnamed"


# --------------------------------------------------------------------------- free text
# A description shorter than this is not hidden inside message texts: replacing "ct" in
# every message would mangle them, and so short a text names nobody.
_MIN_HIDDEN = 4


def relative_paths(text: str, roots: Sequence[str]) -> str:
    """``text`` with paths under ``roots`` made relative to them (longest root first).

    A root must start a path in the text (not be the tail of a longer folder name), so a
    relative source such as ``data`` never eats the ``data/`` of ``/mnt/metadata/``.

    Examples
    --------
    >>> relative_paths("/mnt/Smith_John/ct/1.dcm is damaged", ["/mnt/Smith_John"])
    'ct/1.dcm is damaged'
    >>> relative_paths("/mnt/metadata/x", ["data"])
    '/mnt/metadata/x'
    """
    for root in roots:
        root = root.rstrip(os.sep) or os.sep
        text = re.sub(
            rf"(?<![\w.{re.escape(os.sep)}-]){re.escape(root)}(?:{re.escape(os.sep)}|(?![\w.-]))",
            lambda m: "" if m.group(0).endswith(os.sep) else ".",
            text,
        )
    return text


def source_roots(sources: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Every spelling of each source folder that can appear in a message, longest first.

    Paths in messages start with the source as the user gave it (``../shared/data/x``), its
    absolute form, or its real path (links resolved); each is made relative to the source.
    """
    roots: set[str] = set()
    for src in sources:
        text = os.fspath(src)
        for form in (text, os.path.normpath(text), os.path.abspath(text), os.path.realpath(text)):
            folder = form if os.path.isdir(text) else os.path.dirname(form)
            if folder and folder not in (".", os.curdir):
                roots.add(folder.rstrip(os.sep) or os.sep)
    return sorted(roots, key=len, reverse=True)


def hidden_texts(series: Any) -> list[str]:
    """Texts of ``series`` that a default report or store must not hold: its description
    and, for a NIfTI source, its file name (NIfTI descriptions are file names)."""
    texts = [str(series.description or "")]
    if getattr(series, "kind", "") == "nifti":
        texts += [os.path.basename(f) for f in series.files]
    return sorted({t for t in texts if len(t) >= _MIN_HIDDEN}, key=len, reverse=True)


def named_files(series: Any) -> list[str]:
    """Every file whose name a message about ``series`` may hold: its files and the damaged
    files scan attached to it (``info["damaged_files"]``: not in ``files``, yet named by the
    refusal and the problem that say why the series is not loaded).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> named_files(SimpleNamespace(files=("a.dcm",), info={"damaged_files": ["b.dcm"]}))
    ['a.dcm', 'b.dcm']
    """
    return list(series.files) + list((getattr(series, "info", None) or {}).get("damaged_files", ()))


def _map_text(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it (lists, tuples and dict values).

    A problem (a :class:`~medload.problems.Problem` or its ``{"kind", "message"}`` object) has
    only its message changed: its kind is a word of medload's vocabulary, never a source's
    name, and code decides by it (a description "tilt" must not turn ``gantry_tilt`` into
    ``gantry_[description]``).
    """
    if isinstance(value, str):
        return change(value)
    if isinstance(value, Problem):
        return value.with_message(change)
    if is_problem_record(value):
        return {"kind": value["kind"], "message": change(value["message"])}
    if isinstance(value, list | tuple):
        return [_map_text(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_text(v, change) for k, v in value.items()}
    return value


def hide(value: Any, texts: Sequence[str]) -> Any:
    """``value`` with every string's occurrences of ``texts`` replaced by ``[description]``.

    Examples
    --------
    >>> hide({"reason": ["Smith head CT: gap"]}, ["Smith head CT"])
    {'reason': ['[description]: gap']}
    >>> hide([{"kind": "gantry_tilt", "message": "tilt of 14 degrees"}], ["tilt"])
    [{'kind': 'gantry_tilt', 'message': '[description] of 14 degrees'}]
    """
    if not texts:
        return value

    def _hide(text: str) -> str:
        for t in texts:
            text = text.replace(t, "[description]")
        return text

    return _map_text(value, _hide)


def scrub_paths(value: Any, roots: Sequence[str]) -> Any:
    """Source folders out of every string in ``value`` (folder names can be patient names)."""
    return _map_text(value, lambda text: relative_paths(text, roots))


_IDENTIFYING = {k.lower() for k in IDENTIFYING_KEYWORDS} | {
    "".join("_" + c.lower() if c.isupper() else c for c in k).lstrip("_") for k in IDENTIFYING_KEYWORDS
}


def deidentified_meta(
    meta: dict[str, Any],
    roots: Sequence[str],
    keep_phi: bool,
    keep_descriptions: bool = False,
    hidden: Sequence[str] = (),
    names: SourceNames | None = None,
) -> dict[str, Any]:
    """A volume's meta as a store may hold it.

    Only the allow-listed keys (:func:`allowed_meta`), no identifying or (unless
    ``keep_descriptions``) descriptor keys, and every string scrubbed of the source's names
    (:func:`scrub` with ``names``; without ``names``, paths made relative to ``roots`` and the
    ``hidden`` texts replaced). ``keep_phi`` keeps everything, with paths relative.

    Examples
    --------
    >>> deidentified_meta({"patient_name": "X", "description": "Smith", "kvp": 120}, [], False)
    {'kvp': 120}
    """
    if keep_phi:
        return scrub_paths(meta, roots)
    # The readers already leave these out; dropping them again here costs nothing and keeps a
    # reader bug from reaching a store.
    meta = allowed_meta({k: v for k, v in meta.items() if k != "phi" and k.lower() not in _IDENTIFYING})
    if not keep_descriptions:
        meta = {k: v for k, v in meta.items() if k.lower() not in DESCRIPTOR_KEYS}
    if names is not None:
        return scrub(meta, names)
    return hide(scrub_paths(meta, roots), hidden)


def report_summary(series: Any, keep_descriptions: bool) -> dict[str, Any]:
    """``series.summary()`` for a report: without its description unless kept."""
    entry = series.summary()
    if not keep_descriptions:
        entry.pop("description", None)
        entry = hide(entry, hidden_texts(series))
    return entry


# --------------------------------------------------------------------------- source names
#: Folder names so common in exports that they name nobody; replacing them as bare words
#: would mangle messages ("DICOM header ...").
# fmt: off
_GENERIC_FOLDERS = frozenset({
    "dicom", "dicomdir", "images", "image", "img", "series", "study", "studies", "data", "export",
    "exports", "files", "scans", "scan", "nifti", "input", "inputs", "raw", "anat", "func", "dwi",
    "fmap", "perf", "masks", "mask", "labels", "derivatives", "sourcedata", "tmp", "temp",
})
# fmt: on
_MIN_WORD = 3


def file_key(path: str | os.PathLike[str], key: str | bytes | PhiKey | None = None) -> str:
    """The pseudonym a report gives a source file: ``file-`` + HMAC of its real path.

    Examples
    --------
    >>> file_key("/x/SMITH/1.dcm", "k") == file_key("/x/SMITH/../SMITH/1.dcm", "k")
    True
    """
    return pseudonym(os.path.realpath(os.fspath(path)), prefix="file-", secret=key)


def folder_key(path: str | os.PathLike[str], key: str | bytes | PhiKey | None = None) -> str:
    """The pseudonym a report gives a source folder: ``dir-`` + HMAC of its real path."""
    return pseudonym(os.path.realpath(os.fspath(path)), prefix="dir-", secret=key)


def _spellings(path: str, roots: Sequence[str], real: str, cwd: str) -> set[str]:
    """How ``path`` may be written in a message: as given, absolute, real (``real``), relative
    to a root or to the working folder ``cwd`` (as a relative source spells it: "../export/x")."""
    absolute = os.path.abspath(path)
    forms = {path, os.path.normpath(path), absolute, real}
    try:
        forms.add(os.path.relpath(absolute, cwd))
    except ValueError:  # another drive (Windows)
        pass
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        for form in list(forms):
            if form.startswith(prefix):
                forms.add(form[len(prefix) :])
    return {f for f in forms if f and f not in (".", os.sep)}


@dataclass
class SourceNames:
    """The names of one series' source files and folders, and what replaces each in an output.

    Build it with :meth:`of`; :func:`scrub` uses it. Paths (any spelling: as scanned, absolute,
    real, relative to a source folder) become the file's or folder's pseudonym
    (:func:`file_key`, :func:`folder_key`), the source folders ``[source]``, bare file names
    the file's pseudonym, bare folder names ``[folder]``, descriptions ``[description]``.
    :attr:`mapping` is what ``--source-map`` writes: pseudonym -> path.

    Examples
    --------
    >>> names = SourceNames.of(["/exp/SMITHSON_JOHN/ct/IM1.dcm"], roots=["/exp"], key="k")
    >>> scrub("/exp/SMITHSON_JOHN/ct/IM1.dcm is truncated", names).startswith("file-")
    True
    >>> scrub("12 files in /exp/SMITHSON_JOHN/ct; IM1.dcm dropped (SMITHSON_JOHN)", names)  # doctest: +ELLIPSIS
    '12 files in dir-...; file-... dropped (dir-...)'
    """

    replacements: list[tuple[str, str]] = field(default_factory=list)
    words: list[tuple[str, str]] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)
    #: ``keep_phi``: names are kept on purpose; only the source folders are cut off paths.
    keep_paths: bool = False
    roots: list[str] = field(default_factory=list)

    @classmethod
    def kept(cls, roots: Sequence[str]) -> SourceNames:
        """For ``keep_phi`` outputs: paths only made relative to the source folders ``roots``."""
        return cls(keep_paths=True, roots=list(roots))

    @classmethod
    def of(
        cls,
        files: Sequence[str | os.PathLike[str]],
        *,
        roots: Sequence[str],
        key: str | bytes | PhiKey | None = None,
        hidden: Sequence[str] = (),
    ) -> SourceNames:
        """The names in ``files`` (one series' files, its mask) under the source folders ``roots``.

        Parameters
        ----------
        files : paths
            The source files whose names (and folders') may appear in messages.
        roots : list of str
            Every spelling of the source folders (:func:`source_roots`).
        key : str, bytes or PhiKey, optional
            The pseudonym key (file and folder keys are keyed like patient keys).
        hidden : list of str
            Free texts to hide too (a series' description).
        """
        key = resolve_key(key)
        roots = sorted({r.rstrip(os.sep) or os.sep for r in roots}, key=len, reverse=True)
        real_roots = {os.path.realpath(r) for r in roots} | {os.path.abspath(r) for r in roots}
        table: dict[str, str] = {}
        words: dict[str, str] = {}
        mapping: dict[str, str] = {}
        folders: set[str] = set()

        def _add(form: str, pseudo: str) -> None:
            # A path is replaced wherever it appears; a bare name (no separator) only as a
            # whole word, so that a folder "ct" never eats the "ct" of "correct".
            if os.sep in form:
                table.setdefault(form, pseudo)
            elif len(form) >= _MIN_WORD and form.lower() not in _GENERIC_FOLDERS:
                words.setdefault(form, pseudo)

        cwd = os.getcwd()
        real_dirs: dict[str, str] = {}

        def _real(path: str) -> str:
            # realpath walks every component: once per folder, not once per file (600-file series).
            folder, name = os.path.split(os.path.abspath(path))
            if folder not in real_dirs:
                real_dirs[folder] = os.path.realpath(folder)
            return os.path.realpath(path) if os.path.islink(path) else os.path.join(real_dirs[folder], name)

        for f in files:
            path = os.fspath(f)
            real = _real(path)
            pseudo = pseudonym(real, prefix="file-", secret=key)  # = file_key(path, key)
            mapping[pseudo] = os.path.abspath(path)
            for form in _spellings(path, roots, real, cwd) | {os.path.basename(path)}:
                _add(form, pseudo)
            folder = os.path.dirname(os.path.abspath(path))
            # Every folder between the file and its source folder (or just its own, outside them).
            while folder and folder not in folders and folder not in real_roots and folder != os.path.dirname(folder):
                folders.add(folder)
                if not any(folder.startswith(r + os.sep) for r in real_roots):
                    break
                folder = os.path.dirname(folder)
        for folder in folders:
            real = real_dirs.get(folder) or os.path.realpath(folder)
            pseudo = pseudonym(real, prefix="dir-", secret=key)  # = folder_key(folder, key)
            mapping[pseudo] = folder
            for form in _spellings(folder, roots, real, cwd):
                _add(form, pseudo)
            name = os.path.basename(folder)
            if name.lower() not in _GENERIC_FOLDERS:
                _add(name, "[folder]")
        for root in roots:
            if root != os.sep:
                _add(root, "[source]")
        return cls(
            replacements=sorted(table.items(), key=lambda item: len(item[0]), reverse=True),
            words=sorted(words.items(), key=lambda item: len(item[0]), reverse=True),
            hidden=sorted({t for t in hidden if len(t) >= _MIN_HIDDEN}, key=len, reverse=True),
            mapping=mapping,
        )


def scrub(value: Any, names: SourceNames) -> Any:
    """``value`` (a string, or lists and dicts of them) without the source names in ``names``.

    The one function every writer of an output folder calls (store meta, ``report.json``, the
    QC page): paths become pseudonyms, file and folder names too, descriptions ``[description]``
    (see :class:`SourceNames`). Keys of dicts are kept; non-strings are returned as they are;
    a problem keeps its kind and has its message scrubbed.

    Examples
    --------
    >>> names = SourceNames.of(["/exp/Smith/a.dcm"], roots=["/exp"], key="k", hidden=["Smith CT"])
    >>> scrub({"why": ["Smith CT: /exp/Smith/a.dcm"], "n": 3}, names)  # doctest: +ELLIPSIS
    {'why': ['[description]: file-...'], 'n': 3}
    """
    return _map_text(value, lambda text: _scrub_text(text, names))


def _scrub_text(text: str, names: SourceNames) -> str:
    if names.keep_paths:
        return relative_paths(text, names.roots)
    for t in names.hidden:
        if t in text:
            text = text.replace(t, "[description]")
    for form, pseudo in names.replacements:
        if form in text:
            text = text.replace(form, pseudo)
    for word, pseudo in names.words:
        if word in text:
            text = re.sub(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", pseudo, text)
    return text

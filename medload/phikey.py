"""The operator's pseudonym key: where it comes from, its key file, its fingerprint.

The key is, in order: ``phi_key=`` / ``--phi-key``; the ``MEDLOAD_PHI_KEY`` environment
variable; the key file ``phi.key`` in the user's config folder (``$MEDLOAD_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/medload``, else ``~/.config/medload``), created with 256 random bits (mode
0600) on first use. :mod:`medload.deid` uses it for pseudonyms and re-exports these names.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medload.errors import ConfigError

# fmt: off
__all__ = [
    "PHI_KEY_ENV", "CONFIG_DIR_ENV", "KEY_FILE_NAME", "PhiKey", "resolve_key", "fingerprint", "config_dir",
    "key_file", "key_created_message", "read_key_file", "KeyCreatedWarning",
]
# fmt: on


PHI_KEY_ENV = "MEDLOAD_PHI_KEY"
#: Overrides the folder of the key file (tests and shared machines point it elsewhere).
CONFIG_DIR_ENV = "MEDLOAD_CONFIG_DIR"
KEY_FILE_NAME = "phi.key"
_FINGERPRINT_TEXT = b"medload-fingerprint"
_MIN_FILE_KEY = 32  # characters of a key file's text; ours hold 64 hex digits


def config_dir() -> Path:
    """The folder of medload's per-user settings (where the key file lives).

    ``$MEDLOAD_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/medload`` (an absolute
    ``XDG_CONFIG_HOME`` only, as the XDG spec says), else ``~/.config/medload``.

    Examples
    --------
    >>> import os
    >>> saved = os.environ.get("MEDLOAD_CONFIG_DIR")
    >>> os.environ["MEDLOAD_CONFIG_DIR"] = "/srv/medload-config"
    >>> str(config_dir()), str(key_file())
    ('/srv/medload-config', '/srv/medload-config/phi.key')
    >>> _ = os.environ.pop("MEDLOAD_CONFIG_DIR") if saved is None else os.environ.update(MEDLOAD_CONFIG_DIR=saved)
    """
    explicit = os.environ.get(CONFIG_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "medload"


def key_file() -> Path:
    """Where the operator's key file is (or will be created): ``config_dir() / "phi.key"``."""
    return config_dir() / KEY_FILE_NAME


def fingerprint(secret: str | bytes | PhiKey) -> str:
    """A short public fingerprint of a key: HMAC(key, "medload-fingerprint"), 16 hex digits.

    It tells two keys apart (a store records it, so that resuming with another key is refused)
    and reveals nothing of the key: computing it needs the key.

    Examples
    --------
    >>> fingerprint("k")
    'fp-4c8246d424de72a3'
    >>> fingerprint("k") == fingerprint(b"k") != fingerprint("other")
    True
    """
    key = secret.secret if isinstance(secret, PhiKey) else _as_bytes(secret)
    return "fp-" + hmac.new(key, _FINGERPRINT_TEXT, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, repr=False)
class PhiKey:
    """The secret pseudonyms are keyed with, and where it came from (never printed).

    Attributes
    ----------
    secret : bytes
        The HMAC key. For a key file: its text (the 64 hex digits), so giving that text as
        ``--phi-key`` or ``$MEDLOAD_PHI_KEY`` elsewhere gives the same pseudonyms.
    origin : str
        ``"argument"``, ``"environment"`` or ``"key file"``.
    path : Path or None
        The key file, for ``origin == "key file"``.
    created : bool
        True when this call created the key file (say where it is, once).

    Examples
    --------
    >>> key = PhiKey(b"k", "argument")
    >>> key
    PhiKey(origin='argument', fingerprint='fp-4c8246d424de72a3')
    """

    secret: bytes
    origin: str
    path: Path | None = None
    created: bool = False

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of this key."""
        return fingerprint(self.secret)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"PhiKey(origin={self.origin!r}{where}, fingerprint={self.fingerprint!r})"

    def __reduce__(self) -> tuple[type[PhiKey], tuple[Any, ...]]:  # pickled to worker processes: the secret travels, as it must
        return (PhiKey, (self.secret, self.origin, self.path, self.created))


def _as_bytes(secret: str | bytes) -> bytes:
    """The key's bytes; a ``str`` from the command line or the environment as the bytes typed.

    Python decodes argv and the environment with ``surrogateescape``: a key holding bytes that
    are not UTF-8 arrives with lone surrogates, which strict UTF-8 refuses (``medload`` stopped
    with UnicodeEncodeError). Valid UTF-8 keys give the same bytes as before.

    >>> _as_bytes("k\\udcffk") == b"k\\xffk", _as_bytes("clé") == "clé".encode("utf-8")
    (True, True)
    """
    if not isinstance(secret, str):
        return bytes(secret)
    try:
        return secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no decoding of bytes made
        return secret.encode("utf-8", "surrogatepass")


class KeyCreatedWarning(UserWarning):
    """Said once, when the operator's key file was just created (where it is, how to back it up)."""


def key_created_message(key: PhiKey) -> str:
    """What to tell the operator, once, when their key file was just created."""
    return (
        f"medload: created your pseudonym key {key.path} (readable by you only; fingerprint "
        f"{key.fingerprint}). Back it up, e.g. copy the file to a password manager or a safe place: "
        "the same key gives the same patient/study/series keys in later runs, another key gives "
        "other ones, and whoever holds it can test a guessed patient ID against your stores. "
        f"Elsewhere give its text with --phi-key or ${PHI_KEY_ENV}."
    )


def read_key_file(path: Path | None = None, *, created: bool = False) -> PhiKey:
    """The key in ``path`` (default :func:`key_file`), whatever ``$MEDLOAD_PHI_KEY`` says.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or damaged.
    """
    path = key_file() if path is None else Path(path)
    return PhiKey(_read_key_file(path), "key file", path, created)


def _read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"pseudonym key file {path} cannot be read ({type(exc).__name__}: {exc}); restore it from "
            f"your backup, or give the key with --phi-key / ${PHI_KEY_ENV}."
        ) from None
    if len(text) < _MIN_FILE_KEY:
        raise ConfigError(
            f"pseudonym key file {path} holds {len(text)} characters, expected at least {_MIN_FILE_KEY} "
            "(medload writes 64 hex digits); it was truncated or edited. Restore it from your backup "
            f"(a new key would give every patient new keys), or give the key with --phi-key / ${PHI_KEY_ENV}."
        )
    return text.encode("ascii")


def _create_key_file(path: Path) -> bool:
    """Write a new random key to ``path`` (mode 0600); False if another process was first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if a concurrent run created one first
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        if tmp.exists():
            tmp.unlink()


def resolve_key(phi_key: str | bytes | PhiKey | None = None, *, create: bool = True, announce: bool = True) -> PhiKey:
    """The key pseudonyms are made with: ``phi_key``, else ``$MEDLOAD_PHI_KEY``, else the key file.

    Parameters
    ----------
    phi_key : str, bytes or PhiKey, optional
        A key given by the caller (``--phi-key``); wins over the others.
    create : bool
        Create the key file with a random key if there is none (default). ``False`` raises
        :class:`~medload.errors.ConfigError` instead.
    announce : bool
        Warn (:class:`KeyCreatedWarning`) where a key file was created; the command line says
        it itself.

    Returns
    -------
    PhiKey

    Raises
    ------
    ConfigError
        The key file is unreadable or damaged, or missing with ``create=False``.

    Examples
    --------
    >>> resolve_key("my-secret").origin
    'argument'
    >>> resolve_key("my-secret").fingerprint == fingerprint("my-secret")
    True
    """
    if isinstance(phi_key, PhiKey):
        return phi_key
    if phi_key is not None and phi_key != "" and phi_key != b"":
        return PhiKey(_as_bytes(phi_key), "argument")
    env = os.environ.get(PHI_KEY_ENV)
    if env:
        return PhiKey(_as_bytes(env), "environment")
    path = key_file()
    created = False
    if not path.exists():
        if not create:
            raise ConfigError(
                f"no pseudonym key: {path} does not exist and neither --phi-key nor ${PHI_KEY_ENV} is "
                "set. Restore your key file from its backup, or give the key."
            )
        try:
            created = _create_key_file(path)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the pseudonym key file {path} ({type(exc).__name__}: {exc}); set "
                f"${CONFIG_DIR_ENV} to a writable private folder, or give a key with --phi-key / ${PHI_KEY_ENV}."
            ) from None
    key = read_key_file(path, created=created)
    if created and announce:
        warnings.warn(key_created_message(key), KeyCreatedWarning, stacklevel=2)
    return key

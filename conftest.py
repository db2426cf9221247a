"""Run-wide test setting: medload's per-user config folder (where the pseudonym key file is
created) is a temporary folder, never the real ``~/.config/medload``, for tests, doctests and
the subprocesses they start (they inherit the environment). A test that needs a folder of its
own uses the ``config_dir`` fixture of tests/conftest.py.

That folder holds one fixed test key: pseudonyms, and so the patient-level splits of the small
test stores, are then the same in every run on every machine (with a random key per run, a
hash split of 12 patients could leave a split empty in one run out of several)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

os.environ["MEDLOAD_CONFIG_DIR"] = tempfile.mkdtemp(prefix="medload-test-config-")
_KEY = Path(os.environ["MEDLOAD_CONFIG_DIR"]) / "phi.key"
_KEY.write_text(hashlib.sha256(b"medload test suite").hexdigest() + "\n", encoding="ascii")
_KEY.chmod(0o600)
os.environ.pop("MEDLOAD_PHI_KEY", None)  # a key set in the developer's shell would hide the key file

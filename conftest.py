"""Run-wide test setting: medload's per-user config folder (where the pseudonym key file is
created) is a temporary folder, never the real ``~/.config/medload``, for tests, doctests and
the subprocesses they start (they inherit the environment). A test that needs a folder of its
own uses the ``config_dir`` fixture of tests/conftest.py."""

from __future__ import annotations

import os
import tempfile

os.environ["MEDLOAD_CONFIG_DIR"] = tempfile.mkdtemp(prefix="medload-test-config-")
os.environ.pop("MEDLOAD_PHI_KEY", None)  # a key set in the developer's shell would hide the key file

"""Where datasets live, and checking what is read from there.

Every loader takes a data directory: the config's `data_dir` when set, else `$LEPTON_DATA_DIR`. A missing or
corrupt file is a `UserError` naming the file and what was expected, so the launcher prints one line instead of a
traceback. `download` fetches files for users with internet; nothing calls it at run time.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.request

from lepton_jax.errors import UserError

ENV_VAR = "LEPTON_DATA_DIR"


def data_dir(configured: str | None = None) -> str:
    """The data directory: `configured` if given, else `$LEPTON_DATA_DIR`; a `UserError` if neither is set."""
    path = configured or os.environ.get(ENV_VAR)
    if not path:
        raise UserError(f"no data directory: pass --config.data_dir=DIR or set {ENV_VAR}")
    return os.path.expanduser(path)


def require_file(path: str, what: str) -> str:
    """Returns `path` if it is a file; otherwise a `UserError` naming it and `what` it should hold."""
    if not os.path.isfile(path):
        raise UserError(f"missing file {path} (expected {what})")
    return path


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str, expected: str | None, what: str) -> str:
    """`require_file`, then checks the file's sha256 against `expected` (skipped when `expected` is None)."""
    require_file(path, what)
    if expected is not None:
        actual = sha256(path)
        if actual != expected:
            raise UserError(f"corrupt file {path}: sha256 {actual[:12]}…, expected {expected[:12]}… ({what})")
    return path


def corrupt(path: str, what: str, detail: str) -> UserError:
    """The error for a file that exists but does not parse: `raise datasets.corrupt(path, what, str(e))`."""
    return UserError(f"corrupt file {path}: {detail} (expected {what})")


def download(url: str, directory: str, filename: str | None = None, expected_sha256: str | None = None) -> str:
    """Downloads `url` into `directory` (for users with internet), verifying `expected_sha256` if given.

    The file is written to a temporary name and renamed when complete, so an interrupted download leaves nothing
    that a loader could mistake for data. An existing file with the right checksum is not fetched again.

    Returns:
      The downloaded file's path.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename or os.path.basename(url))
    if os.path.isfile(path) and (expected_sha256 is None or sha256(path) == expected_sha256):
        return path
    with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
        with urllib.request.urlopen(url) as response:
            shutil.copyfileobj(response, tmp)
    if expected_sha256 is not None and sha256(tmp.name) != expected_sha256:
        os.remove(tmp.name)
        raise UserError(f"download of {url} does not match its sha256 {expected_sha256[:12]}…")
    os.replace(tmp.name, path)
    return path

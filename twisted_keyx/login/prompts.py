"""Reading a user's credentials for the command-line tools: the user name
from the command line, the password from a file or from the terminal without
echo.  Never the password from standard input, which the client's chat
reads, nor from the command line, where other users can see it."""

import argparse
import getpass
import warnings

from twisted_keyx.core.b64 import MalformedLine
from twisted_keyx.login.names import check_user_name
from twisted_keyx.core.fileutil import exposure_warning


#: How much of a user name a message echoes.
SHOWN_NAME_LENGTH = 80


def shown_name(text):
    """``text`` for a message: quoted, control characters escaped, cut at
    :data:`SHOWN_NAME_LENGTH` characters and marked so (a name given on the
    command line may be of any length)."""
    if len(text) <= SHOWN_NAME_LENGTH:
        return repr(text)  # escapes what is not printable, and a backslash
    return f"{text[:SHOWN_NAME_LENGTH]!r}... ({len(text)} characters)"


def user_name_argument(text):
    """An argparse ``type``: a bad user name is a usage error (exit 2)."""
    try:
        return check_user_name(text)
    except MalformedLine as e:
        raise argparse.ArgumentTypeError(f"bad user name {shown_name(text)}: {e}") from None


class PasswordError(Exception):
    """No usable password; the message says why."""


def read_password_file(path):
    """The file's first line, without its line ending; the rest is ignored."""
    try:
        with open(path, "rb") as f:
            data = f.readline(4097)
    except OSError as e:
        raise PasswordError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > 4096:
        raise PasswordError(f"{path}: the password line is longer than 4096 bytes")
    try:
        password = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise PasswordError(f"{path}: the password is not UTF-8") from None
    if not password:
        raise PasswordError(f"{path}: the password is empty")
    return password


def password_file_warning(path):
    """A warning for the tools to print if group or others may read the
    password file, else None."""
    return exposure_warning(path)


def ask_password(prompt="Password: ", confirm=False):
    """Ask on the terminal without echo; with ``confirm``, twice."""
    password = _getpass(prompt)
    if not password:
        raise PasswordError("the password is empty")
    if confirm and _getpass("Again: ") != password:
        raise PasswordError("the two passwords differ")
    return password


def _getpass(prompt):
    # getpass falls back to reading stdin, with echo, when there is no
    # terminal; refuse instead (GetPassWarning is raised before it reads).
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise PasswordError(
                "no terminal to ask for the password; use --password-file"
            ) from None
        except EOFError:
            raise PasswordError("no password given") from None

"""The base of every error a user can fix (bad file, bad flag, busy folder, endpoint down).

Commands turn these into one-line messages (``ultrachat.cliutil.run_guarded``); each
package's own error class derives from it, so the CLI helper needs no package's names.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message alone tells the user what to fix."""


def unreadable_database(path: object, what: str, exc: Exception) -> UserError:
    """The one-line error for an SQLite file that cannot be opened (not a database, damaged,
    an unwritable folder): it names the file and what it was for."""
    return UserError(f"{path}: not a usable {what} ({exc}); delete it to start a new one, or choose another file")

"""The base of every error a user can fix (bad file, bad flag, busy folder, endpoint down).

Commands turn these into one-line messages (``ultrachat.cliutil.run_guarded``); each
package's own error class derives from it, so the CLI helper needs no package's names.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message alone tells the user what to fix."""


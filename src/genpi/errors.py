"""The error every genpi failure that a user can fix is raised as: one line, problem and fix."""


class GenpiError(Exception):
    """Printed by the CLI as ``genpi: error: <message>`` with exit status 2, without a traceback."""

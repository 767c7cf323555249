"""Errors the library raises; only the edges (CLI, HTTP) turn them into messages."""


class RagtuneError(Exception):
    """Base class: a problem the user can act on, with the offending value in the message."""


class ConfigError(RagtuneError):
    """A configuration field or option has a bad value."""


class ModelNotFoundError(RagtuneError):
    """A model name or path could not be resolved to weights on disk."""


class IndexNotFoundError(RagtuneError):
    """The index directory does not exist or holds no ragtune index."""


class IndexMismatchError(RagtuneError):
    """The index was built with settings that differ from the ones asked for."""


class DocumentError(RagtuneError):
    """A file could not be read as a document (bad format, corrupt, empty, binary)."""


class InputError(RagtuneError):
    """A question or other request input is invalid (empty, too long, ...)."""

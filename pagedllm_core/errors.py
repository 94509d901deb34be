"""Typed errors: each says what was wrong and what is allowed."""


class PagedLLMError(Exception):
    """Base class of every error pagedllm raises on purpose."""


class ConfigError(PagedLLMError, ValueError):
    """An engine or request setting is invalid."""


class UnknownPluginTargetError(ConfigError):
    """A name picked in config is not registered for its kind."""


class UnsupportedConfigError(ConfigError):
    """A registered implementation cannot run the requested configuration."""


class DuplicateRegistrationError(PagedLLMError):
    """Two plugins registered the same name for the same kind."""


class ModelLoadError(PagedLLMError, ValueError):
    """A model could not be found or loaded."""


class RequestFailedError(PagedLLMError):
    """One request failed on its own (its sampling, output constraint or detokenizer raised); the
    engine ended it and went on with the others."""

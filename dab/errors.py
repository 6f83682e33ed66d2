"""The exceptions: ConfigError for bad user input (configs, names, shapes, settings; SettingError, a
setting out of range, is one), TrainingFailed for a run that cannot go on."""


class ConfigError(ValueError):
    """Raised for invalid configuration; the message names the valid choices."""


class SettingError(ConfigError):
    """A setting's value is out of range. Raised where the value is checked (an estimator's
    constructor), it names the bare key; the caller rewords it for its own users (the suite's
    ``dab.<key>``, a library call's argument)."""

    def __init__(self, owner: str, key: str, requirement: str, value: object):
        super().__init__(f"{owner}: {key} must be {requirement}, got {value!r}")
        self.owner, self.key, self.requirement, self.value = owner, key, requirement, value


class TrainingFailed(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the run's last good checkpoint stays."""

    def __init__(self, message: str, step: int, losses: dict, saved_step: int | None):
        super().__init__(message)
        self.step, self.losses, self.saved_step = step, losses, saved_step

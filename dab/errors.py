"""The one exception type for bad user input (configs, names, shapes)."""


class ConfigError(ValueError):
    """Raised for invalid configuration; the message names the valid choices."""


class TrainingFailed(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the run's last good checkpoint stays."""

    def __init__(self, message: str, step: int, losses: dict, saved_step: int | None):
        super().__init__(message)
        self.step, self.losses, self.saved_step = step, losses, saved_step

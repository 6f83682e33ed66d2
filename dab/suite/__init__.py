"""The experiment suite: configuration, experiment families (data, models, losses, evaluation),
the trainer, checkpoints and the command line. Built on the library in ``dab`` (bridge, hard
functions, approximators, losses, estimators), which never imports from here."""

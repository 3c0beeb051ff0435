"""streampick: live cryo-EM particle picking with a positive-unlabeled CNN."""
__version__ = "0.1.0"

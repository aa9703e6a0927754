from project.models.sequence import RecurrentNet, SequenceClassifier

__all__ = ["RecurrentNet", "SequenceClassifier"]

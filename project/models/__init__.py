from project.models.image import ImageClassifier, SmallCNN
from project.models.sequence import RecurrentNet, SequenceClassifier

__all__ = ["ImageClassifier", "RecurrentNet", "SequenceClassifier", "SmallCNN"]

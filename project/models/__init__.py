from project.models.backbones import SmallCNN
from project.models.image import ImageClassifier
from project.models.sequence import RecurrentNet, SequenceClassifier

__all__ = ["ImageClassifier", "RecurrentNet", "SequenceClassifier", "SmallCNN"]

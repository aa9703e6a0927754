"""What a model learns, shared by the data (which knows it) and the models (which follow it).

Below both `project/data/` and `project/models/`: importing a DataModule does not load any
model code.
"""

from typing import Literal

# classification: integer class targets, cross-entropy; regression: float targets, MSE
Task = Literal["classification", "regression"]

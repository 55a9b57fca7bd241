"""What the training and evaluation jobs share, so that neither imports the other: processes and
devices (`distributed.py`), classification metrics (`metrics.py`) and figures (`plots.py`)."""

"""Multi-layer perceptrons: a pure functional core and scikit-learn-compatible estimators."""

"""One job of a sweep: its schema, its identity, and the run that measures a model with a predictor."""

"""Serving: export of trained classifiers, the Triton model repository, model versions, inference
clients, abstention, Grad-CAM explanations and the prediction logic behind ``POST /v1/predictions``."""

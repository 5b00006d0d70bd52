"""Classifier training: torchvision backbones, class balance, mixed precision, DDP, resumable checkpoints."""

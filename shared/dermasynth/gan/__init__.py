"""Class-conditional GAN synthesis of lesion images: networks, augmentation, losses, training, sampling,
synthesis planning and quality metrics (see ``training_loop``, ``synthesis`` and ``quality``)."""

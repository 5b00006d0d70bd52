"""The GAN-augmentation ablation: its config, runner, figures and report (the top floor of the library)."""
